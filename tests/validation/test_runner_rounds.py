"""SGLang H200 0.5.6.post2, AIConfigurator's eval campaign: its runner's request count (silicon.RUNNER_ROUNDS,
aiperf --request-count 10 x concurrency after a drained warm-up) is played, exactly and only for that release."""

from __future__ import annotations

from servesim.validation.silicon import RUNNER_ROUNDS, ClientOptions, parse_row, row_request_counts
from tests.validation.silicon_rows import BASE

LLAMA_H200 = {**BASE, "backend": "sglang", "backend_version": "0.5.6.post2", "model_path": "meta-llama/Llama-3.1-8B-Instruct",
              "system": "h200_sxm", "gemm_quant_mode": "fp8_block", "moe_quant_mode": "", "tp_size": "1", "moe_tp_size": "",
              "moe_ep_size": "", "attention_dp_size": "", "batch_size": "128", "concurrency": "128", "isl": "4000", "osl": "1000"}


def counts(options: ClientOptions = ClientOptions(), **changes):
    c = row_request_counts(parse_row({**LLAMA_H200, **changes}), options)
    return c.warmup, c.measured, c.trailing


def test_the_eval_campaign_plays_its_runners_ten_rounds_and_no_trailing_round():
    assert RUNNER_ROUNDS == {("sglang", "h200_sxm", "0.5.6.post2"): 10}
    assert counts() == (0, 1280, 0)  # 10 per user, the warm-up drained before the profiling phase
    assert counts(concurrency="3", batch_size="3") == (0, 30, 0)  # no 32-request floor: the runner sends 10c


def test_other_releases_gpus_and_engines_keep_servesims_client():
    assert counts(backend_version="0.5.9") == (0, 512, 128)  # 4 per user and a trailing round
    assert counts(system="b200_sxm") == (0, 512, 128)
    assert counts(backend="vllm") == (0, 512, 128)
    assert counts(ClientOptions(recorded_rounds=False)) == (0, 512, 128)  # the switch covers it too
