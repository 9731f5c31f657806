"""Arrivals joining a speculative stretch as a prompt-only step (`SpecStretch._stall_step`,
`stretch_join.spec_join_arrivals` for a prefill-first policy: vllm-v0, sglang, vtc's mini-batch):
step s runs the admitted prompts alone, the decodes stalled (no token, block or acceptance row),
then every request speculates; vtc's newcomers within its count wait in the stretch to the step
it is reached (`SpecStretch.hold`). The fast-forwarded run is stepping's (every request's tokens,
token steps, times and computed tokens, the step log, the acceptance rows left over and vtc's
counters, float for float), and the prompt-only joins really happen."""

from __future__ import annotations

import pytest

from servesim.replica.spec_stretch import SpecStretch
from tests.factories import ToyPerf, make_request
from tests.replica.test_spec_join import assert_same_spec_run, llama, spec_run  # noqa: F401 (fixture)
from tests.replica.test_stall_join import FIELDS, STALLING
from tests.replica.test_stretch_join import light_load
from tests.replica.test_vtc_join import VARIANTS, pairs, tenants_in_phases


@pytest.fixture
def spec_stalls(monkeypatch):
    """The prompt-only join steps (step, decodes stalled) of every speculative stretch."""
    steps = []
    join = SpecStretch.join

    def counting(st, joins, blocks, step, order, kv, stall=False):
        join(st, joins, blocks, step, order, kv, stall)
        if stall:
            steps.append(st._stalled[-1])

    monkeypatch.setattr(SpecStretch, "join", counting)
    return steps


@pytest.mark.parametrize("scheduler,params", STALLING)
@pytest.mark.parametrize("seed,num_blocks", [(1, 2000), (3, 120)])
@pytest.mark.parametrize("perf_name,k,rate", [("toy", 3, 0.7), ("llama", 3, 0.7), ("llama", 5, 0.9)])
def test_prefill_first_spec_joins_match_stepping(scheduler, params, seed, num_blocks, perf_name, k, rate,
                                                  llama, spec_stalls):  # noqa: F811
    perf = ToyPerf() if perf_name == "toy" else llama
    a_reqs, b_reqs = light_load(seed), light_load(seed)
    a = spec_run(a_reqs, True, num_blocks, perf, scheduler, params, k=k, rate=rate)
    b = spec_run(b_reqs, False, num_blocks, perf, scheduler, params, k=k, rate=rate)
    assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    if scheduler == "sglang" and num_blocks == 120:
        # SGLang admits a prompt only below what the running requests' decode reserve leaves
        # (`join_blocks`): with 120 blocks nobody joins, and the stretches end where stepping admits
        assert a.num_joined_arrivals == 0 and not spec_stalls
        return
    # nearly half the arrivals joined a stretch in flight as its prompt-only step, each such step
    # stalling the decodes running then (more than one on average)
    assert a.num_joined_arrivals > 0.4 * len(a_reqs)
    assert 0 < len(spec_stalls) <= a.num_joined_arrivals < sum(n for _, n in spec_stalls)


@pytest.mark.parametrize("params", VARIANTS)
@pytest.mark.parametrize("seed,num_blocks", [(1, 2000), (2, 300)])
def test_vtc_mini_batches_join_spec_stretches_with_its_counters(params, seed, num_blocks, llama,
                                                                 spec_stalls):  # noqa: F811
    # two tenants (one weighted in a variant): the mini-batch at the boundary where `max_wait_tokens`
    # decode steps ran joins; one that comes within the count waits in the stretch to that step
    # (`SpecStretch.hold`) and joins there
    a_reqs, b_reqs = tenants_in_phases(seed), tenants_in_phases(seed)
    a = spec_run(a_reqs, True, num_blocks, llama, "vtc", params)
    b = spec_run(b_reqs, False, num_blocks, llama, "vtc", params)
    assert_same_spec_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    assert a.scheduler.counters == b.scheduler.counters  # float for float
    assert a.num_joined_arrivals > 0.5 * len(a_reqs) and spec_stalls
    assert a.num_held_arrivals > 0.05 * len(a_reqs)


@pytest.mark.parametrize("gap_s", [0.02, 0.05])
@pytest.mark.parametrize("params", [{}, {"max_wait_tokens": 20}])
def test_vtc_arrivals_within_the_count_are_held_in_spec_stretches(gap_s, params, llama):  # noqa: F811
    # The second of each pair arrives a few steps after the first one's mini-batch: stepping runs
    # speculative decode steps, it waiting, until `max_wait_tokens` of them ran, then its
    # mini-batch. Fast-forwarded it waits in the stretch to that step (the step log's waiting count)
    a_reqs, b_reqs = pairs(gap_s), pairs(gap_s)
    a = spec_run(a_reqs, True, 2000, llama, "vtc", params)
    b = spec_run(b_reqs, False, 2000, llama, "vtc", params)
    assert_same_spec_run(a, b, a_reqs, b_reqs, 2000, FIELDS)
    assert a.scheduler.counters == b.scheduler.counters
    assert a.num_held_arrivals >= 40 and a.num_joined_arrivals >= 55
    wait = params.get("max_wait_tokens", 10)  # (its first token that many decode steps after the first's, + its own)
    assert all(y.token_steps[0] == x.token_steps[0] + wait + 1 for x, y in zip(a_reqs[::2], a_reqs[1::2]))


def test_a_burst_joins_as_one_prompt_only_step(llama, spec_stalls):  # noqa: F811
    # four arrivals in one step join as one prefill batch: one stall step for the four
    bursts = [[make_request(4 * i + j, 30 + 7 * j, 80 + 13 * i % 50, 0.1 * i + 1e-4 * j) for i in range(40)
               for j in range(4)] for _ in range(2)]
    a = spec_run(bursts[0], True, 2000, llama, "vllm-v0", max_num_seqs=64)
    b = spec_run(bursts[1], False, 2000, llama, "vllm-v0", max_num_seqs=64)
    assert_same_spec_run(a, b, bursts[0], bursts[1], 2000, FIELDS)
    assert a.num_joined_arrivals >= 100 and a.num_joined_arrivals >= 3 * len(spec_stalls)
