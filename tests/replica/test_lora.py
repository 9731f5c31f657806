"""The adapter cache in the vllm scheduler, step by step: one load's exact timeline, the
max_loras limit on distinct adapters per batch, LRU eviction through the host-memory tier."""

from __future__ import annotations

import pytest

from servesim.replica.lora import LoRACache, adapter_bytes
from servesim.replica.config import EngineConfig
from tests.factories import ToyPerf, make_engine, make_request, serve

# 20 MB adapters: 10 ms from storage at 2 GB/s, 0.8 ms from host memory at 25 GB/s
LORA = dict(lora_size_mb=20.0)
STORAGE_S, CPU_S = 20e6 / 2e9, 20e6 / 25e9


def test_one_adapter_load_delays_admission_by_its_load_time():
    engine, sched, _, loop, done = make_engine(**LORA)
    a = make_request(0, 32, 3, lora="a")
    b = make_request(1, 32, 3, arrival=1.0, lora="a")  # later: the adapter is on the GPU
    serve(engine, loop, [a, b])
    prefill_s = 0.01 + 1e-4 * 32  # ToyPerf: one 32-token prompt chunk, empty context
    assert a.first_scheduled_s == pytest.approx(STORAGE_S)
    assert a.first_token_s == pytest.approx(STORAGE_S + prefill_s)
    assert b.first_scheduled_s == 1.0 and b.first_token_s == pytest.approx(1.0 + prefill_s)
    assert (a.extra["lora_hit"], b.extra["lora_hit"]) == (False, True)
    assert a.extra["lora_num_loads"] == 1 and "lora_num_loads" not in b.extra
    assert sched.lora.num_loads == 1 and sched.lora.load_time_s == pytest.approx(STORAGE_S)
    assert len(done) == 2


def test_base_model_requests_never_wait_for_adapters():
    engine, sched, _, loop, _ = make_engine(**LORA)
    a, base = make_request(0, 32, 3, lora="a"), make_request(1, 32, 3)
    serve(engine, loop, [a, base])
    assert base.first_scheduled_s == 0.0  # admitted while `a`'s adapter loads (a is skipped, not blocking)
    # the load completes during base's prefill step: `a` joins at the first step boundary after it
    assert a.first_scheduled_s == pytest.approx(0.01 + 1e-4 * 32) and a.first_scheduled_s > STORAGE_S


def test_max_loras_limits_the_distinct_adapters_in_a_batch():
    engine, sched, _, loop, done = make_engine(max_loras=1, **LORA)
    a1, b, a2 = make_request(0, 16, 10, lora="a"), make_request(1, 16, 10, lora="b"), make_request(2, 16, 10, lora="a")
    serve(engine, loop, [a1, b, a2])
    # `a` loads first; `b` finds the only slot taken and is skipped, `a2` joins `a1` behind it
    assert a1.first_scheduled_s == a2.first_scheduled_s == pytest.approx(STORAGE_S)
    last_a = max(a1.finish_s, a2.finish_s)
    # `b` waits until no running request pins `a`, then pays its own load
    assert b.first_scheduled_s == pytest.approx(last_a + STORAGE_S)
    assert sched.lora.num_evictions == 1 and list(sched.lora.gpu) == ["b"]
    assert len(done) == 3


def test_lru_eviction_and_host_memory_hits():
    engine, sched, _, loop, _ = make_engine(max_loras=2, max_cpu_loras=2, **LORA)
    names = ["a", "b", "a", "c", "b"]  # one at a time, each finished before the next arrives
    reqs = [make_request(i, 16, 2, arrival=float(i), lora=n) for i, n in enumerate(names)]
    serve(engine, loop, reqs)
    # c evicts b (a was used more recently); b comes back from host memory at PCIe speed,
    # evicting a (now the least recently used)
    assert [r.extra.get("lora_num_storage_loads", 0) for r in reqs] == [1, 1, 0, 1, 0]
    assert reqs[4].extra["lora_load_s"] == pytest.approx(CPU_S)
    assert reqs[4].first_scheduled_s == pytest.approx(4.0 + CPU_S)
    assert list(sched.lora.gpu) == ["c", "b"]
    assert sched.lora.num_loads == 4 and sched.lora.num_evictions == 2


def test_adapter_size_from_rank_and_model_dims():
    cfg = EngineConfig(max_lora_rank=8, lora_target_modules=4)
    # ToyPerf: 4 layers, no model terms -> hidden 4096
    assert adapter_bytes(cfg, ToyPerf()) == 2 * 8 * 4096 * 4 * 4 * 2
    cache = LoRACache(EngineConfig(max_loras=3), ToyPerf())
    assert cache.max_cpu_loras == 3  # vLLM: max_cpu_loras defaults to max_loras


def test_other_schedulers_reject_adapter_requests_with_a_reason():
    engine, _, _, loop, done = make_engine(scheduler="sarathi")
    req = make_request(0, 16, 2, lora="a")
    serve(engine, loop, [req])
    assert done == [req] and req.extra["reject_reason"] == "LoRA adapters are not served by the sarathi scheduler"


def test_max_cpu_loras_below_max_loras_is_refused():
    with pytest.raises(ValueError, match="max_cpu_loras"):
        EngineConfig(max_loras=4, max_cpu_loras=2)


def _admit_lora_acquiring_each(self, out, budget, now_s):
    """vllm's `_admit_lora` before the full-slots skip: `acquire` asked of every waiting request."""
    lora, running = self.lora, self.running
    self._head_blocked_by_kv = False
    blocked = True
    for req in list(self.waiting):
        if budget <= 0 or len(running) >= self.config.max_num_seqs:
            blocked = False
            break
        if req.lora is not None and not lora.acquire(req, now_s, (r.lora for r in running)):
            continue
        left = self.admit(req, budget, out)
        if left is None:
            self._head_blocked_by_kv = not req.kv_block_keys and self.first_chunk(req, 0, budget) > 0
            blocked = self._head_blocked_by_kv
            break
        budget = left
    self._lora_blocked = blocked


def test_a_queue_behind_full_adapter_slots_skips_acquire_with_the_same_results(monkeypatch):
    """64 adapters, 8 slots, an overloaded replica: once no slot can be had in a pass, the rest
    of the queue's adapters off the GPU are skipped without `acquire`; every request, step and
    the summary as when each is asked, with far fewer calls."""
    from servesim import load_scenario, simulate
    from servesim.replica.schedulers.vllm import VLLMScheduler

    sets = ["workload.trace=null", "workload.arrival.process=poisson", "workload.lengths.dataset=sharegpt",
            "workload.num_requests=400", "workload.arrival.rate_per_s=5",
            "workload.attributes.loras={count: 64, zipf_s: 1.0}"]
    calls = [0]
    acquire = LoRACache.acquire

    def counted(self, *args):
        calls[0] += 1
        return acquire(self, *args)

    def run():
        calls[0] = 0
        res = simulate(load_scenario(None, sets), keep_requests=True, keep_steps=True)
        summary = res.summary()
        for key in ("wall_time_s", "cpu_time_s"):
            summary.pop(key, None)
        steps = [(r.steps.end_s.tolist(), r.steps.num_waiting.tolist()) for r in res.replicas]
        rows = [(r.id, r.state, r.first_token_s, r.finish_s, r.extra.get("lora_num_loads")) for r in res.requests]
        return rows, steps, summary, calls[0]

    with monkeypatch.context() as m:
        m.setattr(LoRACache, "acquire", counted)
        new = run()
        m.setattr(VLLMScheduler, "_admit_lora", _admit_lora_acquiring_each)
        old = run()
    assert new[:3] == old[:3]
    assert new[2]["lora"]["num_loads"] > 20 and max(max(w) for _, w in new[1]) > 50  # loads, a long queue
    assert new[3] * 5 < old[3]
