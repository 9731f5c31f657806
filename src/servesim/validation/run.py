"""Simulate measured rows end to end and tabulate the error of TTFT and TPOT per group.

The client is played as the benchmark clients measure: TTFT = first token - client send time
(so it includes the front end), TPOT = (E2E - TTFT) / (output tokens - 1), each a mean over the
requests after the warm-up ones. Errors are relative, simulated / measured - 1.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Iterable

from servesim.errors import InputError
from servesim.planner.executors import LocalExecutor
from servesim.simulation import simulate
from servesim.validation.fit import Errors
from servesim.validation.silicon import ClientOptions, SiliconRow, inexpressible_reason, row_request_counts, row_scenario
from servesim.workload.request import RequestState


@dataclass(frozen=True)
class RowResult:
    row: SiliconRow
    ttft_s: float  # simulated client mean
    tpot_s: float
    num_requests: int  # measured (non-warm-up) finished requests

    @property
    def ttft_error(self) -> float:
        return self.ttft_s / self.row.ttft_s - 1.0

    @property
    def tpot_error(self) -> float:
        return self.tpot_s / self.row.tpot_s - 1.0


def client_metrics(requests: Iterable, measured_end: int | None = None) -> tuple[float, float, int]:
    """(mean TTFT s, mean TPOT s, count) over finished, non-warm-up requests, as a client computes them;
    measured_end: leave out the requests from this id on (a closed loop's ids count up as it sends:
    the unmeasured trailing round, validation/client.py)."""
    ttfts, tpots = [], []
    for r in requests:
        if r.state != RequestState.FINISHED or r.extra.get("warmup") or (measured_end is not None and r.id >= measured_end):
            continue
        ttft = r.first_token_s - r.arrival_s
        ttfts.append(ttft)
        if r.num_output_tokens > 1:
            tpots.append((r.finish_s - r.first_token_s) / (r.num_output_tokens - 1))
    if not ttfts:
        return float("nan"), float("nan"), 0
    return statistics.fmean(ttfts), statistics.fmean(tpots) if tpots else float("nan"), len(ttfts)


def simulate_row(row: SiliconRow, options: ClientOptions = ClientOptions(), **scenario_args) -> RowResult:
    """Play one expressible row; InputError when the deployment cannot run (e.g. does not fit).

    scenario_args go to row_scenario (perf overrides, front-end constants, calibration)."""
    result = simulate(row_scenario(row, options, **scenario_args))
    ttft, tpot, n = client_metrics(result.requests, row_request_counts(row, options).measured_end)
    if n == 0:
        raise InputError(f"row {row.id}: no request finished (all rejected: prompt + output too long for the KV cache?)")
    return RowResult(row, ttft, tpot, n)


def row_errors(rows: Iterable[SiliconRow], options: ClientOptions,
               args_of: Callable[[SiliconRow], dict] | None = None, **scenario_args) -> Errors:
    """TTFT and TPOT errors of `rows`, each played with `scenario_args` plus what `args_of(row)`
    gives for that row (the objective of the fits: validation/calibrate.py, versions.py, ...)."""
    ttft, tpot = [], []
    for row in rows:
        r = simulate_row(row, options, **scenario_args, **(args_of(row) if args_of else {}))
        ttft.append(r.ttft_error)
        tpot.append(r.tpot_error)
    return Errors(tuple(ttft), tuple(tpot))


def _validate_one(item: tuple[SiliconRow, ClientOptions, str | None]) -> RowResult | str:
    """A row's result, or why it cannot be simulated (a worker's task: picklable in and out)."""
    row, options, calibration = item
    reason = inexpressible_reason(row)
    if reason is not None:
        return reason
    try:
        return simulate_row(row, options, calibration=calibration)
    except InputError as exc:
        return str(exc)


def validate_rows(rows: list[SiliconRow], options: ClientOptions = ClientOptions(), calibration: str | None = "shipped",
                  progress: Callable[[int, int], None] | None = None,
                  jobs: int = 1) -> tuple[list[RowResult], list[tuple[SiliconRow, str]]]:
    """(results of the simulated rows, [(row, reason)] for the rows that cannot be simulated), in the
    rows' order. Rows are independent runs, so `jobs` worker processes give the same results."""
    executor = LocalExecutor(jobs)
    done = 0

    def on_result(_i: int, _outcome: RowResult | str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(rows))

    try:
        outcomes = executor.map(_validate_one, [(row, options, calibration) for row in rows], on_result)
    finally:
        executor.close()
    results = [o for o in outcomes if isinstance(o, RowResult)]
    skipped = [(row, o) for row, o in zip(rows, outcomes) if isinstance(o, str)]
    return results, skipped


def group_key(row: SiliconRow) -> str:
    return f"{row.backend} {row.system}"


@dataclass(frozen=True)
class GroupError:
    group: str
    rows: int
    ttft_mdape: float  # median |relative error|
    tpot_mdape: float
    ttft_bias: float  # median signed relative error (negative: simulation too fast)
    tpot_bias: float


def _group(name: str, rs: list[RowResult]) -> GroupError:
    return GroupError(name, len(rs), statistics.median(abs(r.ttft_error) for r in rs),
                      statistics.median(abs(r.tpot_error) for r in rs),
                      statistics.median(r.ttft_error for r in rs), statistics.median(r.tpot_error for r in rs))


def group_errors(results: list[RowResult], key: Callable[[SiliconRow], str] = group_key) -> list[GroupError]:
    """Per-group error (sorted by group name) and, last, the row `all`."""
    groups: dict[str, list[RowResult]] = {}
    for r in results:
        groups.setdefault(key(r.row), []).append(r)
    out = [_group(name, groups[name]) for name in sorted(groups)]
    if results:
        out.append(_group("all", results))
    return out


def held_out_line(results: list[RowResult], held_out: frozenset[str]) -> str:
    """One line: the error over the held-out rows among `results` (ids in `held_out`,
    silicon_file.held_out_ids: odd positions, a measurement's copies on the side of its first)."""
    held = [r for r in results if r.row.id in held_out]
    if not held:
        return "Held out (odd file positions, a measurement's copies on the side of its first): no rows."
    e = _group("held out", held)
    return (f"Held out (odd file positions, a measurement's copies on the side of its first): {e.rows} rows, "
            f"TTFT {e.ttft_mdape:.1%} ({e.ttft_bias:+.1%}), TPOT {e.tpot_mdape:.1%} ({e.tpot_bias:+.1%}) median abs err (signed).")


def markdown_table(errors: list[GroupError]) -> str:
    lines = ["| group (engine GPU) | rows | TTFT median abs err | TTFT median err | TPOT median abs err | TPOT median err |",
             "|---|---:|---:|---:|---:|---:|"]
    for e in errors:
        name = f"**{e.group}**" if e.group == "all" else e.group
        lines.append(f"| {name} | {e.rows} | {e.ttft_mdape:.1%} | {e.ttft_bias:+.1%} | {e.tpot_mdape:.1%} | {e.tpot_bias:+.1%} |")
    return "\n".join(lines)


def skipped_table(skipped: list[tuple[SiliconRow, str]]) -> str:
    """Inexpressible rows counted by reason (most frequent first)."""
    counts: dict[str, int] = {}
    for _, reason in skipped:
        counts[reason] = counts.get(reason, 0) + 1
    lines = ["| rows | reason |", "|---:|---|"]
    for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {n} | {reason} |")
    return "\n".join(lines)
