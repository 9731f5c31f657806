"""Wires a Scenario into components and runs the event loop (the only module that knows every stage)."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from typing import Callable

import numpy as np

from servesim.core.loop import PRIO_ARRIVAL, EventLoop
from servesim.errors import InputError
from servesim.metrics.recorder import Recorder, StepLog
from servesim.metrics.sections import SectionInput, compute_sections
from servesim.metrics.summary import RequestColumns, summarize, tokens_per_request
from servesim.metrics.timeseries import timeseries
from servesim.perf import build_perf_model
from servesim.replica.config import EngineConfig, serve_batch_defaults
from servesim.replica.engine import Engine
from servesim.replica.frontend import FrontEnd
from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.schedulers import get_scheduler
from servesim.scenario import Scenario
from servesim.workload import build_workload
from servesim.workload.request import Request, RequestState

Progress = Callable[[int, int | None, float], None]  # (requests done, expected total, simulated time)


@dataclass
class Result:
    """Everything a run produced: raw records plus the derived views."""

    scenario: Scenario
    engine_config: EngineConfig  # with every default resolved
    num_gpu_blocks: int
    requests: list[Request]
    steps: StepLog
    prefix_hits: tuple[int, int]  # (queried tokens, hit tokens)
    wall_time_s: float
    num_events: int
    num_fast_forwarded_steps: int
    num_skipped_rows: int = 0  # malformed trace rows skipped (workload.trace.skip_bad_rows)
    swap: dict | None = None  # KV swap totals of swap-based policies (None when nothing was swapped)

    @cached_property
    def columns(self) -> RequestColumns:
        """The requests as columns (computed once; None becomes NaN in float columns)."""
        reqs = self.requests

        def col(name: str, dtype) -> np.ndarray:
            return np.array(list(map(attrgetter(name), reqs)), dtype=dtype)

        return RequestColumns(
            id=col("id", np.int64), tenant=col("tenant", object), slo_class=col("slo_class", object),
            state=col("state", np.int64), arrival_s=col("arrival_s", float), prompt_len=col("prompt_len", np.int64),
            output_len=col("output_len", np.int64), num_output_tokens=col("num_output_tokens", np.int64),
            first_token_s=col("first_token_s", float), finish_s=col("finish_s", float),
            num_preemptions=col("num_preemptions", np.int64), ttft_slo_s=col("ttft_slo_s", float),
            tpot_slo_s=col("tpot_slo_s", float),
        )

    def summary(self) -> dict:
        slo = self.scenario.slo
        cols = self.columns
        out = summarize(cols, self.steps, [r.token_steps for r in self.requests],
                        ttft_slo_s=slo.ttft_s, tpot_slo_s=slo.tpot_s, prefix_hits=self.prefix_hits,
                        wall_time_s=self.wall_time_s)
        if self.num_skipped_rows:
            out["num_skipped_trace_rows"] = self.num_skipped_rows
        if self.swap:
            out["swap"] = self.swap
        out.update(compute_sections(SectionInput(self.requests, cols, self.steps.end_s,
                                                 self.scenario.model_dump(mode="json"))))
        return out

    def timeseries(self) -> dict[str, np.ndarray]:
        cols = self.columns
        return timeseries(self.steps, cols.arrival_s, cols.finish_s, self.scenario.output.timeseries_interval_s)


def resolve_engine_config(scenario: Scenario, perf) -> EngineConfig:
    """Fill the engine arguments left unset with vLLM's defaults for this GPU and model."""
    cfg = scenario.engine
    tokens, seqs = serve_batch_defaults(perf.gpu_name, perf.hbm_bytes)
    return cfg.model_copy(update={
        "max_num_batched_tokens": cfg.max_num_batched_tokens or tokens,
        "max_num_seqs": cfg.max_num_seqs or seqs,
        # the model's context length when the catalogue knows it (Llama-3.1: 128K)
        "max_model_len": cfg.max_model_len or getattr(perf, "max_model_len", None) or 131072,
    })


def simulate(scenario: Scenario, progress: Progress | None = None) -> Result:
    """Run one scenario to completion (or to `max_sim_time_s`) and check the invariants."""
    wall0 = time.perf_counter()
    root = np.random.SeedSequence(scenario.seed)
    workload_seed, policy_seed = root.spawn(2)
    perf = build_perf_model(scenario.model, scenario.gpu, scenario.tp, scenario.dtype, scenario.perf)
    config = resolve_engine_config(scenario, perf)
    num_gpu_blocks = perf.num_gpu_blocks(config.block_size, config.gpu_memory_utilization,
                                         config.max_num_batched_tokens)
    if num_gpu_blocks <= 0:
        raise InputError(f"{scenario.model} does not fit on {scenario.tp} x {scenario.gpu} with "
                         f"gpu_memory_utilization {config.gpu_memory_utilization}: no room for KV cache")
    num_cpu_blocks = int(config.swap_space_gb * 2**30 // (config.block_size * perf.kv_bytes_per_token))
    sched_cls = get_scheduler(scenario.scheduler.name)
    kv = sched_cls.make_kv_cache(num_gpu_blocks, config.block_size, config.enable_prefix_caching, num_cpu_blocks)
    scheduler = sched_cls(scenario.scheduler.params(), config, kv, perf)
    loop = EventLoop()
    recorder = Recorder()
    workload = build_workload(scenario.workload, workload_seed)
    expected = workload.expected_num_requests
    done = 0

    def on_done(req: Request, now_s: float) -> None:
        nonlocal done
        done += 1
        if progress and done % 2000 == 0:
            progress(done, expected, now_s)
        for follow in workload.on_request_done(req, now_s):
            loop.schedule(follow.arrival_s, arrive, follow, PRIO_ARRIVAL)

    until_s = scenario.max_sim_time_s or float("inf")

    def horizon_s() -> float:  # no stretch may run past the next event or the end of the run
        return min(loop.next_time_s(), until_s)

    engine = Engine(config, scheduler, kv, perf, loop, recorder, on_done,
                    horizon_s=horizon_s,
                    rng=np.random.default_rng(policy_seed),
                    defer_finishes=not getattr(workload, "closed_loop", True))
    stream = workload.arrivals()
    front = FrontEnd(scenario.frontend) if scenario.frontend.active else None

    def to_engine(now_s: float, req: Request) -> None:
        engine.add_request(req, now_s)

    def arrive(now_s: float, req: Request) -> None:
        if front is None:
            engine.add_request(req, now_s)
        else:  # the request keeps its client arrival time, so TTFT includes the front end
            loop.schedule(front.engine_arrival_s(now_s, req.prompt_len), to_engine, req, PRIO_ARRIVAL)

    def arrive_from_stream(now_s: float, req: Request) -> None:
        schedule_next()  # keep exactly one stream arrival pending, so the trace is never all in memory
        arrive(now_s, req)

    def schedule_next() -> None:
        req = next(stream, None)
        if req is not None:
            if req.arrival_s < loop.now_s:
                raise InputError(f"workload arrivals are not in time order: request {req.id} at "
                                 f"{req.arrival_s} s after one at {loop.now_s} s")
            loop.schedule(req.arrival_s, arrive_from_stream, req, PRIO_ARRIVAL)

    schedule_next()
    # The loop allocates many long-lived small objects (token runs, step lists) and creates no
    # garbage cycles while it runs, so the cyclic collector is paused; afterwards the survivors
    # go straight to the oldest generation (freeze + unfreeze) instead of being scanned as young
    # objects on the next allocation. Collection itself is left to the collector as usual.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        loop.run(until_s=until_s)
    finally:
        gc.freeze()
        gc.unfreeze()
        if gc_was_enabled:
            gc.enable()
    engine.drain(loop.now_s)
    if progress:
        progress(done, expected, loop.now_s)
    result = Result(scenario, config, num_gpu_blocks, recorder.requests, recorder.step_log(num_gpu_blocks),
                    (kv.num_queried_tokens, kv.num_hit_tokens), time.perf_counter() - wall0,
                    loop.num_events, engine.num_fast_forwarded_steps, getattr(workload, "skipped_rows", 0),
                    _swap_totals(engine))
    check_invariants(result, kv)
    return result


def _swap_totals(engine: Engine) -> dict | None:
    if not engine.num_swapped_blocks:
        return None
    return {"num_swapped_blocks": engine.num_swapped_blocks, "num_copies": engine.num_swap_copies,
            "transfer_s": engine.swap_transfer_s, "stall_s": engine.swap_stall_s}


def check_invariants(result: Result, kv: KVCacheManager) -> None:
    """Conservation and monotonicity, checked on every run (a failure is a simulator bug)."""
    kv.check_all_free()
    steps = result.steps
    if len(steps) and (np.any(np.diff(steps.end_s) < 0) or np.any(steps.end_s < steps.start_s)):
        raise AssertionError("time ran backwards in the step log")
    cols = result.columns
    open_ = np.flatnonzero(cols.state < int(RequestState.FINISHED))
    if len(open_):
        r = result.requests[open_[0]]
        raise AssertionError(f"request {r.id} ended in non-terminal state {r.state.name}")
    emitted = tokens_per_request([r.token_steps for r in result.requests])
    bad = np.flatnonzero((emitted != cols.num_output_tokens)
                         | ((cols.state == int(RequestState.FINISHED)) & (emitted != cols.output_len)))
    if len(bad):
        i = bad[0]
        raise AssertionError(f"request {cols.id[i]}: token counts do not add up ({emitted[i]} emitted, "
                             f"{cols.num_output_tokens[i]} counted, {cols.output_len[i]} expected)")
    if int(emitted.sum()) != int(steps.output_tokens.sum()):
        raise AssertionError("tokens emitted by requests differ from tokens produced by steps")
    if len(np.unique(cols.id)) != len(cols.id):
        raise AssertionError("a request id was seen twice")
