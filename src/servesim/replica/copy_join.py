"""A next turn joining a keyed stretch as a prompt-only step where its policy computes the whole
context again (vtc): the turn's blocks copies of those cached.

vtc's admission makes no prefix lookup (`allocate_slots(req, n)` without hits): a conversation's
next turn computes its previous turns' context again in its mini-batch, and registering its
prompt's full blocks makes each position whose key is cached a copy (`Held.dups`, `copies.py`)
and each other one a new block. `keyed_join` (vLLM's admission, hits found by a lookup) refused
such turns, and on sessions every turn cut a keyed stretch there (vtc sessions: 2,903 / 3,620
prompt-only steps stepped at 1 / 8 replicas, stall32's count).

The turn joins as vtc's arrivals do (`stretch_join._stall_join`: held to `max_wait_tokens`,
`stall_admits`' counters and future peak, the decodes stalled in its step, `_charge_joined` at the
end) when its registration at the join gives what stepping's admission at step s gives. That
reads, for each of its prompt's full blocks, whether the key is cached; between now and step s
stepping changes that only by

- the free queue's pops up to the admission, which evict: the decodes' up to s and the turn's
  own blocks (all new: no hit is taken out of the queue), here its own first and the decodes'
  later. The same entries are popped in the end, so the groups it copies or registers into
  must lie outside the first `pops` entries (`FreeQueue.head_evicts`, a bound: a group with a
  block there refuses: a pop of its last cached block would also drop it from the index);
- the stretch's keyed requests' registrations up to step s (its prompt's runs that are not
  indexed must be outside the stretch's kept plan, which lists every one up to each request's
  last step, and those of step s: `keyed_join`'s checks; and no group it registers into may be
  one the plan extends, whose end its own new runs may extend first); a previous turn that left
  inside the stretch registers its last blocks in that plan, so its next turn is refused there.

The groups are found without a lookup per run in the usual case: the leading runs that map to
its first run's group (`PrefixIndex._leading_runs_of`: its previous turn's context), the rest
not indexed (`unindexed`); else by `PrefixIndex.extents`.

Frees (a departure's blocks go to the queue's tail, past every pop of a stretch, which takes
only blocks free when it was planned) change whether a cached block is held, not whether its key
is cached: a copy either way. Then the turn is admitted now, the stretch's registration plan kept
and its keyed requests moved one step later by the stall (`keyed_join._stall_keyed`), and it
registers its decodes' blocks from s + 1 on as the others. Exact:
`tests/cluster/test_copy_join.py` runs busy conversations fast-forwarded and stepped.
"""

from __future__ import annotations

from bisect import bisect_right

from servesim.replica.block_keys import BlockKeys
from servesim.replica.join_keys import REFUSED, add_keyed, unplanned
from servesim.replica.stretch import Stretch
from servesim.replica.stretch_join import MAX_EXTRA_DEPARTED, _stall_join


def copy_join(engine, st: Stretch, now_s: float) -> bool:
    """At `now_s`, the end of the stretch `st` (cut by an arrival): admit the waiting turn
    into it as a prompt-only step (or hold it to the step vtc admits at) if the conditions
    above hold, and price on. True if it joined or is held; False changes nothing the
    simulation reads later."""
    sched = engine.scheduler
    if (type(st) is not Stretch or not st.through or st.limited or st._perf is not engine.perf
            or engine.ports is not None or len(sched.running) != len(st.reqs) or st.rests or st.timers):
        return False
    rem = st._sorted_rem
    num_running = len(rem) - bisect_right(rem, st.k)
    if len(st.reqs) - num_running > num_running + MAX_EXTRA_DEPARTED:
        return False
    joins = sched.copies_join()
    if joins is None or len(joins) != 1:
        return False
    (req, n), = joins
    return _stall_join(engine, st, now_s, joins, lambda s, pops: _copies_stall(engine, st, req, n, s, pops))


def _copies_stall(engine, st: Stretch, req, n: int, s: int, pops: int):
    """The stretch's `stall` for the turn `req` (`n` prompt tokens) admitted at step s after
    `pops` blocks leave the free queue's head (a bound), its keyed lists extended; None if its
    registration there may differ from stepping's."""
    from servesim.replica.keyed_join import _stall_keyed  # (keyed_join imports this module)

    kv = engine.kv
    bs = kv.block_size
    prefix = kv._prefix
    keys = req.kv_block_keys
    kept = None
    if keys is not None:
        if type(keys) is not BlockKeys:
            return None
        end = min(n // bs, keys.num_blocks)
        if end:
            if keys.run_keys._list is None and kv._recent_keys:
                kv._recent_keys.reuse_into(keys)  # (built from its previous turn's, as `allocate_slots` would)
            # the leading positions whose runs map to its first run's group, without a lookup
            # each (a conversation's context: its previous turn's group, copies of its cached
            # slots, its evicted ones filled again), and none of the rest indexed (each a new
            # block; or a dead group's, which no pop reaches); else the groups by a search
            g = prefix._group_at(keys, 0)
            nk = prefix._leading_runs_of(keys, g, end) if g is not None else 0
            groups = [g] if nk else []
            runs = prefix.unindexed(keys, nk, end) if nk < end else ()
            k0 = nk  # (the runs' first position: they are those of positions nk, nk + 1, ...)
            if runs is None:
                runs, groups = _past_leading(prefix, keys, nk, end, groups)
                k0 = None  # (not consecutive)
            if groups and kv._queue.head_evicts(pops, groups):
                return None  # (a block of a group it registers into that a pop up to its admission evicts)
            if st.keyed:
                # (only its runs past those may be in the plan, whose runs were not indexed when it
                # was made and no key entered the index since; nor may the plan extend a group it
                # registers into, whose end its new runs may extend first)
                kept = unplanned(kv, st, keys, runs, k0, s, s - 1)
                if kept is REFUSED or (groups and not kept[4][2].isdisjoint(groups)):
                    return None

    def stall(joins, first_new, blocks, step_s, forms, block_size, cached=0):
        _stall_keyed(kv, st, s, kept)  # (after the admission registered its prompt: the plan's count of inserts now)
        st.stall(joins, first_new, blocks, step_s, forms, block_size, cached)
        if keys:  # it registers its decodes' blocks up to its last step, as the other keyed requests
            add_keyed(st, req, n - s, s)

    return stall


def _past_leading(prefix, keys, p0: int, p1: int, groups: list) -> tuple[list, list]:
    """(the run keys of positions [p0, p1) that are not indexed, `groups` and the groups the
    others are indexed to) by `PrefixIndex.extents`."""
    run_keys = keys.run_keys.as_list()
    runs = []
    for g, _, _, i, j in prefix.extents(keys, p0, p1):
        if g is None:
            runs += run_keys[i:j]
        elif g not in groups:
            groups.append(g)
    return runs, groups


def copies_admission(sched) -> bool:
    """Is the next `schedule`'s admission of a lone waiting turn vtc's mini-batch (`_admit`
    without a lookup, its prompt whole), the joins vtc's own (`copies_join`, `join`,
    `stall_wait`, `stall_admits`)?"""
    # (imported here: asked only of a policy with `copies_context`, so vtc is loaded then; a
    # module import for every run would add its objects to each full garbage collection)
    from servesim.replica.schedulers.vtc import VTCScheduler
    from servesim.replica.schedulers.vtc_stretches import VTCStretches

    cls = type(sched)
    return (isinstance(sched, VTCScheduler) and cls.schedule is VTCScheduler.schedule
            and cls._prefill_mini_batch is VTCScheduler._prefill_mini_batch and cls._admit is VTCScheduler._admit
            and cls.copies_join is VTCStretches.copies_join and cls.arrivals_join is VTCStretches.arrivals_join
            and cls.join is VTCStretches.join
            and cls.stall_wait is VTCStretches.stall_wait and cls.stall_admits is VTCStretches.stall_admits)
