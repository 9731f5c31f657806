"""SGLang's waiting order (`python/sglang/srt/managers/schedule_policy.py`): `fcfs`, `lpm`
(longest cached prefix first, with in-batch prefix caching) and `dfs-weight` (a depth-first
walk of the radix tree, heavier subtrees first). Pure functions of the waiting list and the
radix cache, so the scheduler keeps only admission and batching."""

from __future__ import annotations

from servesim.replica.block_keys import block_idents
from servesim.replica.radix_cache import RadixKVCache, RadixNode
from servesim.workload.request import Request

LPM_MAX_QUEUE = 128  # above this many waiting requests, lpm falls back to fcfs
IN_BATCH_CHECK_TOKENS = 32  # IN_BATCH_PREFIX_CACHING_CHECK_THRESHOLD
IN_BATCH_DEPRIORITIZE_TOKENS = 32  # IN_BATCH_PREFIX_CACHING_DEPRIORITIZE_THRESHOLD


def ordered_waiting(policy: str, waiting: list[Request], kv: RadixKVCache) -> list[Request]:
    """The waiting requests in the order `policy` admits them (`waiting` is reordered)."""
    if policy == "lpm" and len(waiting) <= LPM_MAX_QUEUE:
        bs = kv.block_size
        hits = {r.id: len(kv.match(r)) * bs for r in waiting}
        # In-batch prefix caching: a request with (almost) no cached prefix that shares a
        # prefix with an earlier waiting request goes last this round, so the shared
        # prefix is computed once and the others hit it afterwards.
        seen: set = set()
        later = set()
        for r in waiting:
            if hits[r.id] > IN_BATCH_CHECK_TOKENS:
                continue
            keys = block_idents(r.kv_block_keys or ())
            shared = next((i for i, k in enumerate(keys) if k not in seen), len(keys)) * bs
            if shared >= IN_BATCH_DEPRIORITIZE_TOKENS:
                later.add(r.id)
            else:
                seen.update(keys)
        waiting.sort(key=lambda r: (r.id in later, -hits[r.id]))  # stable: FCFS among ties
    elif policy == "dfs-weight":
        waiting = dfs_weight_order(waiting, kv)
    return waiting


def dfs_weight_order(waiting: list[Request], kv: RadixKVCache) -> list[Request]:
    """Post-order walk of the radix tree, children by how many waiting requests lie below."""
    root = kv.root
    at: dict[int, list[Request]] = {}
    weight: dict[int, int] = {}
    # Match every request first: a match may split a node that an earlier one ends below.
    lasts = [kv.match(r).last or root for r in waiting]
    for r, last in zip(waiting, lasts):
        at.setdefault(id(last), []).append(r)
        node = last
        while node is not None:
            weight[id(node)] = weight.get(id(node), 0) + 1
            node = node.parent
    order: list[Request] = []
    stack: list[tuple[RadixNode, bool]] = [(root, False)]
    while stack:  # post-order: a node's requests after its children's
        node, expanded = stack.pop()
        if expanded:
            order += at.get(id(node), [])
            continue
        stack.append((node, True))
        kids = [c for c in node.children.values() if weight.get(id(c), 0) > 0]
        kids.sort(key=lambda c: -weight[id(c)])
        stack.extend((c, False) for c in reversed(kids))
    return order
