"""eager_floor_layer_s and graphless_layer_s with PerfConfig.cudagraph_max_tokens: a step above the CUDA-graph
capture size runs without graphs and takes at least the launches of its layers (the floor: max, not a sum) or its
GPU time plus them (graphless_layer_s: a sum); each off unless the size is set too."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.perf import build_perf_model
from servesim.perf.config import PerfConfig

LAYERS = 32  # llama-3.1-8b
FLOOR = 1e-3  # 32 ms a step: above a small step's GPU time, below a long prompt's


def _model(capture: int = 0, **overrides):
    config = PerfConfig(engine="vllm", cudagraph_max_tokens=capture, overrides=overrides)
    return build_perf_model("llama-3.1-8b", "h100-sxm", 1, "bf16", config)


STEPS = (([], [1000] * 64), ([(700, 0)], [500] * 7), ([(8, 100)] * 4, []), ([(8192, 0)], []), ([(600, 0)], []))


def test_off_unless_both_the_size_and_the_constant_are_set():
    plain = _model()
    for model in (_model(512), _model(0, eager_floor_layer_s=FLOOR)):
        for prefills, decodes in STEPS:
            assert model.step_time_s(prefills, decodes) == plain.step_time_s(prefills, decodes)
        assert model.decode_step_times_s(np.array([900] * 600), 3).tolist() == \
            plain.decode_step_times_s(np.array([900] * 600), 3).tolist()
    assert _model(0, eager_floor_layer_s=FLOOR).chunk_time_fn(4, 1024) is not None  # fast paths kept when off


def test_steps_above_the_capture_size_take_at_least_the_launches():
    plain, eager = _model(512), _model(512, eager_floor_layer_s=FLOOR)
    cpu = plain.step_time_s([(600, 0)], []) - plain.step_breakdown([(600, 0)], []).gpu_s
    # 600 tokens > 512: GPU work below the floor, so the step is the floor plus the engine's CPU time
    assert plain.step_breakdown([(600, 0)], []).gpu_s < LAYERS * FLOOR
    assert eager.step_time_s([(600, 0)], []) == pytest.approx(LAYERS * FLOOR + cpu, rel=1e-12)
    assert eager.step_breakdown([(600, 0)], []).gpu_s == pytest.approx(LAYERS * FLOOR, rel=1e-12)
    # a long prompt's GPU work hides the launches: unchanged (not GPU + launches)
    assert plain.step_breakdown([(8192, 0)], []).gpu_s > LAYERS * FLOOR
    assert eager.step_time_s([(8192, 0)], []) == plain.step_time_s([(8192, 0)], [])
    # at or below the capture size the step replays a graph: unchanged, prompt or decode
    for prefills, decodes in (([(500, 0)], [100] * 12), ([], [1000] * 64), ([(8, 100)] * 4, [])):
        assert eager.step_time_s(prefills, decodes) == plain.step_time_s(prefills, decodes)


def test_decode_batches_above_it_pay_it_too_and_fast_paths_defer_to_step_time():
    eager = _model(16, eager_floor_layer_s=FLOOR)
    ctxs = np.array([900] * 20)  # 20 sequences > 16
    steps = eager.decode_step_times_s(ctxs, 4)
    assert steps.tolist() == [eager.step_time_s([], [900 + j] * 20) for j in range(4)]
    assert steps[0] > _model(16).decode_step_times_s(ctxs, 1)[0]
    assert eager.decode_time_fn(8) is None and eager.decode_affine(8) is None
    assert eager.chunk_time_fn(4, 1024) is None and eager.prompt_step_s(4, 1024, 4000) is None
    assert eager.verify_step_times_s(8, 4, np.array([5600])) is None and eager.verify_time_fn(8, 4) is None
    assert eager.chunk_verify_time_fn(8, 4, 512) is None


ADD = 5e-4  # 16 ms a step


def test_graphless_time_is_off_unless_the_size_is_set_and_adds_above_it():
    plain = _model()
    model = _model(0, graphless_layer_s=ADD)
    for prefills, decodes in STEPS:
        assert model.step_time_s(prefills, decodes) == plain.step_time_s(prefills, decodes)
    assert model.chunk_time_fn(4, 1024) is not None  # fast paths kept when off
    graphed, eager = _model(512), _model(512, graphless_layer_s=ADD)
    # above the size: GPU + launches, for a short prompt and for a long one alike (not hidden by the GPU work)
    for prefills, decodes in (([(600, 0)], []), ([(8192, 0)], []), ([(700, 0)], [500] * 7)):
        assert eager.step_breakdown(prefills, decodes).gpu_s == pytest.approx(
            graphed.step_breakdown(prefills, decodes).gpu_s + LAYERS * ADD, rel=1e-12)
        assert eager.step_time_s(prefills, decodes) > graphed.step_time_s(prefills, decodes)
    # at or below it: unchanged, bit for bit
    for prefills, decodes in (([(500, 0)], [100] * 12), ([], [1000] * 64), ([(8, 100)] * 4, [])):
        assert eager.step_time_s(prefills, decodes) == graphed.step_time_s(prefills, decodes)


def test_with_a_floor_too_the_step_takes_the_larger_of_the_two():
    graphed, both = _model(512), _model(512, graphless_layer_s=ADD, eager_floor_layer_s=FLOOR)
    small, long = graphed.step_breakdown([(600, 0)], []).gpu_s, graphed.step_breakdown([(8192, 0)], []).gpu_s
    assert small + LAYERS * ADD < LAYERS * FLOOR < long  # the small step hits the floor, the long one adds
    assert both.step_breakdown([(600, 0)], []).gpu_s == pytest.approx(LAYERS * FLOOR, rel=1e-12)
    assert both.step_breakdown([(8192, 0)], []).gpu_s == pytest.approx(long + LAYERS * ADD, rel=1e-12)


def test_graphless_decodes_above_the_size_match_step_time_and_fast_paths_defer():
    eager = _model(16, graphless_layer_s=ADD)
    ctxs = np.array([900] * 20)
    steps = eager.decode_step_times_s(ctxs, 4)
    assert steps.tolist() == [eager.step_time_s([], [900 + j] * 20) for j in range(4)]
    assert steps[0] == pytest.approx(_model(16).decode_step_times_s(ctxs, 1)[0] + LAYERS * ADD, rel=1e-12)
    assert eager.decode_time_fn(8) is None and eager.chunk_time_fn(4, 1024) is None
    assert eager.prompt_step_s(4, 1024, 4000) is None and eager.chunk_verify_time_fn(8, 4, 512) is None
