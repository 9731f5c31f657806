"""Builders for requests, a toy cost model and a replica, for step-by-step tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from servesim import load_scenario, simulate
from servesim.core.loop import PRIO_ARRIVAL, EventLoop
from servesim.metrics.recorder import Recorder
from servesim.replica.config import EngineConfig
from servesim.replica.engine import Engine
from servesim.replica.schedulers import get_scheduler
from servesim.workload.request import Request


def make_request(id: int, prompt: int, output: int, arrival: float = 0.0, **kw) -> Request:
    return Request(id=id, arrival_s=arrival, prompt_len=prompt, output_len=output, **kw)


class ToyPerf:
    """Step time = 10 ms + 0.1 ms per new token + 1 us per context token (exactly linear).

    Swaps: 4 layers, 1 us of PCIe time per token moved.
    """

    num_layers = 4
    kv_bytes_per_token = 1 << 17

    def swap_time_s(self, num_tokens: int) -> float:
        return 1e-6 * num_tokens

    def step_time_s(self, prefills, decode_ctxs, num_verify: int = 0) -> float:  # (no prompt-only term)
        tokens = sum(n for n, _ in prefills) + len(decode_ctxs)
        ctx = sum(c for _, c in prefills) + sum(decode_ctxs)
        return 0.01 + 1e-4 * tokens + 1e-6 * ctx

    def decode_step_times_s(self, ctxs: np.ndarray, k: int) -> np.ndarray:
        n = len(ctxs)
        sums = int(ctxs.sum()) + n * np.arange(k)
        return 0.01 + 1e-4 * n + 1e-6 * sums

    def decode_time_fn(self, n: int):
        base = 0.01 + 1e-4 * n
        return lambda ctx_sum: base + 1e-6 * ctx_sum


class VectorOnlyToyPerf(ToyPerf):
    """ToyPerf without the scalar decode form (like a sliding-window model): the engine must
    fast-forward with `decode_step_times_s`."""

    def decode_time_fn(self, n: int):
        return None


def make_engine(num_blocks: int = 100, scheduler: str = "vllm", block_size: int = 16, perf=None,
                params: dict | None = None, num_cpu_blocks: int | None = None, rng=None, defer_finishes: bool = False,
                **engine_kw):
    cfg = dict(max_num_batched_tokens=64, max_num_seqs=8, max_model_len=4096)
    cfg.update(engine_kw)
    config = EngineConfig(block_size=block_size, **cfg)
    cls = get_scheduler(scheduler)
    kv = cls.make_kv_cache(num_blocks, block_size, config.enable_prefix_caching,
                           num_blocks if num_cpu_blocks is None else num_cpu_blocks)
    perf = perf or ToyPerf()
    sched = cls(cls.Params(**(params or {})), config, kv, perf)
    loop = EventLoop()
    done: list[Request] = []
    engine = Engine(config, sched, kv, perf, loop, Recorder(), lambda r, t: done.append(r),
                    rng=rng, defer_finishes=defer_finishes)
    return engine, sched, kv, loop, done


def applied_steps(monkeypatch, stretch_class, when=None) -> list[int]:
    """Patch `stretch_class.apply` to record the step count `k` of every stretch of that class
    applied (settled by its end, a cut or a crash), only those for which `when(stretch)` holds
    if given: how a test shows that a fast-forward path really ran."""
    applied: list[int] = []
    apply = stretch_class.apply

    def counted(self, engine):
        if when is None or when(self):
            applied.append(self.k)
        return apply(self, engine)

    monkeypatch.setattr(stretch_class, "apply", counted)
    return applied


def serve(engine: Engine, loop: EventLoop, requests) -> None:
    """Queue each request's arrival on the loop and run it to the end."""
    for r in requests:
        loop.schedule(r.arrival_s, lambda t, req: engine.add_request(req, t), r, PRIO_ARRIVAL)
    loop.run()


def serve_until_crash(engine: Engine, loop: EventLoop, requests, crash_s: float) -> list[Request]:
    """Queue each request's arrival and a crash of the engine at `crash_s`; run to the crash.
    Returns the requests the crash took off the engine."""
    for r in requests:
        loop.schedule(r.arrival_s, lambda t, req: engine.add_request(req, t), r, PRIO_ARRIVAL)
    lost: list[Request] = []
    loop.schedule(crash_s, lambda t, _: lost.extend(engine.crash(t)), None, PRIO_ARRIVAL)
    loop.run(until_s=crash_s)
    return lost


def run_engine(reqs, fast_forward: bool, num_blocks: int, scheduler: str, params: dict, max_num_seqs: int = 16):
    """One engine (token budget 256) serving `reqs` to the end, all KV blocks returned."""
    engine, _, kv, loop, _ = make_engine(num_blocks=num_blocks, max_num_batched_tokens=256, max_num_seqs=max_num_seqs,
                                         fast_forward=fast_forward, scheduler=scheduler, params=params)
    serve(engine, loop, reqs)
    engine.drain(loop.now_s)
    kv.check_all_free()
    return engine


def simulate_example(example: str, sets: list[str], fast_forward: bool = True):
    """`examples/<example>` with `sets`, fast-forwarded or stepped: the result (its step logs kept)
    and its summary less the wall time (the one field that differs between equal runs)."""
    path = Path(__file__).resolve().parents[1] / "examples" / example
    result = simulate(load_scenario(str(path), [*sets, f"engine.fast_forward={str(fast_forward).lower()}"]),
                      keep_steps=True)
    summary = result.summary()
    summary.pop("wall_time_s")
    return result, summary


STEP_LOG_COLUMNS = ("start_s", "end_s", "prefill_tokens", "output_tokens", "num_running", "num_waiting",
                    "kv_used_blocks")
REQUEST_OUTCOME = ("state", "first_token_s", "finish_s", "token_steps", "num_preemptions")


def assert_same_run(fast: Engine, slow: Engine, fast_reqs, slow_reqs, num_blocks: int | None = None,
                    fields: tuple[str, ...] = REQUEST_OUTCOME) -> None:
    """A fast-forwarded engine run equals one stepped one by one: as many steps, the same
    `fields` of every request, the same swap time and, given `num_blocks`, the same step log."""
    assert slow.num_fast_forwarded_steps == 0
    assert fast.num_steps == slow.num_steps
    for x, y in zip(fast_reqs, slow_reqs, strict=True):
        assert [getattr(x, f) for f in fields] == [getattr(y, f) for f in fields], (x.id, fields)
    assert fast.swap_transfer_s == slow.swap_transfer_s
    if num_blocks is not None:
        la, lb = fast.recorder.step_log(num_blocks), slow.recorder.step_log(num_blocks)
        for col in STEP_LOG_COLUMNS:
            assert np.array_equal(getattr(la, col), getattr(lb, col)), col


class CountingDict(dict):
    """A prefix index counting its `get` calls, the lookups of run keys (`kv._prefix._index = CountingDict()`)."""

    gets = 0

    def get(self, key, default=None):
        CountingDict.gets += 1
        return super().get(key, default)
