"""Where a stretch through finishes must end early because its policy's `schedule` at a later
step would decide otherwise than the stretch assumes (`FastForwarding._limit` calls `limit`
first, before the KV and key limits): a policy that reorders its batch between steps
(`Scheduler.reorders_running`: autellix's levels) at a step two requests leave together, and a
policy whose finishes keep their blocks under a timer (`FastForward.finish_timer_s`: continuum's
pins) at the first such timer whose blocks another request shares. And the policy timers a
stretch runs through instead: those held before it (`FastForward.through_timers`), fired at a
join (`fire_before_join`) or when the stretch is applied (`late_timers`), and those its own
finishes set on blocks their request alone holds, fired when it is applied (`late_timers`), all
in stepping's order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from operator import itemgetter

from servesim.replica.stretch import Stretch

INF = float("inf")


def limit(st: Stretch, scheduler, noticed: bool, k_safe: int) -> None:
    """Shorten `st` (keeping at least `k_safe` steps) where its policy needs a `schedule`;
    `noticed`: its finishes are told one by one (a closed loop, `finish_notices.py`)."""
    if scheduler.reorders_running and type(st) is Stretch and (noticed or st.keyed):
        # (closed loop: the finishes' follow-ups come in that step's order; open loop with
        # prefix keys: their frees do, which decide what the LRU queue evicts first)
        if st.through:
            end_before_shared_departure(st, k_safe)
        elif st.k == st.kmax and st.remaining.count(st.k) > 1:
            # (a stretch that ends at its first departure: two leave at its last step, whose
            # order is that step's `schedule`'s, not the first step's the stretch lists)
            st.truncate(max(st.k - 1, k_safe))
            st.final = True
    if st.kept is not None and st.k > st._sorted_rem[0] + 1:
        stop_at_shared_pin(st, scheduler.kv)


def end_before_shared_departure(st: Stretch, k_safe: int) -> None:
    """A stretch through finishes of a policy whose running order may change between its steps
    (`reorders_running`), its finishes told one by one (`finish_notices.py`) or its requests
    holding prefix keys: end it before the first step that two of its requests leave together
    (at or after `k_safe`). Stepping finishes them in the order of that step's `schedule` (the
    finishes' follow-ups, ids and block frees come in that order; the frees' order decides which
    cached blocks the free queue gives up first), which the stretch, listing its requests in its
    first step's order, does not know; the next `schedule` runs that step with the order up to
    date. (Without keys or follow-ups nothing reads that order: plain blocks are all alike.)"""
    rem, k = st._sorted_rem, st.k
    for i in range(st.num_noticed, bisect_right(rem, k) - 1):
        r = rem[i]
        if r == rem[i + 1] and r > 1:  # (step r - 1, the last of both; step 0 is the `schedule`'s own)
            if max(r - 1, k_safe) < k:  # (keep the r - 1 steps before it; none joins at its start)
                st.truncate(max(r - 1, k_safe))
                st.final = True
            return


def stop_at_shared_pin(st: Stretch, kv) -> None:
    """Shorten `st`, a stretch through finishes that may keep their blocks and set a timer
    (`FastForward.finish_timer_s`: continuum's pins), to the steps that start before the first
    such timer it cannot run through (`first_shared_pin`): the step starting at or after it is
    the policy's (its `schedule` expires the pin, freeing what the other frees before it leave
    free). Called with the first departure before the last step."""
    t = first_shared_pin(st, kv, st.ends_view[st.k - 2])  # (a timer up to step k - 2's end falls in a step below k)
    if t != INF:
        stop_before(st, t)


def first_shared_pin(st: Stretch, kv, until_s: float) -> float:
    """The earliest time up to `until_s` at which a pin set by a finish in `st` expires
    (the finish's step end + the delay, as the policy adds them) whose blocks are not its
    request's alone; INF if none. A pin on blocks only its request holds frees exactly those,
    whatever the other requests do (nothing takes a held block inside a stretch, and no turn
    that hits a block of a request that left joins one with pins: `keyed_join`), so the stretch
    runs through its timer (`late_timers`); no call of its job waits there to keep it (a call
    arriving cuts the stretch: `ContinuumScheduler.arrival_keeps_batch`). Whether a request's
    blocks are its own is asked once (`Stretch.own_pins`) until a joining turn hits a running
    request's blocks."""
    keeps, delay = st.kept[0], st.kept[1]
    ends, k, own = st.ends_view, st.k, st.own_pins
    # The pins expire in the order of the departures' steps: those are read in increasing order
    # of remaining (`_sorted_rem`, each request found by a C scan of `remaining`, as `_leave`
    # finds it) up to the first whose pin is shared, not the whole batch.
    remaining, reqs, rem = st.remaining, st.reqs, st._sorted_rem
    i = r_prev = -1
    for r in rem:
        if r > k or (t := ends[r - 1] + delay) > until_s:
            break
        i = remaining.index(r, i + 1 if r == r_prev else 0)
        r_prev = r
        req = reqs[i]
        # (a request found alone was kept: its answer is read before the policy is asked again)
        if (alone := own.get(req.id)) is not True and keeps(req):
            if alone is None:
                alone = own[req.id] = (not (st.rests and any(reqs[j] is req for _, j, _ in st.rests))
                                       and kv.blocks_freed([req.id], {})[0] == kv.num_blocks_of(req.id))
            if not alone:
                return t
    return INF


def stop_before(st: Stretch, t: float) -> None:
    """Shorten `st` to the steps that start before `t` (step 0 starts before it). Final, not
    `limited`: a turn arriving before that step may still join, which `keyed_join` checks
    against the policy's timers."""
    k = bisect_left(st.ends_view, t, 0, st.k - 1) + 1  # (step j >= 1 starts at ends[j - 1])
    if k < st.k:
        st.truncate(k)
        st.final = True


def fire_before_join(sched, st: Stretch) -> None:
    """At the stretch's boundary s = k, before a request joins it (`replica/keyed_join.py`):
    fire the timers run through whose step lies before s, as those steps' `schedule`s did
    when stepping (an expired pin's blocks are in the free queue when the join looks up its
    prefix: a next turn whose previous turn's pin expired inside the stretch hits them there).
    Stepping freed blocks in time order: a finish that frees blocks (processed late, at the
    stretch's end) at a step at or before a timer's came first, so only the timers before the
    first such finish fire here (the others at the end: `late_timers`). A timer due at step s
    itself is left: that step's `schedule` skips a job whose call waits (the joiner's), and the
    join checks `next_timer_s` as before."""
    _, pending, fired, _ = st.timers
    s = st.k
    due = sorted((m, i) for i, (t, _, _) in enumerate(pending) if (m := st.timer_step(t)) < s)
    if due and st._sorted_rem[0] <= due[-1][0]:  # (requests left at or before a due timer's step)
        # the first step before which a finish frees blocks (a request leaves after step r - 1):
        # the policy asked only of those that left by then (a sessions turn's finish pins)
        keeps = st.kept[0] if st.kept is not None else None
        last = due[-1][0]
        first_free = min((r for r, q in zip(st.remaining, st.reqs) if r <= last and not (keeps and keeps(q))),
                         default=s)
        due = [(m, i) for m, i in due if m < first_free]
    if due:
        sched.fire_timers([pending[i][1] for _, i in due])
        fired += [(m, pending[i][2]) for m, i in due]
        gone = {i for _, i in due}
        st.timers[1] = [p for i, p in enumerate(pending) if i not in gone]


def late_timers(st: Stretch, pins: list[tuple[int, object, int]]) -> list[tuple[int, int]]:
    """When the stretch (of k steps) is applied: the timers run through whose step lies below
    k, to fire among its finishes (`Engine._finish_and_continue`: each after the finishes at or
    before its step's start, by step, those held before the stretch first, as the policy lists
    them), kept in `st.timers[3]` as (step start, key); returns the (step, blocks) freed by every
    timer fired in it, those fired at joins included (the step log's frees). `pins`: the
    (step, key, blocks) of the pins its finishes set that expire inside it, in finish order."""
    if st.timers is None:
        st.timers = [INF, [], [], None]
    _, pending, fired, _ = st.timers
    k = st.k
    due = sorted((m, i) for i, (t, _, _) in enumerate(pending) if (m := st.timer_step(t)) < k)
    late = [(m, pending[i][1], pending[i][2]) for m, i in due]
    if pins:
        late = sorted(late + pins, key=itemgetter(0))  # (stable: at one step, the older pins first)
    ends = st.ends_view
    st.timers[3] = [(ends[m - 1], key) for m, key, _ in late]
    return fired + [(m, n) for m, _, n in late]
