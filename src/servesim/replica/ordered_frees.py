"""A stretch through finishes over SGLang's radix cache: its growth and its finishes' releases
applied in step order.

SGLang's stretches ended at every finish once the radix tree held evictable blocks: a finish
inserts the request's blocks into the tree and frees the rest, and stepping's growth after it
takes those free blocks before evicting any, while a stretch allocated all its growth first.
The tree fills the cache on prefix-heavy workloads (truly free blocks are 0 at the median of
SGLang's stretches on sessions and Mooncake), so nearly every stretch there ended at its first
finish. Applied in order instead (`allocate_in_order`), each run of steps between two
departures takes its growth (evicting as stepping's steps there do: nothing touches the tree
between them, so one eviction of their sum takes the same blocks, `RadixKVCache.allocate_plain_many`),
then the requests whose last token was the run's last step release their blocks
(`cache_finished`: the tree insert, the frees, the unlocks, in finish order), and so on: the tree,
its clock and its LRU order are stepping's. The scheduler's own `finish` later finds them released.

Such a stretch (`Stretch.in_order`) admits no arrival (a join's allocation would come before
the growth and the releases it follows in stepping), and nothing may read the cache from
outside while it runs (the tree lacks the finishes' inserts until it is applied). The blocks a
finish frees for the step log and the views are counted by the tree's locks
(`RadixKVCache.blocks_freed`: a prefix another running request holds stays in use).
Exact as stepping one by one: tests/replica/test_ordered_frees.py.
"""

from __future__ import annotations


def allocate_in_order(kv, st, steps_of: list[int], finished: list[int], block_size: int) -> None:
    """The stretch `st`'s growth and its finished requests' releases, run by run of steps
    between departures (`finished`: indices in finish order; `steps_of`: the steps each ran)."""
    reqs, first_new, k = st.reqs, st.first_new, st.k
    lo = 0
    i, n = 0, len(finished)
    while lo < k:
        hi = steps_of[finished[i]] if i < n else k  # (the next departure: after its last step, hi - 1)
        if hi > lo:
            # (`_growth(f, lo, min(hi, m), block_size)` written out: a call per request and run
            # was most of this pass, at every departure of the stretch)
            grants = [(req, (h - 1 - g) // block_size + 1) for req, f, m in zip(reqs, first_new, steps_of)
                      if f < m and (g := f if f >= lo else f + (lo - f + block_size - 1) // block_size * block_size)
                      < (h := hi if hi < m else m)]
            kv.allocate_plain_many(grants)
        while i < n and steps_of[finished[i]] == hi:
            kv.cache_finished(reqs[finished[i]])
            i += 1
        lo = hi
