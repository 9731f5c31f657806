"""Front end and prefill constants of one release fitted together (validation/release_waves.py):
which rows it fits and holds out, that it recovers the per-token front-end cost a set of
measurements was made with, and the entries it writes."""

from __future__ import annotations

import pytest

from servesim.validation import release_waves
from servesim.validation.run import simulate_row
from servesim.validation.silicon import ClientOptions, row_scenario

from tests.validation.silicon_rows import silicon_row

KEY = ("vllm", "h100_sxm", "0.18.0")


def test_rows_of_the_key_at_even_positions_fit_odd_ones_are_held_out():
    rows = [silicon_row(0), silicon_row(1), silicon_row(2, backend_version="0.16.0"), silicon_row(3),
            silicon_row(4, mode="disagg"), silicon_row(5)]
    fit, held = release_waves.key_rows(rows, KEY)
    assert [r.id for r in fit] == ["r0"] and [r.id for r in held] == ["r1", "r3", "r5"]


def test_fit_recovers_the_per_token_front_end_cost():
    # measurements made by servesim itself with 1 us per prompt token: a wave of 8 prompts of 2,048
    # tokens reaches the engine 2 ms apart, so the mean TTFT says how large the cost is
    options = ClientOptions(min_requests=8, requests_per_user=1)
    rows = [silicon_row(i, isl=str(isl), concurrency="8", batch_size="8") for i, isl in enumerate((2048, 1024, 4096, 512))]
    measured = []
    for r in rows:
        sim = simulate_row(r, options, frontend={"prompt_token_s": 1e-6})
        measured.append(silicon_row(int(r.id[1:]), isl=str(r.isl), concurrency="8", batch_size="8",
                                    silicon_ttft_ms=str(sim.ttft_s * 1e3), silicon_tpot_ms=str(sim.tpot_s * 1e3)))
    logs: list[str] = []
    fitted = release_waves.fit_release(measured, KEY, options, names=("prompt_token_s",), log=logs.append)
    assert fitted["prompt_token_s"] == 1e-6
    assert len(logs) == 1 and "held out (2 rows) TTFT" in logs[0] and "-> 0.0%" in logs[0]
    entry, profile, frontend = release_waves.shipped_form(KEY, fitted)
    assert entry.match == {"gpu": "h100-sxm", "engine": "vllm", "version": "0.18.0"}
    assert set(entry.values) == {"eta_compute_large_m", "eta_attn_compute", "ar_bw_eff"}
    assert profile == "vllm@h100-sxm@0.18.0" and frontend["prompt_token_s"] == 1e-6


def test_fit_reaches_a_fixed_latency_above_a_tenth_of_a_second():
    # fit.FRONTEND_GRID stops at 0.1 s; a release whose first tokens trail by 0.2 s at every
    # concurrency (TensorRT-LLM B200 1.1.0rc2.post2) needs the release grid's longer latencies
    assert max(release_waves.RELEASE_FRONTEND_GRID["latency_s"]) >= 0.2
    options = ClientOptions(min_requests=4, requests_per_user=1)
    rows = [silicon_row(i, concurrency=str(c), batch_size=str(c)) for i, c in enumerate((1, 2, 4, 2, 1))]
    measured = []
    for r in rows:
        sim = simulate_row(r, options, frontend={"latency_s": 0.2})
        measured.append(silicon_row(int(r.id[1:]), concurrency=str(r.concurrency), batch_size=str(r.concurrency),
                                    silicon_ttft_ms=str(sim.ttft_s * 1e3), silicon_tpot_ms=str(sim.tpot_s * 1e3)))
    fitted = release_waves.fit_release(measured, KEY, options, names=("latency_s",))
    assert fitted["latency_s"] == 0.2


@pytest.mark.parametrize("version, constants", [("1.1.0rc2.post2", (0.002, 0.0, 0.2)), ("1.2.0rc2", (0.01, 1e-6, 0.02))])
def test_trtllm_b200_releases_fitted_here_play_their_own_front_end(version, constants):
    b200 = {"backend": "trtllm", "system": "b200_sxm", "concurrency": "4", "batch_size": "4"}
    own = row_scenario(silicon_row(0, backend_version=version, **b200))
    assert own.frontend.profile == f"trtllm@b200@{version}"
    assert own.frontend.constants() == constants  # request_s, prompt_token_s, latency_s
    # a release without its own profile keeps the GPU's (request_s 5 ms, 4 us per prompt token, latency 20 ms)
    assert row_scenario(silicon_row(0, backend_version="1.3.0rc1", **b200)).frontend.constants() == (0.005, 4e-6, 0.02)


def test_trtllm_h200_1_1_0rc2_post2_plays_its_own_latency_and_other_h200_releases_do_not():
    h200 = {"backend": "trtllm", "system": "h200_sxm", "concurrency": "4", "batch_size": "4"}
    own = row_scenario(silicon_row(0, backend_version="1.1.0rc2.post2", **h200))
    assert own.frontend.profile == "trtllm@h200@1.1.0rc2.post2"
    # the GPU's request_s, a 0.2 s latency (0.3 s until the release's eager context steps were priced, trth200r1)
    assert own.frontend.constants() == (0.0005, 0.0, 0.2)
    # runs without a version (the Llama-3.1-70B InferenceMAX rows) keep the GPU's front end (latency 40 ms)
    assert row_scenario(silicon_row(0, backend_version="", **h200)).frontend.constants() == (0.0005, 0.0, 0.04)


def test_trtllm_b200_rows_without_a_release_serialise_their_prompt_tokens_in_the_front_end():
    # the unversioned InferenceMAX B200 rows play the GPU's profile, whose serial 4 us per prompt token the
    # rows outside held_out_ids chose (docs/fidelity-history.md, trt19): an 8,192-token prompt holds the API server 32.8 ms
    b200 = {"backend": "trtllm", "system": "b200_sxm", "concurrency": "16", "batch_size": "16"}
    scenario = row_scenario(silicon_row(0, backend_version="", **b200))
    assert scenario.frontend.profile == "trtllm@b200"
    request_s, prompt_token_s, _ = scenario.frontend.constants()
    assert request_s + prompt_token_s * 8192 == pytest.approx(0.005 + 0.0327680)
