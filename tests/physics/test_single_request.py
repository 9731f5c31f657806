"""Physics: an idle replica serving one request, and the memory-bound batch-1 decode."""

from __future__ import annotations

import pytest

from servesim import simulate
from servesim.perf import build_perf_model
from servesim.scenario import validate_scenario


def one_request(prompt: int, output: int, **top):
    return validate_scenario({
        **top,
        "workload": {"arrival": {"process": "poisson", "rate_per_s": 1.0}, "num_requests": 1,
                     "lengths": {"prompt_tokens": prompt, "output_tokens": output}},
    })


@pytest.mark.parametrize("model,gpu,tp", [("llama-3.1-8b", "h100-sxm", 1), ("llama-3.1-70b", "a100-80gb", 4)])
def test_alone_ttft_is_prefill_time_and_tpot_is_decode_step_time(model, gpu, tp):
    prompt, output = 2000, 50
    result = simulate(one_request(prompt, output, model=model, gpu=gpu, tp=tp))
    perf = build_perf_model(model, gpu, tp)
    (req,) = result.requests
    assert req.first_token_s - req.arrival_s == pytest.approx(perf.step_time_s([(prompt, 0)], []), rel=1e-12)
    decode = [perf.step_time_s([], [prompt + j]) for j in range(output - 1)]
    s = result.summary()
    assert s["tpot_s"]["mean"] == pytest.approx(sum(decode) / len(decode), rel=1e-9)
    assert s["itl_s"]["max"] == pytest.approx(max(decode), rel=1e-9)
    assert s["num_steps"] == output  # one prefill step, then one step per further token


def test_batch1_decode_8b_h100_is_memory_bound():
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    weights_s = perf.weight_bytes_per_gpu / 3.35e12  # 16.06 GB of BF16 weights at 3.35 TB/s = 4.8 ms
    assert weights_s == pytest.approx(4.79e-3, rel=0.01)
    b = perf.step_breakdown([], [512])
    assert b.regime == "memory"
    # GPU time ~ weights / HBM bandwidth (at the calibrated ~85 % efficiency) plus small terms,
    # and the step adds the engine's CPU overhead on top.
    assert weights_s < b.gpu_s < 1.3 * weights_s
    assert b.total_s == pytest.approx(b.gpu_s + b.overhead_s, rel=1e-12)
    # Doubling a tiny batch barely changes a memory-bound step.
    assert perf.step_time_s([], [512] * 2) < 1.02 * b.total_s
