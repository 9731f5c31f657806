"""A waiting request joining an SGLang stretch of requests with prefix keys as a prompt-only
step (`Stretch.stall`), its radix-tree match and insert made at the join.

`stretch_join.join_arrivals` joins arrivals into stretches through finishes; SGLang's stretches
with keyed requests stop at their first finish instead (a finish inserts into the tree, whose
LRU order the decodes' evictions read), so on prefix-heavy work (sessions, mooncake) every
arrival ended the stretch in flight, and stepping ran its prompt step and planned a new one.
Here the lone waiting request joins at the cut's step s when what stepping's `schedule` at s
reads and writes is what it reads and writes now:

- no eviction before s: the decodes' blocks of steps 1 .. s - 1 and the prompt's new blocks fit
  in the blocks outside the tree (`_truly_free`), so stepping's takes up to s leave the tree as
  it is now, and the match (`RadixTree.peek` to decide, `match` once it joins) sees the same
  nodes. The takes after s may evict: stepping evicts them after the join's match and insert,
  and so does the stretch's bulk allocation when it is applied (the leaves' LRU order is the
  same; `RadixKVCache.allocate_plain_many`);
- nobody finishes before s (s is below the first departure): the free blocks at s are those now
  less the decodes' growth, exactly, and the tree gets no insert before s;
- SGLang's admission of the lone fresh request, whole in the chunk budget, with the decode
  reserve at the stretch's start (the ratio only decays: `keyed_arrival_join`);
- its insert into the tree at the stall step's end comes next in stepping (the decodes stall in
  that step and allocate nothing), so it is made now (`join_keyed`).

The stretch then goes on in the frame of a stretch through finishes capped at its first
departure (`kmax`), the same steps as one that stops there, which `Stretch.stall` and the
pricing after a join read. Step s is priced as stepping prices it (`step_time_s` of the prompt
with its cached tokens). The step log counts a joiner's blocks from s on; those of its hit that
others held (in use already) and those its insert freed (computed twice, from s + 1) are taken
back (`Stretch.join_shared`). Exact: `tests/replica/test_radix_join.py` runs sessions and
Mooncake fast-forwarded and stepped, step log included.
"""

from __future__ import annotations

from servesim.replica.stretch import Stretch


def keyed_stall_join(engine, st: Stretch, now_s: float) -> bool:
    """At `now_s`, the end of `st` (a stretch of keyed requests cut by an arrival): the lone
    waiting request joins it at its step s = k as a prompt-only step if the conditions above
    hold, and the stretch is priced on. True if it joined; False changes nothing read later."""
    sched, kv = engine.scheduler, engine.kv
    decide = getattr(sched, "keyed_arrival_join", None)
    if (decide is None or st.limited or st._perf is not engine.perf or engine.ports is not None
            or st.prompt_runs or st.rests or st.timers is not None or st.kept is not None or st.held or st.spent_to
            or len(sched.running) != len(st.reqs)):
        return False
    s = st.k
    first = min(st.remaining)  # (the first departure: the stretch's last step is its `kmax`)
    if st.kmax != first or s >= first:
        return False  # (capped below it, or the finish comes first: stepping's `schedule` sees it)
    if st.through and st._sorted_rem[0] != first:
        return False  # (through finishes: not this module's)
    bs = kv.block_size
    if st._priced != s or st._f is None:
        st.truncate(s)  # (priced ahead: the scalar state of step s, as for a join)
        st._sync()
    if st._f is False:
        return False  # (no scalar decode form: the steps after it are left to a new stretch)
    # Stepping's takes of the decodes' blocks in steps 1 .. s - 1 (none in s), made now (what
    # they evict, the oldest leaves, as stepping evicts them: nothing touches the tree between
    # them) and handed back as free blocks after the join, for the stretch's bulk take when it
    # is applied, which then evicts no more for them. A refused join leaves them evicted: the
    # stretch, applied at s, takes them from the free ones, the same blocks gone.
    if st.stalls or st.joins:
        grown = st.blocks_needed(s, bs)
    else:  # (`blocks_needed(s)` where nobody left or stalled: its count from the start is a pass
        # over every request, one `_growth` call each, as the cut usually lies before its base)
        grown = sum([(s - 1 - f) // bs + 1 for f in st.first_new if f < s])
    kv._take(grown)
    picked = decide(kv.num_free_blocks)
    if picked is None:
        kv._truly_free += grown
        kv._sync()
        return False
    req, n, hit, unlocked, need = picked
    if not st.through:  # the frame of a stretch through finishes, capped at its first departure
        st.through = True
        st._sorted_rem = sorted(st.remaining)
        st._p = st._fin = 0
        st._order = st._prefix_sums = None
    cached = hit * bs
    step_s = engine.perf.step_time_s([(n, cached)], [])  # (`_start_step`'s call for that step)
    freed = sched.join_keyed(req, n)
    kv._truly_free += grown
    kv._sync()
    if req.first_scheduled_s is None:
        req.first_scheduled_s = now_s
    first_new = kv.first_new_block_steps([req], [n + cached - s])
    st.stall([(req, n)], first_new, need, step_s, engine._decode_forms(len(st.reqs) + 1), bs, cached)
    st.kmax = st._sorted_rem[0]  # (it still stops at its first finish: `join` set the last)
    shared = [(s, hit - unlocked)] if hit > unlocked else []
    if freed:
        shared.append((s + 1, freed))
    if shared:
        st.join_shared = [*(st.join_shared or ()), *shared]
    engine.num_joined_arrivals += 1
    horizon_s = engine._stretch_horizon_s(now_s, st.end_s, st.timers)
    st.price(horizon_s)
    engine._limit(st, s + 1)
    engine._schedule_stretch_end(st)
    return True
