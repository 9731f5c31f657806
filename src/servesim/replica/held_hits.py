"""Prefix hits on blocks that a running request holds, for a keyed arrival joining a stretch.

Mooncake's prompts share the trace's first hash blocks, so almost every arrival's hits include
blocks a running request holds (at 8 replicas, vllm, 4,000 requests: all 250 lone arrivals whose
prompt the budget chunks). Stepping's admission takes such a block by a reference more, without
the free queue; at the join, before the stretch's effects, it is the same reference more,
provided the block is still held by someone at step s. A block held only by requests that left
the stretch before s is not: stepping freed it at their finish (into the free queue) and its
admission takes it back from there, which the step log and the views count. The joiner's blocks
are then in use from step s less the shared ones (`Stretch.join_shared`).

`keyed_join` takes held hits for a turn joining with chunks (`keyed_chunk_join.py`, since moonck)
and, since moon32, for a whole prompt: moon6 had measured that join at break-even (its cost the
one stretch cycle it removes), but the lean join (`Stretch.join_one` and `price_on` from the
scalar state of step s) has since made a join cheaper than the cycle (vllm mooncake at 8
replicas: 69 of 1,000 arrivals were refused for held hits, each an apply, a `schedule`, a new
stretch planned and priced).
"""

from __future__ import annotations


def held_by_departed(kv, st, s: int, hits) -> bool:
    """Is a held block among `hits` held only by requests of the stretch `st` that left it
    before step s (their blocks are not freed until the stretch is applied)?"""
    held = kv._held
    over = []  # (group, first, end): a departed request's hold on a hit slot range
    for req, r in zip(st.reqs, st.remaining):
        if r <= s and (h := held.get(req.id)) is not None:
            for g, a, b in h.segs:
                for g2, p0, p1 in hits.extents:
                    if g is g2 and a < p1 and p0 < b:
                        a1, b1 = max(a, p0), min(b, p1)
                        if h.dups and any(d0 < b1 and a1 < d1 for d0, d1 in h.dups):
                            return True  # (copies there: a position is not its group's slot)
                        over.append((g, a1, b1))
    if not over:
        return False
    if len(over) == 1:  # (the usual case: one departed holder of the shared first blocks)
        g, a, b = over[0]
        return min(g.ref[a - g.lo:b - g.lo]) <= 1
    # each range of slots with the same departed holders: held by more than those?
    for g in {id(g): g for g, _, _ in over}.values():
        mine = [(a, b) for g2, a, b in over if g2 is g]
        cuts = sorted({x for ab in mine for x in ab})
        for a, b in zip(cuts, cuts[1:]):
            c = sum(1 for a2, b2 in mine if a2 <= a and b <= b2)
            if c and min(g.ref[a - g.lo:b - g.lo]) <= c:
                return True
    return False


def log_shared(st, s: int, shared: int) -> None:
    """A joiner's `shared` hits on held blocks, in use before its first step s: the step log
    counts its blocks from s less those (`Stretch.join_shared`, read by the apply)."""
    st.join_shared = [*(st.join_shared or ()), (s, shared)]
