"""`Result`: what a run produced, and its assembly from the finished cluster.

Separate from simulation.py, which wires the components and runs the loop: this module owns the
result's shape (raw records plus the summary and time-series views derived from them) and how
the replicas' recorders, request table and counters become one result when the loop is over.
The output writers, reports and invariants read a `Result` without needing the run loop.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from servesim.cluster.build import PoolSpec
from servesim.cluster.cluster import Cluster
from servesim.cluster.setup import disaggregation_summary
from servesim.core.loop import EventLoop
from servesim.metrics.cluster import ReplicaRecord, cluster_section
from servesim.metrics.elastic import elastic_section, elastic_timeseries, run_end_s
from servesim.metrics.notices import run_warnings
from servesim.metrics.recorder import StepLog, concat_step_logs
from servesim.metrics.request_table import RequestTable
from servesim.metrics.sections import SectionInput, compute_sections
from servesim.metrics.step_ends import StepEnds
from servesim.metrics.summary import RequestColumns, summarize
from servesim.metrics.timeseries import series_blocks
from servesim.replica.config import EngineConfig
from servesim.replica.engine import Engine
from servesim.scenario import Scenario
from servesim.sums import left_sum
from servesim.workload.request import Request

@dataclass
class Result:
    """Everything a run produced: raw records plus the derived views."""

    scenario: Scenario
    engine_config: EngineConfig  # with every default resolved
    num_gpu_blocks: int
    table: RequestTable  # every request as a row of typed columns, in arrival order
    # The replicas' step logs one after another (requests' token runs index it), or None when
    # the logs were reduced as they came (simulate(keep_steps=False), the default: see `ends`).
    steps: StepLog | None
    ends: StepEnds  # end time of every step, in the same order (in memory or in files of `spill`)
    prefix_hits: tuple[int, int]  # (queried tokens, hit tokens)
    wall_time_s: float
    num_events: int
    num_fast_forwarded_steps: int
    num_skipped_rows: int = 0  # malformed trace rows skipped (workload.trace.skip_bad_rows)
    swap: dict | None = None  # KV swap totals of swap-based policies (None when nothing was swapped)
    # Per replica: its own step log (if kept), its reduced log and counters.
    replicas: list[ReplicaRecord] | None = None
    cluster: dict | None = None  # router name, re-routed requests, reject reasons (more than one replica)
    scale_events: list | None = None  # every autoscaler decision (ScaleEvent), when the scenario scales
    elastic: dict | None = None  # cold starts, prices and power constants for the `elastic` summary section
    disaggregation: dict | None = None  # KV transfers, links, TTFT split (pools with prefill/decode roles)
    migration: dict | None = None  # live migrations, stages and downtime (migration.enabled)
    kv_store: dict | None = None  # KV store loads and tiers (kv_store.enabled)
    kept_requests: list[Request] | None = None  # the Request objects, when simulate(keep_requests=True)
    # each replica's first step in the concatenated log, while the kept requests' token runs
    # still index their own replica's (`requests` rewrites them once, when first read: a
    # run that never reads them skips a pass over every run of every request)
    token_offsets: list[int] | None = None
    # the summary's `itl_s` as the step log's helper process reduced it during the run (it may
    # still be finishing it: called when the summary needs it; None when it did not)
    itl: Callable[[], dict | None] | None = None
    # step ends, request rows and summary scratch files, deleted with the result
    spill: tempfile.TemporaryDirectory | None = None
    # (pid, path) of the process writing the requests file beside the summary (output.prepare_requests)
    prepared_requests: tuple[int, Path] | None = None

    @property
    def requests(self) -> list[Request]:
        """The run's Request objects in arrival order (only kept with `keep_requests=True`)."""
        if self.kept_requests is None:
            raise ValueError("this run kept its requests as table rows only (result.table); "
                             "call simulate(scenario, keep_requests=True) to keep the Request objects")
        if self.token_offsets is not None:
            _globalise_token_steps(self.kept_requests, self.token_offsets)
            self.token_offsets = None
        return self.kept_requests

    @property
    def columns(self) -> RequestColumns:
        """The requests as summary columns (None is NaN in float columns), every row at once.
        Computed once when the rows are in memory; rebuilt on each use when they were spilled,
        so the pages of the mapped files and the decoded labels are let go once a pass is over."""
        cached = self.__dict__.get("_columns")
        if cached is not None:
            return cached
        cols = self.table.request_columns()
        if not self.table.spilled:
            self.__dict__["_columns"] = cols
        return cols

    # A pass over the requests reads them a chunk of rows at a time (`RequestTable.chunks`: one
    # chunk of every row when they are in memory), so each pass is written once for both.
    def column_chunks(self):
        """A function giving the requests' summary columns a chunk of rows at a time."""
        t = self.table
        return lambda: (t.request_columns(rows) for rows in t.chunks())

    def run_chunks(self):
        """A function giving the token runs (`TokenRuns`) a chunk of rows at a time."""
        t = self.table
        return lambda: (t.token_runs_of(rows) for rows in t.chunks())

    def summary(self) -> dict:
        slo = self.scenario.slo
        chunks = self.column_chunks()
        out = summarize(chunks, self.ends, self.run_chunks(),
                        ttft_slo_s=slo.ttft_s, tpot_slo_s=slo.tpot_s, prefix_hits=self.prefix_hits,
                        wall_time_s=self.wall_time_s, folder=self.spill and self.spill.name,
                        itl=self._itl())
        if self.num_skipped_rows:
            out["num_skipped_trace_rows"] = self.num_skipped_rows
        if self.swap:
            out["swap"] = self.swap
        ends = self.ends if self.steps is None else self.steps.end_s
        out.update(compute_sections(SectionInput(self.table, ends, self.scenario.model_dump(mode="json"),
                                                  self.spill and self.spill.name)))
        if self.cluster is not None:
            t = self.table
            pairs = lambda: ((t.cols["replica"][rows], t.request_columns(rows)) for rows in t.chunks())  # noqa: E731
            out["cluster"] = cluster_section(self.replicas, self.cluster, pairs, out["simulated_time_s"])
        if self.elastic is not None:
            out["elastic"] = elastic_section(self.replicas, self.elastic, self.columns, self.scale_events,
                                             self.scenario.slo)
        warnings = run_warnings(chunks, self.table.extras, is_trace=self.scenario.workload.trace is not None)
        if warnings:
            out["warnings"] = warnings
        if self.disaggregation is not None:
            out["disaggregation"] = self.disaggregation
        if self.migration is not None:
            out["migration"] = self.migration
        if self.kv_store is not None:
            out["kv_store"] = self.kv_store
        return out

    def _itl(self) -> dict | None:
        """A copy of the helper's `itl_s` (the summary may be asked again), or None."""
        itl = self.itl and self.itl()
        return itl and dict(itl)

    def timeseries(self) -> dict[str, np.ndarray]:
        """The whole time series at once (`timeseries_blocks`, joined)."""
        blocks = list(self.timeseries_blocks())
        return {name: np.concatenate([b[name] for b in blocks]) for name in blocks[0]}

    def timeseries_blocks(self):
        """The time series a block of rows at a time (columns by name), as timeseries.csv is
        written: what is held is a block, whatever the simulated span."""
        t = self.table
        times = lambda: ((t.cols["arrival_s"][rows], t.cols["finish_s"][rows]) for rows in t.chunks())  # noqa: E731
        interval_s = self.scenario.output.timeseries_interval_s
        end_s = None if self.elastic is None else run_end_s(self.replicas, self.columns)
        for ts, next_s in series_blocks([r.stats for r in self.replicas], times, interval_s,
                                        self.spill and self.spill.name):
            if self.elastic is not None:
                ts.update(elastic_timeseries(self.replicas, self.elastic, ts["time_s"], ts["interval_s"], end_s,
                                             next_s))
            yield ts

def assemble_result(scenario: Scenario, pools: list[PoolSpec], cluster: Cluster, table: RequestTable, loop: EventLoop,
            skipped: int, wall_s: float, spill: tempfile.TemporaryDirectory | None, keep_steps: bool,
            keep_times: bool = False) -> Result:
    reps = cluster.replicas
    records = []
    for r in reps:
        rec, blocks = r.engine.recorder, r.engine.kv.num_gpu_blocks
        log = rec.step_log(blocks) if keep_steps else rec.step_times() if keep_times else None
        records.append(ReplicaRecord(r.index, r.pool, blocks, log, rec.reducer,
                                     r.prefix_hits, r.num_dispatched, r.num_crashes, r.down_s))
    if not keep_steps:
        steps = None
        ends = reduced_ends([rec.stats for rec in records])
    elif len(reps) == 1:
        steps = records[0].steps
    else:
        steps = concat_step_logs([rec.steps for rec in records])[0]
    if keep_steps:
        ends = StepEnds([rec.steps.end_s for rec in records])
    hits = tuple(sum(h) for h in zip(*(rec.prefix_hits for rec in records)))
    many = (len(reps) > 1 or bool(scenario.pools) or bool(scenario.faults.crashes)
            or scenario.autoscaler is not None or scenario.power is not None)
    info = {"router": scenario.router.name, "num_rerouted": cluster.num_rerouted,
            "reject_reasons": dict(cluster.reject_reasons)} if many else None
    return Result(scenario, pools[0].config, pools[0].num_gpu_blocks, table, steps, ends, hits, wall_s,
                  loop.num_events, sum(r.engine.num_fast_forwarded_steps for r in reps), skipped,
                  _swap_totals([r.engine for r in reps]), records, info,
                  disaggregation=disaggregation_summary(cluster, records), kept_requests=table.kept, spill=spill,
                  token_offsets=_step_offsets(reps) if len(reps) > 1 and table.kept is not None else None)


def close_table(table: RequestTable, cluster: Cluster) -> None:
    """End of run: the request table's rows in arrival order, their token runs indexing the
    replicas' step logs one after another (`assemble_result`'s `ends` and `steps`). Before
    `assemble_result`, from the recorders' step counts: the run's end calls it while the step
    log's helper process reduces its last buffers (simulation.py)."""
    reps = cluster.replicas
    table.close(_step_offsets(reps) if len(reps) > 1 else None)


def _step_offsets(replicas: list) -> list[int]:
    """Each replica's first step in the replicas' step logs one after another."""
    return np.cumsum([0] + [r.engine.recorder.num_steps for r in replicas[:-1]]).tolist()


def reduced_ends(reducers: list) -> StepEnds:
    """The step ends of replicas whose logs were reduced as they came (`StepReducer`s, in
    replica order: their step-end files one after another)."""
    return StepEnds([r.held_ends if r.held_ends is not None else (str(r.ends_path), r.num_steps) for r in reducers])


def _globalise_token_steps(requests: list[Request], offsets: list[int]) -> None:
    """Rewrite token runs from per-replica step indices to indices into the concatenated log."""
    for req in requests:
        runs = req.token_steps
        if not runs:
            continue
        if not req.moves:  # (served by one replica throughout, nearly every request: all its runs move by one offset)
            off = offsets[req.replica]
            if off:
                runs[:] = map(off.__add__, runs)  # (in place, in C: an overloaded run's requests hold many runs)
            continue
        marks = req.moves
        bounds = [m[0] for m in marks[1:]] + [len(runs)]
        for (start, rep), stop in zip(marks, bounds):
            off = offsets[rep]
            if off:
                runs[start:stop] = map(off.__add__, runs[start:stop])


def _swap_totals(engines: list[Engine]) -> dict | None:
    blocks = sum(e.num_swapped_blocks for e in engines)
    if not blocks:
        return None
    return {"num_swapped_blocks": blocks, "num_copies": sum(e.num_swap_copies for e in engines),
            "transfer_s": left_sum(e.swap_transfer_s for e in engines),
            "stall_s": left_sum(e.swap_stall_s for e in engines)}
