"""Sarathi's long prompts joining stretches with their chunks (`replica/chunk_join.py`) under a
router that reads every view field (running, waiting, KV blocks, prompt and decode tokens
outstanding) at every arrival: the views inside a joined prompt's chunks count the chunks that
ran (`Stretch.prompt_tokens_before`), so the routing and the runs are stepping's."""

from __future__ import annotations

import pytest

from servesim.replica import stretch_join

from .helpers import assert_same_steps, outcome, reads_everything, run  # noqa: F401  (fixture)


@pytest.mark.parametrize("chunk_size,rate", [(128, 10), (256, 20)])
def test_chunk_joins_are_exact_with_a_state_reading_router(chunk_size, rate, reads_everything, monkeypatch):
    calls = []
    join = stretch_join.chunk_join
    monkeypatch.setattr(stretch_join, "chunk_join", lambda *a: join(*a) and not calls.append(1))
    sets = [f"router.name={reads_everything}", "scheduler.name=sarathi", f"scheduler.chunk_size={chunk_size}",
            f"workload.arrival.rate_per_s={rate}"]
    fast, slow = run(sets), run(sets, fast_forward=False)
    long_prompts = sum(r.prompt_len > chunk_size for r in fast.requests)
    # (at 20 requests per second more arrivals land inside another prompt's chunks or queue)
    assert len(calls) > (0.3 if rate == 10 else 0.1) * long_prompts, (len(calls), long_prompts)
    assert outcome(fast) == outcome(slow)
    assert_same_steps(fast, slow)
