"""seq_gpu_s: GPU time per sequence in a step (off by default), kept by every fast path."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.errors import InputError
from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig


def _model(engine: str = "vllm", **overrides):
    return build_perf_model("llama-3.1-8b", "h100-sxm", 1, "bf16", PerfConfig(engine=engine, overrides=overrides))


def test_off_by_default_and_zero_changes_nothing_bit_for_bit():
    plain = _model()
    assert plain.constants.seq_gpu_s == 0.0
    zero = _model(seq_gpu_s=0.0)
    for prefills, decodes in (([], [1000] * 64), ([(2048, 0)], [500] * 7)):
        assert zero.step_time_s(prefills, decodes) == plain.step_time_s(prefills, decodes)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])  # additive CPU, and CPU overlapped (GPU-side term still counts)
def test_adds_its_time_per_sequence_to_the_gpu_side(engine):
    base = _model(engine, step_overhead_s=0.0, seq_overhead_s=0.0)
    per_seq = _model(engine, step_overhead_s=0.0, seq_overhead_s=0.0, seq_gpu_s=30e-6)
    for n in (1, 128, 256):
        diff = per_seq.step_time_s([], [1024] * n) - base.step_time_s([], [1024] * n)
        assert diff == pytest.approx(30e-6 * n, rel=1e-9)
    # A prefill counts as one sequence.
    diff = per_seq.step_time_s([(4096, 0)], [800] * 9) - base.step_time_s([(4096, 0)], [800] * 9)
    assert diff == pytest.approx(30e-6 * 10, rel=1e-9)


def test_fast_paths_stay_bit_identical_with_the_term_on():
    pm = _model(seq_gpu_s=25e-6)
    ctxs = np.array([900, 1200, 40, 3000] * 32)
    steps = pm.decode_step_times_s(ctxs, 5)
    for j in range(5):
        assert steps[j] == pm.step_time_s([], list(ctxs + j))
    fn = pm.decode_time_fn(len(ctxs))
    assert fn(int(ctxs.sum())) == pm.step_time_s([], list(ctxs))
    verify = pm.verify_step_times_s(8, 4, np.array([8 * 700]))
    assert verify[0] == pm.step_time_s([(4, 700)] * 8, [], 8)
    assert pm.step_breakdown([], list(ctxs)).total_s == pm.step_time_s([], list(ctxs))


def test_negative_values_are_refused():
    with pytest.raises(InputError, match="constant 'seq_gpu_s' must be"):
        _model(seq_gpu_s=-1e-6)
