"""Where a stretch through finishes must end early because its policy's `schedule` at a later
step would decide otherwise than the stretch assumes (`FastForwarding._limit` calls `limit`
first, before the KV and key limits): a policy that reorders its batch between steps
(`Scheduler.reorders_running`: autellix's levels) at a step two requests leave together, and a
policy whose finishes keep their blocks under a timer (`FastForward.finish_timer_s`: continuum's
pins) at the first such timer. And the policy timers a stretch runs through instead
(`FastForward.through_timers`: continuum's pins held before it, expiring inside it): fired at a
join (`fire_before_join`) or when the stretch is applied (`late_timers`), in stepping's order;
and the pins its own finishes make, when their calls held their blocks alone (`late_pins`):
fired when it is applied, after their finishes, the first pin that shares a block the bound.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from servesim.replica.stretch import Stretch

INF = float("inf")


def limit(st: Stretch, scheduler, noticed: bool, k_safe: int) -> None:
    """Shorten `st` (keeping at least `k_safe` steps) where its policy needs a `schedule`;
    `noticed`: its finishes are told one by one (a closed loop, `finish_notices.py`)."""
    if st.through and scheduler.reorders_running and type(st) is Stretch and (noticed or st.keyed):
        # (closed loop: the finishes' follow-ups come in that step's order; open loop with
        # prefix keys: their frees do, which decide what the LRU queue evicts first)
        end_before_shared_departure(st, k_safe)
    if st.kept is not None and st.k > st._sorted_rem[0] + 1:
        if st.timers is not None and len(st.timers) > 4:  # (pins made inside it, run through: `late_pins`)
            bound_s = late_pins(st, st.k - 2)[0]
            if bound_s != INF:
                stop_at_timer(st, bound_s)
        else:
            stop_at_finish_timer(st)


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


def stop_at_finish_timer(st: Stretch) -> None:
    """Shorten `st`, a stretch through finishes that may keep their blocks and set a timer
    (`FastForward.finish_timer_s`: continuum's pins), to the steps that start before its first
    departure's timer: the step starting at or after it is the policy's (its `schedule` acts on
    the timer: an expired pin frees its blocks). The first departure's is the earliest timer
    (one delay for all); it is counted whether or not that finish keeps its blocks, the
    same bound or an earlier one. Called with the first departure before the last step."""
    r = st._sorted_rem[0]  # (its last token is step r - 1's, ending at ends[r - 1])
    stop_at_timer(st, st.ends_view[r - 1] + st.kept[1])  # (the finish's time + the delay, as the policy adds them)


def stop_at_timer(st: Stretch, due_s: float) -> None:
    """`stop_at_finish_timer` for a timer due at `due_s`."""
    k = bisect_left(st.ends_view, due_s, 0, st.k - 1) + 1  # (step j >= 1 starts at ends[j - 1])
    if k < st.k:
        st.truncate(k)
        # (final, not `limited`: a turn arriving before that step may still join, which
        # `keyed_join` checks against the first departure's timer; with the pins held before
        # the stretch no longer bounding it, this bound is most stretches' at 8 replicas)
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
    _, pending, fired, _ = st.timers[:4]
    s = st.k
    due = sorted((m, i) for i, (t, _, _) in enumerate(pending) if (m := st.timer_step(t)) < s)
    if due and len(st.timers) > 4 and (late := late_pins(st, s - 2)[1]):
        # (a pin made inside the stretch and expired before step s fires when it is applied,
        # after its finish: the timers after it wait for that too; one at its step came first,
        # `pins` holding it before the new pin)
        first_late = st.timer_step(late[0][0])
        due = [(m, i) for m, i in due if m <= first_late]
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


def late_timers(st: Stretch) -> list[tuple[int, int]]:
    """When the stretch (of k steps) is applied: the timers run through whose step lies below
    k, to fire among its finishes (`Engine._finish_and_continue`: each after the finishes at or
    before its step's start, by step and then in the policy's order), kept in `st.timers[3]`
    as (step start, key); returns the (step, blocks) freed by every timer fired in it, those
    fired at joins included (the step log's frees)."""
    _, pending, fired, _ = st.timers[:4]
    k = st.k
    due = sorted((m, i) for i, (t, _, _) in enumerate(pending) if (m := st.timer_step(t)) < k)
    ends = st.ends_view
    st.timers[3] = [(ends[m - 1], pending[i][1]) for m, i in due]
    out = fired + [(m, pending[i][2]) for m, i in due]
    if len(st.timers) > 4:  # (pins made inside it: after those held before at one step, as `pins` holds them)
        late = [(m, key, n) for t, key, n in late_pins(st, k - 2)[1] if (m := st.timer_step(t)) < k]
        if late:
            st.timers[3] = sorted(st.timers[3] + [(ends[m - 1], key) for m, key, _ in late], key=_start)
            out += [(m, n) for m, _, n in late]
    return out


def _start(timer: tuple) -> float:
    return timer[0]


def late_pins(st: Stretch, last: int) -> tuple[float, list]:
    """The timers set by the stretch's finishes at its steps up to `last` that keep their blocks
    (continuum's pins), in finish order: (the first of them that bounds the stretch, its time,
    or inf; [(time, key, blocks freed)] of those before it, run through). A finish after step
    r - 1 sets its timer at ends[r - 1] + the delay, as the policy does (`finish`); it is run
    through if its request held its blocks alone when the stretch was planned (`stretch_timers`'
    list): it then frees those and the ones it grew in the stretch. Later finishes' timers are
    no earlier (one delay for all)."""
    rem = st._sorted_rem
    if rem[0] > last + 1:
        return INF, []
    timers = st.timers
    # (asked again at each limit, join, view and apply of one stretch: kept while its steps up
    # to `last`, its requests and its length are the same, which fixes every input read here)
    at = (last, st.k, len(st.reqs), st.end_s)
    if len(timers) > 6 and timers[6][0] == at:
        return timers[6][1]
    keeps, delay = st.kept
    late, bs = timers[4], timers[5]
    remaining, reqs, first_new = st.remaining, st.reqs, st.first_new
    out: list = []
    found = INF, out
    ends = st.ends_view
    for i in st.departure_order():
        r = remaining[i]  # (its last token is step r - 1's)
        if r > last + 1:
            break
        req = reqs[i]
        if (held := late.get(req.id)) is None:
            if keeps(req):
                found = ends[r - 1] + delay, out
                break
            continue
        f = first_new[i]
        out.append((ends[r - 1] + delay, held[0], held[1] + ((r - 1 - f) // bs + 1 if f <= r - 1 else 0)))
    timers[6:] = [(at, found)]
    return found


def all_through(st: Stretch) -> bool:
    """Does the stretch run through every policy timer that may fall in its later steps, or end
    before it (`limit`)? The pins held before it all run through (none bounds it: `timers[0]`),
    and those made inside it are run through or stop it (`late_pins`): a turn's chunk steps may
    then be priced past them (their frees are the stretch's: `blocks_added`, `late_timers`)."""
    timers = st.timers
    return timers is not None and len(timers) > 4 and timers[0] == INF
