"""Prefix hits on blocks that a running request holds, for a keyed arrival joining a stretch.

Mooncake's prompts share the trace's first hash blocks, so almost every arrival's hits include
blocks a running request holds (at 8 replicas, vllm, 4,000 requests: all 250 lone arrivals whose
prompt the budget chunks). Stepping's admission takes such a block by a reference more, without
the free queue; at the join, before the stretch's effects, it is the same reference more,
provided the block is still held by someone at step s. The joiner's blocks are then in use from
step s less the shared ones (`Stretch.join_shared`).

A block held only by requests that left the stretch before s is another case: stepping freed it
at the last one's finish (into the free queue's tail) and the admission takes it back from there.
A conversation's next turn meets it whenever its previous turn finished inside the stretch (vllm
sessions at 1 replica, 4,000 requests: 403 turns refused for it). So, for a whole prompt:
`settle_departed` first gives the previous turn what the apply would (the blocks its decodes grew
into, its full blocks registered, as stepping did during its steps; else the turn's keys past
its hits are the stretch's planned registrations, which a join may not take), the lookup hits
them, and `take_back` keeps the blocks held: the finishes count them as not freed
(`blocks_freed` reads the joiner's reference), the join as in use already, and the step log
has them free from the finish to the join. The decodes' pops up to s come from the blocks free
when the stretch was planned (`keyed_join`'s count), so they never reach a block freed later.

`keyed_join` takes held hits for a turn joining with chunks (`keyed_chunk_join.py`, since moonck)
and, since moon32, for a whole prompt: moon6 had measured that join at break-even (its cost the
one stretch cycle it removes), but the lean join (`Stretch.join_one` and `price_on` from the
scalar state of step s) has since made a join cheaper than the cycle (vllm mooncake at 8
replicas: 69 of 1,000 arrivals were refused for held hits, each an apply, a `schedule`, a new
stretch planned and priced).
"""

from __future__ import annotations

from bisect import bisect_right
from operator import indexOf

from servesim.replica.prefix_groups import count_of


def departed_only(kv, st, s: int, hits) -> list[tuple[int, int]] | None:
    """The blocks among `hits` held only by requests of the stretch `st` that left it before
    step s (their blocks are not freed until the stretch is applied), as (the step the last of
    them left at, blocks); None where such a holder has copies there (a position is not its
    group's slot) or its finish's frees were counted already (a view asked: they then counted
    the blocks as freed, not as the join's)."""
    held = kv._held
    counted = st._freed[0] if st._freed is not None else ()
    over = []  # (group, first, end, step left): a departed request's hold on a hit slot range
    for req, r in zip(st.reqs, st.remaining):
        if r <= s and (h := held.get(req.id)) is not None:
            for g, a, b in h.segs:
                for g2, p0, p1 in hits.extents:
                    if g is g2 and a < p1 and p0 < b:
                        a1, b1 = max(a, p0), min(b, p1)
                        if (h.dups and any(d0 < b1 and a1 < d1 for d0, d1 in h.dups)) or req.id in counted:
                            return None
                        over.append((g, a1, b1, r))
    if len(over) == 1:  # (the usual case: one departed holder of the shared first blocks)
        g, a, b, r = over[0]
        n = count_of(g.ref[a - g.lo:b - g.lo], 1)
        return [(r, n)] if n else []
    # each range of slots with the same departed holders: the slots held by those alone
    back = []
    for g in {id(g): g for g, _, _, _ in over}.values():
        mine = [(a, b, r) for g2, a, b, r in over if g2 is g]
        cuts = sorted({x for a, b, _ in mine for x in (a, b)})
        for a, b in zip(cuts, cuts[1:]):
            left = [r for a2, b2, r in mine if a2 <= a and b <= b2]
            if left and (n := count_of(g.ref[a - g.lo:b - g.lo], len(left))):
                back.append((max(left), n))
    return back


def take_back(st, s: int, back: list[tuple[int, int]]) -> None:
    """A joiner at step s takes a reference on blocks held only by requests that left before
    s: stepping freed them at the last one's finish and took them back from the free queue at
    s. Here they stay held, so those finishes count them as not freed (`blocks_freed` reads
    the joiner's reference) and the join as in use already (`log_shared`); the step log counts
    them free between (`StretchApply`)."""
    st.taken_back = [*(st.taken_back or ()), *((s, r, n) for r, n in back)]


def settle_departed(kv, st, s: int, req) -> None:
    """Before the lookup of `req`, a next turn that may join at step s: its previous turn, if it
    left the stretch before s, gets now what the apply would give it, the blocks its decodes
    grew into and the registration of its full blocks, as stepping did during its steps; so
    the lookup hits those blocks, which only it holds (`departed_only`). The apply skips what
    it got (`Stretch.settled`). Not where its finish's frees were counted already, and not
    beside stalls, rests or pins, whose blocks the stretch counts apart."""
    session = req.session_id
    if (session is None or not st.keyed_last or st.stalls or st.grown or st.rests or st.kept is not None
            or st.in_order or st.ahead or not bisect_right(st._sorted_rem, s)):
        return
    j = _latest_of(st, session)
    if j is None or (last := st.keyed_last[j]) >= s:
        return
    d, ctx1 = st.keyed[j]
    i = indexOf(st.reqs, d)
    if (st.settled and i in st.settled) or (st._freed is not None and d.id in st._freed[0]):
        return
    bs = kv.block_size
    f, r = st.first_new[i], st.remaining[i]
    grown = (r - 1 - f) // bs + 1 if f < r else 0  # (blocks at its steps f, f + bs, ... below r)
    if grown:
        kv.allocate_plain_many([(d, grown)])
    kv.register_settled(d, ctx1 + last)  # (`cache_full_blocks_many`'s count at its last step)
    st.settled = {**(st.settled or {}), i: grown}


def _latest_of(st, session: int) -> int | None:
    """The place in `st.keyed` of the session's latest request there (a next turn's previous
    turn), or None: from a map kept on the stretch and brought up to date with the requests
    appended since (built again if some left the list: `keyed_chunk_join`). A place that turns
    out another request's after such a change only settles that one, or none: exact either way."""
    keyed = st.keyed
    n, latest = st.sessions if st.sessions is not None and st.sessions[0] <= len(keyed) else (0, {})
    for j in range(n, len(keyed)):
        latest[keyed[j][0].session_id] = j
    st.sessions = (len(keyed), latest)
    return latest.get(session)


def log_shared(st, s: int, shared: int) -> None:
    """A joiner's `shared` hits on held blocks, in use before its first step s: the step log
    counts its blocks from s less those (`Stretch.join_shared`, read by the apply)."""
    st.join_shared = [*(st.join_shared or ()), (s, shared)]
