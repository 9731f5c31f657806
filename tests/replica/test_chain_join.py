"""A newcomer arriving inside the chunk steps of a prompt that joined a stretch with its chunks
(`replica/chunk_join.py`, Sarathi): it is kept waiting, the stretch ends at that prompt's join
step, and there (`chain_join`) it joins beside the prompt's rest with the budget that leaves as
its first chunk, then its own chunks (or whole, if that budget covers its prompt). Fast-forwarded runs give exactly stepping's run (every
request's tokens, token steps, times and computed tokens, the whole step log, waiting counts
included), and the chained joins really happen."""

from __future__ import annotations

import pytest

from servesim.replica import chunk_join, engine_arrivals, stretch_join
from tests.factories import assert_same_run
from tests.replica.test_stall_join import FIELDS, llama  # noqa: F401  (fixture)
from tests.replica.test_stretch_join import light_load, run


@pytest.fixture
def counted(monkeypatch):
    """Counts the chained joins and the arrivals kept inside a joined prompt's chunks."""
    calls = {"chained": 0, "kept": 0, "refused": 0, "whole": 0}
    chain = stretch_join.chain_join
    keeps = engine_arrivals.keeps_in_chunks
    whole = chunk_join._chain_whole

    def counted_whole(*args):
        joined = whole(*args)
        calls["whole"] += joined
        return joined

    def counted_chain(*args):
        joined = chain(*args)
        calls["chained" if joined else "refused"] += 1
        return joined

    def counted_keeps(*args):
        kept = keeps(*args)
        calls["kept"] += kept
        return kept

    monkeypatch.setattr(stretch_join, "chain_join", counted_chain)
    monkeypatch.setattr(engine_arrivals, "keeps_in_chunks", counted_keeps)
    monkeypatch.setattr(chunk_join, "_chain_whole", counted_whole)
    return calls


@pytest.mark.parametrize("chunk_size", [128, 256])
@pytest.mark.parametrize("seed,num_blocks,gap_s", [(1, 3000, 0.2), (2, 3000, 0.4), (3, 800, 0.2), (4, 400, 0.4)])
def test_newcomers_inside_a_prompts_chunks_join_beside_its_rest_exactly(chunk_size, seed, num_blocks, gap_s, llama,
                                                                       counted):
    # long prompts arriving often: many land while another joined prompt runs its chunks
    a_reqs = light_load(seed, n=300, gap_s=gap_s, max_prompt=2000)
    b_reqs = light_load(seed, n=300, gap_s=gap_s, max_prompt=2000)
    params = {"chunk_size": chunk_size}
    a = run(a_reqs, True, num_blocks, llama, scheduler="sarathi", params=params, max_num_seqs=32)
    b = run(b_reqs, False, num_blocks, llama, scheduler="sarathi", params=params, max_num_seqs=32)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    if num_blocks == 3000:
        # (some newcomers' prompts fit whole beside the rest: they join as whole prompts there)
        assert counted["kept"] >= 10 and counted["chained"] >= 10 and counted["whole"] >= 1, counted
    else:  # (a tighter cache: newcomers more often wait for blocks, when stepping too)
        assert counted["kept"] >= 1 and counted["chained"] >= 1, counted


def test_a_chained_join_prices_its_first_step_with_both_prompts(llama, monkeypatch, counted):
    # the step where one prompt computes its rest and the next its first chunk is priced from
    # the stretch's count and context sum: with the newcomer's chunk left out of that price the
    # run is no longer stepping's (so the comparison above sees the two-prompt step)
    form = type(llama).prompts_step_s
    monkeypatch.setattr(type(llama), "prompts_step_s", lambda self, prefills, n, ctx: form(self, prefills[:1], n, ctx))
    a_reqs = light_load(1, n=300, gap_s=0.2, max_prompt=2000)
    b_reqs = light_load(1, n=300, gap_s=0.2, max_prompt=2000)
    a = run(a_reqs, True, 3000, llama, scheduler="sarathi", params={"chunk_size": 128}, max_num_seqs=32)
    b = run(b_reqs, False, 3000, llama, scheduler="sarathi", params={"chunk_size": 128}, max_num_seqs=32)
    assert counted["chained"] >= 10
    with pytest.raises(AssertionError):
        assert_same_run(a, b, a_reqs, b_reqs, 3000, FIELDS)


def test_no_chained_join_without_the_two_prompt_form(llama, monkeypatch, counted):
    # a perf model without `prompts_step_s` never chains: the stretch ends at the join step and
    # stepping's `schedule` admits the newcomer there (still exact)
    monkeypatch.setattr(type(llama), "prompts_step_s", lambda self, prefills, n, ctx: None)
    a_reqs = light_load(2, n=300, gap_s=0.2, max_prompt=2000)
    b_reqs = light_load(2, n=300, gap_s=0.2, max_prompt=2000)
    a = run(a_reqs, True, 3000, llama, scheduler="sarathi", params={"chunk_size": 128}, max_num_seqs=32)
    b = run(b_reqs, False, 3000, llama, scheduler="sarathi", params={"chunk_size": 128}, max_num_seqs=32)
    assert_same_run(a, b, a_reqs, b_reqs, 3000, FIELDS)
    # (each refusal applies a stretch ended inside the prompt's chunks, with the chunks that ran)
    assert counted["chained"] == 0 and counted["refused"] >= 10 and counted["kept"] >= 10, counted
    assert chunk_join.chain_join is not None
