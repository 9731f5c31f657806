"""Finishes inside a stretch told at their times (closed-loop workloads, a KV store).

A stretch through finishes (`replica/fast_forward.py`) applies a request that leaves the batch
only when the stretch ends. With an open-loop workload and no KV store nothing reacts to a
finish before then. A closed-loop one does: a conversation's next turn, a program's next call
or a user's next request is made when the previous one finishes, and draws its lengths, ids and
think time from the workload's streams in the order the finishes come; and a KV store takes the
request's prompt blocks, which the next dispatch to any replica reads. So each departure of the
stretch gets an event at the end of its last step (as stepping's finish would, with the same
priority) that marks the request finished and hands it to the engine's `notice` (the feed's
follow-ups, the store's write: `cluster/setup.py`); the
request's tokens, blocks and row are applied with the stretch, which then leaves its follow-ups
out. One event is pending at a time, for the next departure; a cut before its step voids it
(`Stretch.notice_id`).
A follow-up that arrives at once (no think time) ends the stretch at that departure's step.
Those leaving at the stretch's last step have no event: its end processes them, or tells them
first where a request joins it there (`tell_last`, as stepping's step end tells them before the
next step's `schedule`).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from servesim.core.loop import PRIO_STEP_END
from servesim.replica.block_keys import BlockKeys
from servesim.workload.request import RequestState


def schedule_notice(engine: Any, st: Any) -> None:
    """The event of the stretch's next departure not told yet, if its last step is not the
    stretch's last (that one ends the stretch, which processes it). One pending still holds
    if its step is still before the last: a cut, an extension or a join changes only the
    steps from the last on."""
    r = st.notice_at
    if r:
        if r < st.k:
            return
        st.notice_at = 0
        st.notice_id += 1  # (cut before it: void)
    rem, n = st._sorted_rem, st.num_noticed
    if n < len(rem) and rem[n] < st.k:
        r = st.notice_at = rem[n]
        engine.loop.schedule(st.ends_view[r - 1], _notice, (engine, st, st.notice_id), PRIO_STEP_END)


def untold_by(st: Any, s: int) -> bool:
    """Has a request of the stretch whose last token is a step before s not been told yet (its
    notice due at the end of that step, or none scheduled: the stretch's last step)?"""
    n = st.num_noticed
    return n < len(st._sorted_rem) and st._sorted_rem[n] <= s


def _notice(now_s: float, payload: tuple) -> None:
    engine, st, token = payload
    if engine.stretch is not st or token != st.notice_id:
        return  # the stretch was applied, or cut before this departure's step
    if engine.on_event:
        engine.on_event()
    r = st._sorted_rem[st.num_noticed]  # (their last token is step r - 1's)
    if _follow_up_now(engine, st, tell(engine, st, now_s), now_s):
        # A follow-up arrives now (no think time): stepping started the next step before it
        # came, which a cut at now would not keep. End the stretch here instead, as a stretch
        # that stops at its first finish does (its end event would come after the arrival).
        # So too for a finish with prefix keys where a read from outside routes its next turn:
        # the stretch registers its last blocks when applied, after that read otherwise.
        st.truncate(r)
        st.final = True
        engine.end_stretch_now(st, now_s)
        return
    schedule_notice(engine, st)


def tell_last(engine: Any, st: Any, now_s: float) -> bool:
    """At the stretch's end `now_s`, before a request joins it at step s = k: tell those that
    left at step s - 1, its last (they have no notice of their own: the stretch's end processes
    them), as stepping's step end tells them before step s's `schedule`, and as their notice
    would have, had it come before this event at the same time. False where none may join: one
    left earlier is not told yet, or a follow-up of theirs arrives now or needs the stretch
    applied (`_notice`'s cases for ending it there)."""
    if st._sorted_rem[st.num_noticed] != st.k:
        return False
    return not _follow_up_now(engine, st, tell(engine, st, now_s), now_s)


def _follow_up_now(engine: Any, st: Any, told_now: list[int], now_s: float) -> bool:
    """Does a follow-up of the requests just told arrive now (no think time), or a next turn
    of theirs with prefix keys go where a read of the caches from outside routes it?"""
    reqs = st.reqs
    return (engine.follow_ups and engine.cache_read_outside and any([reqs[i].kv_block_keys is not None
                                                                      for i in told_now])
            or engine.next_event_s() <= now_s)


def tell(engine: Any, st: Any, now_s: float) -> list[int]:
    """Tell the stretch's next departures, those whose last token is the same step, at that
    step's end `now_s` (a notice pending for them is void: `schedule_notice` makes the next);
    returns their indices in the stretch."""
    st.notice_at = 0
    st.notice_id += 1
    rem, n = st._sorted_rem, st.num_noticed
    m = bisect_right(rem, rem[n], n)  # those whose last token is this step's, in finish order
    reqs, told = st.reqs, engine.scheduler.finish_noticed
    told_now = st.departure_order()[n:m]
    offer = engine.kv.offer_keys if engine.keys_seen and getattr(engine.kv, "offers_keys", False) else None
    for i in told_now:
        req = reqs[i]
        req.state = RequestState.FINISHED
        req.finish_s = now_s
        told(req, now_s)  # (before its follow-ups: a policy's `add_request` may read its finish)
        if offer is not None and type(req.kv_block_keys) is BlockKeys:
            offer(req.kv_block_keys)  # (its next turn may look its keys up before the stretch frees it)
        engine.notice(req, now_s)
    st.num_noticed = m
    return told_now
