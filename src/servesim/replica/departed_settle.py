"""Requests that left a keyed stretch, settled before it ends, so that a next turn can join.

A stretch through finishes applies its departed requests (their decode blocks, the blocks
their decodes registered, their frees) only when it ends. A conversation's next turn whose
previous turn finished inside the stretch hits that turn's blocks: stepping has freed them
(and registered its answer's blocks) before the turn's admission, while in the stretch they
are still held, so `keyed_join` refused the turn and the stretch ended (374 of 4,000 turns
on vllm sessions at 1 replica). `settle_departed` gives the stretch's KV cache the state
stepping has for the requests that left it before step s, in their finish order:

- each one's decode blocks (the free queue's pops of its growth: pops take the queue's head
  and are anonymous, so taking its share first pops the same blocks as the stretch's end);
- each one's registrations (its item of the stretch's registration plan, planned whole: up
  to its last step; the plan's other runs are disjoint from it, so what stays planned is
  still valid and is restamped);
- its free (`free_all` in finish order: the blocks enter the free queue's tail, which no pop
  of the stretch reaches, as the stretch only allocates from the blocks free when planned).

What reads the cache while the stretch is in flight skips them: the stretch's end
(`_apply_stretch`: their growth and frees are done, the step log counts them from
`freed_blocks`' answers, taken before the frees) and the replica's views (`blocks_added`).
The rest of the stretch (tokens, rows, finishes) is applied at its end as before.
"""

from __future__ import annotations

from bisect import bisect_right

from servesim.replica.kv_prefix_caching import WHOLE
from servesim.replica.stretch import Stretch


def settle_departed(engine, st: Stretch, s: int) -> bool:
    """Settle the requests of `st` whose last step is before step s and that are not settled
    yet (see the module docstring). False, changing nothing, if there are none or the
    stretch's state does not allow it (no whole registration plan kept, prompt-only steps,
    `freed_blocks` counted past them)."""
    if st.keyed_last is None or st.stalls:
        return False
    settled = st.settled
    num_settled = len(settled) if settled is not None else 0
    num_gone = bisect_right(st._sorted_rem, s)
    if num_gone <= num_settled:
        return False
    kv = engine.kv
    prefix = kv._prefix
    planned = kv._planned
    if (planned is None or planned[0] is not st.keyed or planned[2] != WHOLE
            or planned[3] != prefix.num_inserts or planned[1] != len(st.keyed)):
        return False
    freed = st._freed
    if freed is not None and freed[2] > num_gone:
        return False  # (answers counted past them with their references: counted from the cache after)
    reqs, remaining, first_new = st.reqs, st.remaining, st.first_new
    order = st.departure_order()
    new = order[num_settled:num_gone]  # (the settled ones come first in the order: earlier finishes)
    gone = [reqs[i] for i in new]
    held_by = st.freed_blocks(kv)
    held_by(gone[-1])  # (the blocks each frees, counted in finish order while they still hold them)
    if settled is None:
        settled = st.settled = {}
    joined = {id(req) for _, req, _ in st.joins} if st.joins else ()
    bs = kv.block_size
    grants = []
    for i, req in zip(new, gone):
        # (the blocks it took when it joined, as the stretch's end logs them: before its growth)
        settled[req.id] = kv.num_blocks_of(req.id) if id(req) in joined else None
        f, m = first_new[i], remaining[i]
        if f < m:
            grants.append((req, (m - f - 1) // bs + 1))
    kv.allocate_plain_many(grants)
    ids = {req.id for req in gone}
    _, _, _, _, (plan, seen, groups), tokens, caps = planned
    mine = {id(kv._held[rid]) for rid in ids if rid in kv._held}
    taken = [i for i, item in enumerate(plan) if id(item[0]) in mine]
    if taken:
        prefix.apply_appends(([plan[i] for i in taken], None, None))
        for i in reversed(taken):
            if plan[i][2] is not None:  # (it extended a group it held: the rest of the plan does not)
                groups.discard(plan[i][1])
            del plan[i], tokens[i], caps[i]
    keyed, last = st.keyed, st.keyed_last
    kept = [j for j, (req, _) in enumerate(keyed) if req.id not in ids]
    if len(kept) < len(keyed):
        keyed[:] = [keyed[j] for j in kept]  # (in place: the plan names this list)
        last[:] = [last[j] for j in kept]
    kv._planned = (keyed, len(keyed), WHOLE, prefix.num_inserts, (plan, seen, groups), tokens, caps)
    kv.free_all([req.id for req in gone])
    # (the frees are now the cache's: later answers count from it, with none dropped before)
    st._freed = (st._freed[0], {}, num_gone)
    return True
