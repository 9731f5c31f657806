"""SGLang B300 0.5.9 Qwen3.5-397B-A17B FP8 rows play the B200 campaign's scripts whose grids they match
(validation/inferencemax.py B300_AS_B200_KEYS; docs/fidelity-history.md, issue 14, sgb3_28): the TP 4 rows the MTP script
(drafts, spec v1's CPU time), the TP 8 and TP 4 x EP 4 rows the plain one, both streaming weights at TensorRT-LLM
B200's efficiency (no B300 TensorRT-LLM entry: KERNEL_GPU_FALLBACK), with B200 0.5.9's plain floor and prompt price
in the release's entry and a lower front end."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.validation.inferencemax import sglang_script
from servesim.validation.run import simulate_row
from servesim.validation.silicon import played_row, row_scenario

from tests.validation.silicon_rows import silicon_row

# 2026_03_25 B300 0.5.9 Qwen3.5 FP8, TP 8, 1k/1k at 8 users: 194 ms first token, 9.31 ms a token (measured)
TP8 = {"backend": "sglang", "backend_version": "0.5.9", "model_path": "Qwen/Qwen3.5-397B-A17B", "system": "b300_sxm",
       "gemm_quant_mode": "fp8", "moe_quant_mode": "fp8_block", "tp_size": "8", "moe_tp_size": "8", "moe_ep_size": "1",
       "isl": "1024", "osl": "1024", "concurrency": "8", "batch_size": "8",
       "silicon_ttft_ms": "194.0", "silicon_tpot_ms": "9.31"}
TP4 = {**TP8, "tp_size": "4", "moe_tp_size": "4"}
EP4 = {**TP8, "tp_size": "4", "moe_tp_size": "1", "moe_ep_size": "4", "concurrency": "16", "batch_size": "16"}


def _row(**changes):
    return silicon_row(0, **changes)


def _script(**changes):
    return sglang_script(played_row(_row(**changes)))


def _constants(**changes):
    s = row_scenario(_row(**changes))
    return s, build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf).constants


def test_each_deployment_plays_the_b200_script_of_its_grid():
    assert _script(**TP4).drafts == 3  # the MTP config's TP 4 grid
    assert _script(**TP8).drafts == 0 and _script(**EP4).drafts == 0  # the plain config's
    assert _script(**{**TP8, "concurrency": "64", "batch_size": "64"}) is None  # TP 8 outside the plain sweep
    # B300 0.5.10.post1 is another campaign: its own plain InferenceX script (sgb3_29), not B200's MTP one
    assert _script(**{**TP4, "backend_version": "0.5.10.post1"}).drafts == 0
    assert _script(**{**TP4, "gemm_quant_mode": "nvfp4", "moe_quant_mode": "nvfp4"}) is None


@pytest.mark.parametrize("deployment", [TP4, TP8, EP4])
def test_the_scripts_kernels_stream_at_tensorrt_llm_b200_s_efficiency(deployment):
    b300 = _constants(**deployment)[1].eta_memory
    b200 = _constants(**{**deployment, "system": "b200_sxm"})[1].eta_memory
    assert b300 == b200 == 0.85


def test_the_release_s_floor_price_and_front_end():
    s, plain = _constants(**TP8)
    assert (plain.step_overhead_s, plain.prompt_token_gpu_s) == (0.009, 1.8e-05)
    assert s.frontend.profile == "sglang@b300@0.5.9" and s.frontend.constants()[2] == 0.07
    mtp = _constants(**TP4)[1]
    assert (mtp.step_overhead_s, mtp.overlap_cpu) == (0.002, 0.0)  # spec v1's serial CPU time, as on B200
    # a row no script ran keeps the release's SGLang streaming (0.6, sgh19)
    assert _constants(**{**TP8, "concurrency": "64", "batch_size": "64"})[1].eta_memory == 0.6


def test_the_tp_8_eight_user_row_decodes_as_measured():
    r = simulate_row(_row(**TP8))
    assert r.tpot_error == pytest.approx(0.0, abs=0.1)  # main's play: -34 % on the 6 ms floor
    assert abs(r.ttft_error) < 0.15


def test_the_plain_script_rows_take_as_a_prompt_step_starts_and_the_mtp_rows_do_not():
    # the plain qwen3.5_fp8_b200.sh runs event_loop_overlap (receive interval 10 / 30): the take runs as a prompt step
    # starts, as on B200 0.5.9; the MTP script runs spec v1's plain loop and keeps the take at the step's end (sgb3t29)
    for deployment, interval in ((TP8, 10), (EP4, 30)):  # 8 users, 16 users (the `CONC -ge 16` switch)
        sched = row_scenario(_row(**deployment)).scheduler.model_dump()
        assert (sched["overlap_loop_take"], sched["scheduler_recv_interval"]) == (True, interval)
    mtp = row_scenario(_row(**TP4))
    assert mtp.engine.num_speculative_tokens == 3
    assert mtp.scheduler.model_dump().get("overlap_loop_take", False) is False  # no take field set: the step's end
    assert mtp.scheduler.model_dump()["consecutive_prefill_launch_share"] == 0.0


def test_the_release_s_front_end_charges_no_serial_time_per_prompt_token_under_the_take():
    # prompt_token_s 5e-06 -> 0 with the take (sgb3t29), as B200 0.5.9's 1e-05 -> 0 (sgadm29)
    for deployment in (TP8, TP4):
        assert row_scenario(_row(**deployment)).frontend.constants() == (0.01, 0.0, 0.07)
