"""A long prompt joining a stretch in flight with its chunks (`replica/chunk_join.py`, Sarathi):
fast-forwarded runs where such prompts join give exactly the run stepping gives (every request's
tokens, token steps, times and computed tokens, the whole step log), the joins really happen,
and stretches cut inside a joined prompt's chunks (an arrival there) are applied exactly too."""

from __future__ import annotations

import pytest

from servesim.replica import stretch_apply, stretch_join
from tests.factories import assert_same_run
from tests.replica.test_stall_join import FIELDS, llama  # noqa: F401  (fixture)
from tests.replica.test_stretch_join import light_load, run


@pytest.fixture
def counted(monkeypatch):
    """Counts the chunk joins, and the applied stretches cut before a joined prompt's last chunk."""
    calls = {"joins": 0, "cut_inside": 0, "chained": 0}
    join, chain = stretch_join.chunk_join, stretch_join.chain_join

    def counted_join(*args):
        joined = join(*args)
        calls["joins"] += joined
        return joined

    apply = stretch_apply.apply_prompt_runs

    def counted_apply(st, *args):
        calls["cut_inside"] += any(s0 + len(chunks) >= st.k > s0 for s0, chunks, _, _ in st.prompt_runs)
        return apply(st, *args)

    def counted_chain(*args):
        joined = chain(*args)
        calls["chained"] += joined
        return joined

    monkeypatch.setattr(stretch_join, "chunk_join", counted_join)
    monkeypatch.setattr(stretch_join, "chain_join", counted_chain)
    monkeypatch.setattr(stretch_apply, "apply_prompt_runs", counted_apply)
    return calls


@pytest.mark.parametrize("chunk_size", [100, 128, 300])
@pytest.mark.parametrize("seed,num_blocks", [(1, 2000), (2, 300), (3, 120)])
def test_long_prompts_join_with_their_chunks_exactly(chunk_size, seed, num_blocks, llama, counted):
    a_reqs, b_reqs = light_load(seed, max_prompt=700), light_load(seed, max_prompt=700)
    params = {"chunk_size": chunk_size}
    a = run(a_reqs, True, num_blocks, llama, scheduler="sarathi", params=params)
    b = run(b_reqs, False, num_blocks, llama, scheduler="sarathi", params=params)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    assert b.num_joined_arrivals == 0
    if num_blocks == 120:  # (a tight cache: newcomers mostly wait for blocks, when stepping too)
        assert counted["joins"] >= 1
        return
    # most prompts longer than the chunk joined with their chunks; an arrival inside them ended
    # the stretch at the prompt's last chunk, where it joined beside the rest (`chain_join`) or
    # the stretch was applied with the chunks that ran (stepping's next `schedule` goes on; every
    # such apply: test_chain_join.py's run without the two-prompt form)
    long_prompts = sum(r.prompt_len > chunk_size for r in a_reqs)
    assert counted["joins"] > 0.4 * long_prompts, (counted, long_prompts)
    assert counted["cut_inside"] + counted["chained"] >= 1


def test_no_chunk_join_without_the_scalar_chunk_form(counted):
    # a model without `chunk_time_fn` (the test engine's toy one) never joins a prompt by chunks
    from tests.factories import ToyPerf
    a_reqs, b_reqs = light_load(4, max_prompt=700), light_load(4, max_prompt=700)
    a = run(a_reqs, True, 2000, ToyPerf(), scheduler="sarathi", params={"chunk_size": 128})
    b = run(b_reqs, False, 2000, ToyPerf(), scheduler="sarathi", params={"chunk_size": 128})
    assert_same_run(a, b, a_reqs, b_reqs, 2000, FIELDS)
    assert counted["joins"] == 0
