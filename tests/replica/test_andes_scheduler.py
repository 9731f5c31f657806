"""Andes: the QoE metric, the value/weight/slack model, and QoE-aware preemption."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.metrics.sections import SectionInput
from servesim.metrics.sections.qoe import qoe, section
from servesim.workload.request import RequestState
from tests.factories import make_engine, make_request, serve
from tests.replica.test_vllm_v0_scheduler import run_traced


def test_qoe_is_one_on_time_and_drops_with_delay():
    on_time = 1.0 + 0.2 * np.arange(10)  # TTFT 1 s, then 5 tokens/s
    assert qoe(on_time, 1.0, 5.0) == 1.0
    assert qoe(on_time - 0.5, 1.0, 5.0) == 1.0  # early tokens wait in the client buffer: no gain
    # everything 1 s late: shown area sum(T - show) = 9*10/2 * 0.2 = 9, expected area 9 + 10 * 1
    assert qoe(on_time + 1.0, 1.0, 5.0) == pytest.approx(9 / 19)
    # a 1 s stall before the last token: only that token is late (18 of 19 area units shown)
    stalled = on_time.copy()
    stalled[-1] += 1.0
    assert qoe(stalled, 1.0, 5.0) == pytest.approx(18 / 19)
    assert qoe(np.array([0.5]), 1.0, 5.0) == 1.0 and qoe(np.array([1.5]), 1.0, 5.0) == 0.0
    assert qoe(np.empty(0), 1.0, 5.0) == 0.0


def test_value_weight_and_slack():
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="andes")
    r = make_request(0, 160, 100)
    r.num_output_tokens = 50
    sched._last_token_s[0] = 5.0
    # now 5 s after arrival: expected 1 + 50 * 0.2 = 11 s for token 50 -> 6 s of slack
    assert sched.slack_s(r, 5.0) == pytest.approx(6.0)
    assert sched.weight(r) == round((160 + 50 + 1) / 16 + 0.5)
    # ahead of its timeline and served fast enough: Q_serve = 1; exp_len = (5 + 10) / 0.2 = 75
    q_wait = 1 - ((75 - 50) / 75) ** 2
    assert sched.value(r, 5.0, running=False) == pytest.approx(1 - q_wait)
    assert sched.value(r, 5.0, running=True) == pytest.approx(1.5 * (1 - q_wait))
    fresh = make_request(1, 100, 10, arrival=5.0)  # waiting, no token yet, horizon past its TTFT
    assert sched.value(fresh, 5.0, running=False) == pytest.approx(1.0)
    fresh.extra["qoe_ttft_s"] = 20.0  # its own target: it can wait the whole horizon
    assert sched.value(fresh, 5.0, running=False) == pytest.approx(0.0)


def test_request_ahead_of_its_timeline_yields_to_a_new_one():
    ttft = {}
    for name in ("andes", "vllm"):
        engine, sched, kv, loop, done = make_engine(num_blocks=20, scheduler=name, fast_forward=False)
        ahead, new = make_request(0, 160, 150), make_request(1, 176, 20, arrival=1.0)
        trace = run_traced(engine, loop, [ahead, new])
        assert ahead.state == new.state == RequestState.FINISHED
        ttft[name] = new.first_token_s - new.arrival_s
        if name == "andes":
            # the request ahead of its timeline was preempted (it waits for its recompute: with
            # hits on its own blocks it needs them all at once, so it is not re-admitted early)
            assert any(0 in t[2] for t in trace) and ahead.num_cached_tokens_total > 0
            assert engine.swap_stall_s > 0  # synchronous vLLM v0 copies
        else:
            assert ahead.num_preemptions == 0  # vLLM v1 preempts the newcomer (last admitted) instead
    assert ttft["andes"] < 0.2 < 0.5 < ttft["vllm"]


def bursty_workload(seed: int = 1, n: int = 200, rate: float = 8.0):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1 / rate, n))
    return [make_request(i, int(rng.integers(50, 400)), int(rng.integers(20, 300)), float(t[i])) for i in range(n)]


def mean_qoe(name: str, num_blocks: int) -> float:
    reqs = bursty_workload()
    engine, sched, kv, loop, done = make_engine(num_blocks=num_blocks, scheduler=name, max_num_batched_tokens=512,
                                                max_num_seqs=64)
    serve(engine, loop, reqs)
    kv.check_all_free()
    log = engine.recorder.step_log(num_blocks)
    data = SectionInput(reqs, log.end_s, {"scheduler": {"name": "andes"}})
    return section(data)["mean"]


@pytest.mark.parametrize("num_blocks", [150, 300])
def test_andes_raises_average_qoe_under_memory_pressure(num_blocks):
    andes, vllm = mean_qoe("andes", num_blocks), mean_qoe("vllm", num_blocks)
    assert andes > vllm + 0.15


def test_qoe_section_only_for_andes_or_tagged_requests():
    r = make_request(0, 10, 2)
    r.state = RequestState.FINISHED
    r.token_steps = [0, 1]
    steps = np.array([0.5, 0.7])
    assert section(SectionInput([r], steps, {"scheduler": {"name": "vllm"}})) is None
    r.extra["qoe_tds"] = 5.0
    out = section(SectionInput([r], steps, {"scheduler": {"name": "vllm"}}))
    assert out["mean"] == 1.0 and out["num_requests"] == 1 and out["tds_exp"] == 5.0


def test_batch_densities_and_slacks_are_bit_identical_to_the_per_request_model():
    """The hot path values many requests in one loop; it must give exactly value / weight and
    slack_s (the decisions compare these floats), for every branch of the value function."""
    engine, sched, kv, loop, done = make_engine(num_blocks=100, scheduler="andes", params={"token_latency_s": 0.1})
    rng = np.random.default_rng(3)
    reqs = []
    for i in range(300):
        extra = {"qoe_ttft_s": float(rng.uniform(0.2, 3)), "qoe_tds": float(rng.uniform(2, 20))} if i % 3 == 0 else {}
        r = make_request(i, int(rng.integers(1, 3000)), 500, arrival=float(rng.uniform(0, 20)), extra=extra)
        r.num_output_tokens = int(rng.integers(0, 200)) if i % 4 else 0
        if i % 5:
            sched._last_token_s[i] = r.arrival_s + float(rng.uniform(0, 30))
        reqs.append(r)
    for now_s in (0.5, 21.0, 60.0):
        for running in (False, True):
            assert sched.densities(reqs, now_s, running) == [sched.value(r, now_s, running) / sched.weight(r)
                                                             for r in reqs]
        assert sched.slacks_s(reqs, now_s) == [sched.slack_s(r, now_s) for r in reqs]
    values = {sched.value(r, 21.0, False) for r in reqs}
    assert len(values) > 100 and 0.0 in values  # both q_serve branches and both q_wait branches ran
