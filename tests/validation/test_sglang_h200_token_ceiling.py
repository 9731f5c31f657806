"""SGLang H200 0.5.6.post2 (AIConfigurator's eval campaign behind Dynamo): the front end's serial time per
streamed token (frontend.yaml `sglang@h200@0.5.6.post2`, output_token_s 50 us, solved from the campaign's
token-rate ceiling; docs/fidelity-history.md). Exact (which rows play it) and behavioural (the ceiling binds)."""

from __future__ import annotations

from servesim.simulation import simulate
from servesim.validation.run import client_metrics
from servesim.validation.silicon import ClientOptions, parse_row, row_scenario
from tests.validation.test_silicon_mapping import BASE

LLAMA_H200 = {**BASE, "backend": "sglang", "backend_version": "0.5.6.post2", "model_path": "meta-llama/Llama-3.1-8B-Instruct",
              "system": "h200_sxm", "gemm_quant_mode": "fp8_block", "moe_quant_mode": "", "tp_size": "8", "moe_tp_size": "",
              "moe_ep_size": "", "attention_dp_size": "", "batch_size": "256", "concurrency": "256", "isl": "200", "osl": "100"}


def scenario(frontend: dict | None = None, **changes):
    return row_scenario(parse_row({**LLAMA_H200, **changes}), ClientOptions(trailing_rounds=0), calibration=None,
                        frontend=frontend)


def test_only_the_release_on_h200_streams_through_the_serial_front_end():
    s = scenario()
    assert s.frontend.profile == "sglang@h200@0.5.6.post2" and s.frontend.token_s() == 5.0e-05
    assert scenario(backend_version="0.5.9").frontend.token_s() == 0.0
    assert scenario(system="b200_sxm").frontend.token_s() == 0.0


def served_tokens_per_s(requests) -> float:
    span_s = max(r.finish_s for r in requests) - min(r.arrival_s for r in requests)
    return sum(r.num_output_tokens for r in requests) / span_s


def test_the_token_rate_stays_under_the_ceiling_and_the_wait_moves_to_the_first_token():
    # A serial process spending request_s (2 ms) per request and 50 us per streamed token serves at most
    # osl / (request_s + osl x 50 us) tokens a second (100 out: 14,286); 256 users of an 8B model on 8 GPUs
    # decode faster: with the release's front end the served rate stays at the ceiling, without the token
    # cost (output_token_s 0) it is well above it.
    ceiling = 100 / (0.002 + 100 * 5.0e-05)
    capped = simulate(scenario()).requests
    free = simulate(scenario(frontend={"output_token_s": 0.0})).requests
    capped_rate, free_rate = served_tokens_per_s(capped), served_tokens_per_s(free)
    assert 0.95 * ceiling < capped_rate <= ceiling * 1.0001 and free_rate > 1.5 * ceiling
    assert client_metrics(capped)[0] > 2 * client_metrics(free)[0]
