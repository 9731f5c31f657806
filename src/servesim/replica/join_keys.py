"""The key check of a request with prefix keys joining a stretch in flight: would the keys its
admission registers now enter the index as stepping's admission at the join step enters them?

Stepping admits it at step s after the stretch's steps up to s popped their blocks (pops may
evict cached blocks: keys only leave the index) and registered their decodes' completed blocks;
the steps after s register theirs after it. Registered now, before those effects, its keys enter
the index the same way when none of them is indexed now and none is among the registrations the
stretch planned (`KVCacheManager.keys_conflict_many`'s kept plan), up to the step from which
`Engine._limit` checks the stretch's keys again with the joiner's registered. The caller checks first that
none is indexed (`PrefixIndex.unindexed`, which also gives the runs): vLLM's keyed joins
(`replica/keyed_join.py`, `replica/keyed_chunk_join.py`: the keys past its prefix hits).
"""

from __future__ import annotations

from collections.abc import Sequence

from servesim.replica.block_keys import BlockKeys, run_values
from servesim.replica.plan_runs import plan_meets
from servesim.replica.prefix_registration import _runs_from

# `unplanned`'s answer when the keys may not register now (a plan is a tuple; None: no plan to keep)
REFUSED = False


def unplanned(kv, st, keys: BlockKeys, runs: Sequence, k0: int, s: int, last: int) -> tuple | bool | None:
    """Check the runs `runs` (those of `keys`' positions from k0 on, `_runs_from`'s) that a request joining
    the stretch `st` at step s registers (`PrefixIndex.unindexed` found none of them indexed)
    against a plan that must cover the stretch's registrations up to step `last` (s - 1 for a
    whole prompt: step s's are read here; the rest's step for one joining with chunks, whose
    steps register the decodes' blocks beside it): `REFUSED` if one is planned (or no such plan
    is kept), else the plan to keep valid once they are registered (None: the stretch has no
    keyed request, nothing planned)."""
    prefix = kv._prefix
    if not st.keyed:
        return None
    # (`keys_conflict_many`'s plan of the stretch's registrations, still valid, up to its last
    # step k - 1 = s - 1 at least, and those of step s: stepping's `schedule` there registers
    # them before the admission)
    planned = kv._planned
    if planned is None or planned[0] is not st.keyed or planned[2] < s - 1 or planned[3] != prefix.num_inserts:
        return REFUSED
    if plan_meets(planned[4], keys, runs, k0 // keys.starts.step if type(keys.starts) is range else None):
        return REFUSED
    if planned[2] < s and ((more := _step_keys(st, s, kv.block_size)) is None
                           or (more and not more.isdisjoint(run_values(keys, runs)))):
        return REFUSED
    if planned[2] < last:
        return REFUSED
    return planned


def _step_keys(st, s: int, bs: int) -> set | None:
    """The run keys the stretch's keyed requests register at step s beyond those of steps up
    to s - 1: a block each whose last token step s computes (`keys_conflict_many`'s ends);
    None if some are not known (keys that are not runs of one length)."""
    out: set = set()
    for (req, ctx1), last in zip(st.keyed, st.keyed_last):
        t = ctx1 + s
        if last >= s and t % bs == 0:
            keys = req.kv_block_keys
            b = t // bs - 1  # (the block that token completes)
            if b < keys.num_blocks:
                runs = _runs_from(keys, b, b + 1)
                if runs is None:
                    return None
                out.update(run_values(keys, runs))
    return out


def add_keyed(st, req, ctx1: int, step: int) -> None:
    """`req` (its context `ctx1` + j at the stretch's step j), joined at `step`, one of the
    stretch's keyed requests from there: it registers its decodes' blocks up to its last step
    (`step` + output_len - 1) as the others do (`KVCacheManager.keys_conflict_many`)."""
    if st.keyed_last is None:
        st.keyed_last = []
    st.keyed.append((req, ctx1))
    st.keyed_last.append(step + req.output_len - 1)
