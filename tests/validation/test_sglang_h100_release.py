"""SGLang H100 0.5.1.post1 constants (calibration_serving.yaml `sglang_h100_chunk`, docs/fidelity-history.md "SGLang H100
0.5.1.post1"): refitted for SGLang's 8,192-token chunk, the release's prefill is priced at a lower compute efficiency
and its decode without most of the per-sequence GPU time that had stood in for prefill stalls; its prefill all-reduces
go over NCCL's ring at NVLink4's full bus bandwidth (`sglang_h100_ring`, issue 14 sgh100q), with the compute efficiency
refitted beside it; other H100 SGLang releases keep the (GPU, engine) values. Its rows also play the overlap loop's
late first tokens of a prefill batch that another follows (`consecutive_prefill_launch_share`, issue 14 sgh100_26)."""

from __future__ import annotations

import pytest

from servesim.perf import build_perf_model
from servesim.validation.silicon import row_scenario

from tests.validation.silicon_rows import silicon_row

# Qwen3-32B BF16 on 2 H100s, 1k/128 at 16 users: a row shape of the release's campaign
QWEN = {"backend": "sglang", "backend_version": "0.5.1.post1", "model_path": "Qwen/Qwen3-32B", "system": "h100_sxm",
        "gemm_quant_mode": "", "tp_size": "2", "isl": "1024", "osl": "128", "concurrency": "16", "batch_size": "16"}


def _model(overrides=None, **changes):
    s = row_scenario(silicon_row(0, **{**QWEN, **changes}), overrides=overrides)
    return build_perf_model(s.model, s.gpu, s.tp, s.dtype, s.perf)


@pytest.mark.parametrize(("version", "eta_compute", "seq_gpu_s", "ring"), [
    ("0.5.1.post1", 0.65, 7.5e-06, 1.0),   # the release's entry
    ("0.5.8.post1", 0.84, 4.5e-05, 0.0),   # another H100 release: the (GPU, engine) entry (ring at ar_bw_eff)
])
def test_only_the_release_takes_the_refitted_constants(version, eta_compute, seq_gpu_s, ring):
    c = _model(backend_version=version).constants
    assert (c.eta_compute, c.seq_gpu_s, c.ar_ring_bw_eff) == (eta_compute, seq_gpu_s, ring)


def test_prefill_costlier_and_decode_cheaper_than_with_the_gpu_values():
    shipped, before = _model(), _model(overrides={"eta_compute": 0.84, "seq_gpu_s": 4.5e-05})
    # a prefill batch of SGLang's chunk on 80 GB GPUs: eight 1,024-token prompts, compute-bound
    prefill = [(1024, 0)] * 8
    assert shipped.step_time_s(prefill, []) > 1.03 * before.step_time_s(prefill, [])
    # 16 users decoding at about 1,100 tokens of context: (45 - 7.5) us x 16 = 0.6 ms less GPU time a step
    ctxs = [1100] * 16
    assert before.step_time_s([], ctxs) - shipped.step_time_s([], ctxs) == pytest.approx(16 * 3.75e-05, rel=0.05)


def test_prefill_all_reduce_at_the_rings_bandwidth_and_gemms_slower():
    # TP 8, one prefill batch of SGLang's chunk: its all-reduces (8,192 x 5,120 x 2 bytes each) run at the ring's
    # NVLink4 bandwidth instead of the one-shot's share of it, and its GEMMs at the refitted efficiency
    shipped = _model(tp_size="8")
    before = _model(tp_size="8", overrides={"eta_compute": 0.8, "ar_ring_bw_eff": 0.0})
    prefill = [(1024, 0)] * 8
    new, old = shipped.step_breakdown(prefill, []), before.step_breakdown(prefill, [])
    assert new.communication_s == pytest.approx(old.communication_s * before.constants.ar_bw_eff, rel=0.05)
    assert new.linear_s > 1.15 * old.linear_s  # (0.8 / 0.65 = 1.23 on the compute-bound part)


@pytest.mark.parametrize(("version", "share"), [("0.5.1.post1", 0.3), ("0.5.8.post1", 0.0)])
def test_only_the_release_hands_out_first_tokens_after_the_next_prefill_launch(version, share):
    # issue 14 sgh100_26: the overlap loop's first tokens of a prefill batch followed by another, at 0.3 of that
    # batch's GPU time (fitted for this release only; the other releases play their batch's end)
    scheduler = row_scenario(silicon_row(0, **{**QWEN, "backend_version": version})).scheduler
    assert getattr(scheduler, "consecutive_prefill_launch_share", 0.0) == share
