"""End-to-end error on a handful of measured rows with the shipped serving fit.

12 rows spread through the silicon sample (different engines, GPUs, models, lengths and
concurrencies). Bounds, stated in docs/fidelity.md: TPOT median absolute error <= 10 %, every
row's TPOT within 50 %, TTFT median absolute error <= 35 % (the goal is 10 %; TTFT is not there
yet; these rows measure 16 %), and the shipped fit must beat the uncalibrated engine constants on
TPOT and on TTFT.
"""

from __future__ import annotations


import pytest

from servesim.validation.fit import spread_sample
from servesim.validation.gap_analysis import campaign_reason
from servesim.validation.inferencemax_vllm import outside_sweep_reason
from servesim.validation.run import group_errors, validate_rows
from servesim.validation.silicon import inexpressible_reason, read_rows, row_scenario
from tests.validation.silicon_rows import SILICON



@pytest.fixture(scope="module")
def sample():
    # Drawn from the rows that were expressible when the bounds were set (mixed MoE TP x EP rows and
    # attention-DP rows, expressible since, are left out; the TensorRT-LLM 1.3.0rc1 rows and the vLLM H100
    # gpt-oss-120b 512-user rows, listed as not expressible since, are kept in the set and none of them is drawn)
    # so these stay the same 12 rows; the spread depends on the set.
    rows = [r for r in read_rows(SILICON) if (r.moe_tp == 1 or r.moe_ep == 1) and r.attention_dp <= 1]
    return spread_sample([r for r in rows if inexpressible_reason(r) is None or campaign_reason(r) is not None
                          or outside_sweep_reason(r) is not None], 12)


def test_shipped_fit_error_bounds(sample):
    results, skipped = validate_rows(sample)
    assert not skipped and len(results) == 12
    overall = group_errors(results)[-1]
    assert overall.tpot_mdape <= 0.10
    assert overall.ttft_mdape <= 0.35
    assert max(abs(r.tpot_error) for r in results) <= 0.50


def test_fit_beats_uncalibrated_constants_on_tpot(sample):
    fitted = group_errors(validate_rows(sample)[0])[-1]
    raw = group_errors(validate_rows(sample, calibration=None)[0])[-1]
    assert fitted.tpot_mdape < raw.tpot_mdape
    assert fitted.ttft_mdape < raw.ttft_mdape


def test_tp_times_ep_rows_play_on_the_gpus_that_ran_them():
    # The 12 SGLang B300 Qwen3.5 rows recorded as tp 4 = MoE 2 x 2 are `--tp 2 --ep 2` runs of 2
    # GPUs (validation/recorded_parallelism.py). Played as 4 GPUs their TPOT was 32.8 % too fast
    # (docs/fidelity-history.md); as 2 GPUs every row simulates and TTFT 18.9 %, TPOT 17.3 % (+5.6 %) then;
    # 17.3 % / 12.7 % (-10.9 %) with the ring all-reduce bandwidth and the 0.5.10.post1 decode
    # constants (sglang_decode, prefill_ring in calibration_serving.yaml). The bias bound keeps
    # the 4-GPU play (-32.8 %) out.
    rows = [r for r in read_rows(SILICON) if (r.system, r.moe_tp, r.moe_ep, r.attention_dp) == ("b300_sxm", 2, 2, 1)]
    assert len(rows) == 12 and all(inexpressible_reason(r) is None for r in rows)
    assert {row_scenario(r).tp for r in rows} == {2}
    results, skipped = validate_rows(rows)
    assert not skipped and len(results) == 12
    err = group_errors(results)[-1]
    assert err.ttft_mdape <= 0.25 and err.tpot_mdape <= 0.25 and abs(err.tpot_bias) <= 0.15
