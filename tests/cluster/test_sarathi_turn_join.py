"""Sarathi's next turns join the stretch in flight with their chunks at a replica among many
(`keyed_join` -> `chunk_join` with `keyed`): the turn's whole prompt is admitted at the join
step with the budget the decodes leave as its first chunk, its keys registered there without a
lookup (none of them indexed or planned by the stretch), its chunks run beside the decodes up
to its rest's step, and from there it decodes with them, registering its blocks as the
stretch's keyed requests do. A turn arriving inside another prompt's chunk steps waits to that
prompt's rest and joins beside it (`chain_join` with `keyed`), whether that prompt joined with
its chunks or was planned with its rest (`replica/chunk_rest.py`). The results, step log included,
are stepping's."""

from __future__ import annotations

import pytest

from servesim import load_scenario, simulate
from servesim.replica import keyed_join

from .helpers import SESSIONS, assert_same_steps, outcome, reads_everything  # noqa: F401  (fixture)

# Busy conversations under Sarathi's budget (a turn's context takes tens of chunks of 256)
BUSY = ["scheduler.name=sarathi", "scheduler.chunk_size=256", "workload.num_requests=400",
        "workload.arrival.rate_per_s=6", "workload.sessions.think_time_s=1", "router.name=least-requests"]


def run_both(sets: list[str], monkeypatch) -> tuple:
    """(fast-forwarded, stepped) results and the turns that joined with their chunks (each with
    its number of keys, whether its whole prompt's blocks were taken at the join, and whether
    it chained: kept waiting inside another prompt's chunks, joining beside that prompt's rest)."""
    joined = []

    def counting(join, chained):
        def counted(engine, st, *args, keyed=False):
            req = next(iter(engine.scheduler.waiting))
            # (beside the rest of the prompt a stretch of `chunk_rest.py` planned with it: "rest")
            how = chained and ("rest" if st.chain_at[0] == st.spent_to else "joined")
            ok = join(engine, st, *args, keyed=keyed)
            if ok:
                assert keyed and req in engine.scheduler.running
                whole = engine.kv.num_blocks_of(req.id) * engine.kv.block_size >= req.num_tokens
                joined.append((req.id, req.kv_block_keys.num_blocks, whole, how))
            return ok
        return counted

    monkeypatch.setattr(keyed_join, "chunk_join", counting(keyed_join.chunk_join, False))
    monkeypatch.setattr(keyed_join, "chain_join", counting(keyed_join.chain_join, True))
    fast = simulate(load_scenario(SESSIONS, sets), keep_steps=True)
    n = len(joined)
    slow = simulate(load_scenario(SESSIONS, sets + ["engine.fast_forward=false"]), keep_steps=True)
    assert len(joined) == n  # (stepping joins nothing)
    return fast, slow, joined


@pytest.mark.parametrize("extra, least, chained, rests", [
    # (75 of 400 on the branch that built it: 16 beside a joined prompt's rest, 5 beside a planned one's)
    (["replicas=4"], 50, 8, 2),
    # a small cache: stretches limited to the blocks free (22, 2, 1)
    (["replicas=4", "engine.gpu_memory_utilization=0.25"], 10, 1, 1),
    # a shared system prompt: most turns' first blocks indexed, refused (3, 0, 1)
    (["replicas=3", "workload.shared_prefix={tokens: 512, groups: 2}"], 1, 0, 1),
])
def test_sarathi_next_turns_join_with_their_chunks_exactly(extra, least, chained, rests, monkeypatch):
    fast, slow, joined = run_both(BUSY + extra, monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    # (before, Sarathi's turns ended every stretch they reached: none joined)
    assert len(joined) >= least, len(joined)
    # (turns with keys; Sarathi's admission takes every block of the prompt)
    assert all(keys > 0 and whole for _, keys, whole, _ in joined)
    assert sum(c == "joined" for *_, c in joined) >= chained
    assert sum(c == "rest" for *_, c in joined) >= rests


def test_sarathi_turn_joins_under_a_router_reading_every_view(reads_everything, monkeypatch):
    fast, slow, joined = run_both(BUSY + ["replicas=3", f"router.name={reads_everything}"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
    assert len(joined) >= 30, len(joined)  # (54: 10 beside a joined prompt's rest, 7 beside a planned one's)
    assert sum(c == "joined" for *_, c in joined) >= 4
    assert sum(c == "rest" for *_, c in joined) >= 3


def test_a_sole_replica_keeps_sarathi_turns_out_of_its_stretches(monkeypatch):
    # (at one replica a turn's context is often still indexed where it arrives, and the whole
    # registration plans that keyed joins need cost more than the few joins save)
    fast, slow, joined = run_both(BUSY + ["replicas=1"], monkeypatch)
    assert outcome(fast) == outcome(slow)
    assert not joined
