"""The admission lag of TensorRT-LLM 1.0.0rc3 on H100 (silicon.CONTEXT_ADMISSION_LAG; fitted, unsourced): that
release's rows play `context_admission_lag_iterations` 1, every other (engine, system, version) 0."""

from __future__ import annotations

from servesim.validation.silicon import CONTEXT_ADMISSION_LAG
from tests.validation.test_engine_slots_held import mean_ttft_s, scenario


def lag_of(s) -> int:
    return getattr(s.scheduler, "context_admission_lag_iterations", 0)


def test_only_the_h100_1_0_0rc3_runs_hold_a_context_one_iteration():
    assert CONTEXT_ADMISSION_LAG == {("trtllm", "h100_sxm", "1.0.0rc3"): 1}
    assert lag_of(scenario()) == 1
    assert lag_of(scenario(held=False)) == 1  # the engine's behaviour, not the held slot's option
    assert lag_of(scenario(backend_version="1.3.0rc1")) == 0
    assert lag_of(scenario(system="h200_sxm")) == 0
    assert lag_of(scenario(backend="vllm", backend_version="0.18.0")) == 0


def test_the_lag_delays_a_returning_users_first_token():
    # 4 users (128 / 64 tokens), one slot held: a returning prompt waits one decode iteration after its slot (about
    # 2 ms here), so the mean first token is later, by far less than a request's service time
    with_lag = mean_ttft_s(scenario())
    s = scenario()
    without = mean_ttft_s(s.model_copy(update={"scheduler": s.scheduler.model_copy(
        update={"context_admission_lag_iterations": 0})}))
    assert 0.001 < with_lag - without < 0.05 * without
