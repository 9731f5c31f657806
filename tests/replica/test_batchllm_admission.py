"""BatchLLM's admission stretches: with the oracle estimate each running request's projected
use is its final blocks, so a head over the projection limit (or short of free blocks) waits
until a finish, which admits in plan order inside the stretch (`finish_admits`), exactly as
stepping does."""

from __future__ import annotations

import pytest

from servesim.perf.build import build_perf_model
from tests.factories import ToyPerf, assert_same_run
from tests.replica.test_admission_stretch import FIELDS, overload, run


@pytest.fixture(scope="module")
def llama():
    return build_perf_model("llama-3.1-8b", "h100-sxm")


# mem_threshold 0.5: the projection blocks the head long before the free blocks do
@pytest.mark.parametrize("params", [{}, {"mem_threshold": 0.5}, {"mem_threshold": 0.7, "max_num_batched_tokens": 300}])
@pytest.mark.parametrize("seed,num_blocks", [(1, 1000), (3, 300), (4, 200)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_finishes_admit_inside_stretches_exactly(params, seed, num_blocks, perf_name, llama):
    perf = ToyPerf() if perf_name == "toy" else llama
    a_reqs, b_reqs = overload(seed), overload(seed)
    a = run(a_reqs, True, num_blocks, perf, "batchllm", params)
    b = run(b_reqs, False, num_blocks, perf, "batchllm", params)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS)
    assert a.num_finish_admissions > 0.3 * len(a_reqs)
    # (before: at most 9 % of these runs' steps, the stretches ending at each finish)
    assert a.num_fast_forwarded_steps > 0.9 * a.num_steps


def test_max_tokens_estimate_keeps_stepping_at_finishes():
    # a projection that is not the final blocks: no admission inside stretches, still exact
    a_reqs, b_reqs = overload(1), overload(1)
    params = {"output_len_estimate": "max_tokens"}
    a = run(a_reqs, True, 600, ToyPerf(), "batchllm", params)
    b = run(b_reqs, False, 600, ToyPerf(), "batchllm", params)
    assert_same_run(a, b, a_reqs, b_reqs, 600, FIELDS)
    assert a.num_finish_admissions == 0
