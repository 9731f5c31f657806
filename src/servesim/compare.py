"""Compare variants of a scenario on the same workload and seed: expand, run, tabulate.

A variant is a scenario file plus `--set` overrides. An override whose value lists several
comma-separated values (`scheduler.name=vllm,sarathi,vtc`) makes one variant per value; several
such overrides make their cross product. Values in brackets or braces (YAML lists and
mappings) are never split inside. Every variant keeps the scenario's seed (or `seed` if given), so
they all replay the same requests.
"""

from __future__ import annotations

import csv
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from servesim.errors import InputError
from servesim.scenario import Scenario, load_scenario


@dataclass(frozen=True)
class Variant:
    label: str
    scenario: Scenario


def split_values(item: str) -> tuple[str, list[str]]:
    """`key=a,b,c` -> (`key`, [a, b, c]); commas inside brackets, braces or quotes do not split
    (`key=[p, d],d` -> ([p, d], d): YAML lists and mappings stay whole)."""
    key, sep, raw = item.partition("=")
    if not sep:
        raise InputError(f"--set expects KEY=VALUE (e.g. scheduler.name=vllm,sarathi), got '{item}'")
    parts, depth, quote, start = [], 0, None, 0
    for i, c in enumerate(raw):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"" and not raw[start:i].strip():  # (a quoted item; an apostrophe inside a word is text)
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth = max(depth - 1, 0)  # (a stray closing bracket is text)
        elif c == "," and depth == 0:
            parts.append(raw[start:i])
            start = i + 1
    if not parts:
        return key.strip(), [raw]
    return key.strip(), [v.strip() for v in parts + [raw[start:]]]


def expand_variants(scenarios: Sequence[Path | None], sets: Sequence[str], seed: int | None = None) -> list[Variant]:
    """Every (scenario file, combination of listed values) as a validated scenario."""
    keys, choices = [], []
    for item in sets:
        key, values = split_values(item)
        keys.append(key)
        choices.append(values)
    varied = [i for i, c in enumerate(choices) if len(c) > 1]
    variants = []
    for path in scenarios or [None]:
        for combo in itertools.product(*choices):
            overrides = [f"{k}={v}" for k, v in zip(keys, combo)]
            if seed is not None:
                overrides.append(f"seed={seed}")
            parts = [Path(path).stem] if path is not None and len(scenarios) > 1 else []
            parts += [combo[i] if len(varied) == 1 else f"{keys[i].rsplit('.', 1)[-1]}={combo[i]}" for i in varied]
            variants.append(Variant(" ".join(parts) or (Path(path).stem if path else "default"),
                                    load_scenario(path, overrides)))
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise InputError(f"variants are not distinct: {', '.join(labels)}")
    return variants


# (column, summary path) of the comparison table; a missing value is left empty.
COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("finished", ("num_finished",)),
    ("req/s", ("throughput", "requests_per_s")),
    ("out tok/s", ("throughput", "output_tokens_per_s")),
    ("TTFT mean s", ("ttft_s", "mean")),
    ("TTFT p99 s", ("ttft_s", "p99")),
    ("TPOT mean s", ("tpot_s", "mean")),
    ("ITL p99 s", ("itl_s", "p99")),
    ("E2E mean s", ("e2e_s", "mean")),
    ("E2E p99 s", ("e2e_s", "p99")),
    ("SLO attained", ("slo_attainment",)),
    ("goodput req/s", ("goodput_requests_per_s",)),
    ("preemptions", ("num_preemptions",)),
    ("prefix hit rate", ("prefix_cache_hit_rate",)),
    ("Jain index", ("fairness", "jain_index")),
    ("program mean s", ("programs", "mean_completion_s")),
    ("QoE mean", ("qoe", "mean")),
    # what an elastic cluster, prefill/decode pools and live migration cost or did (autoscalers compared)
    ("GPU-hours", ("elastic", "gpu_hours")),
    ("cost $", ("elastic", "cost_usd")),
    ("$ / M out tok", ("elastic", "usd_per_million_output_tokens")),
    ("energy kWh", ("elastic", "energy_kwh")),
    ("cold starts", ("elastic", "num_cold_starts")),
    ("KV transfers", ("disaggregation", "num_transfers")),
    ("migrations", ("migration", "num_migrations")),
]


def lookup(summary: dict, path: tuple[str, ...]):
    node = summary
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, (int, float)) else None


def table_rows(labels: Sequence[str], summaries: Sequence[dict]) -> tuple[list[str], list[list]]:
    """Header and rows; columns no variant reports are dropped."""
    cols = [(name, path) for name, path in COLUMNS if any(lookup(s, path) is not None for s in summaries)]
    header = ["variant", "scheduler"] + [name for name, _ in cols]
    rows = []
    for label, s in zip(labels, summaries):
        rows.append([label, s.get("_scheduler", "")] + [lookup(s, path) for _, path in cols])
    return header, rows


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows([["" if v is None else v for v in row] for row in rows])


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label).strip("_") or "run"


def run_comparison(variants: Sequence[Variant], out_dir: Path, on_done: Callable[[str, dict], None] | None = None,
                   write_runs: bool = True) -> tuple[list[str], list[list], list[Path]]:
    """Simulate every variant; write each run folder and `comparison.csv` under `out_dir`."""
    from servesim.output import prepare_requests, write_run
    from servesim.simulation import check_inputs, simulate

    for v in variants:  # (a variant refused after others ran would leave their folders behind)
        check_inputs(v.scenario)
    summaries, run_dirs = [], []
    for v in variants:
        result = simulate(v.scenario, keep_requests=False)
        if write_runs:
            prepare_requests(result)  # (the requests file made on the second core while the summary is)
        summary = result.summary()
        if write_runs:
            run_dir = out_dir / slug(v.label)
            write_run(result, run_dir, summary)
            run_dirs.append(run_dir)
        summaries.append(dict(summary, _scheduler=v.scenario.scheduler.name))
        if on_done:
            on_done(v.label, summary)
    header, rows = table_rows([v.label for v in variants], summaries)
    write_csv(out_dir / "comparison.csv", header, rows)
    return header, rows, run_dirs
