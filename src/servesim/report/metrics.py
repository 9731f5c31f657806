"""Turn summary.json and scenario.yaml into labelled, typed rows for tables.

Known metrics get a label, a kind (how to format them) and a direction (whether lower or
higher is better, used to colour differences); any other top-level number or mapping of
numbers a later feature adds (e.g. `fairness`, `qoe`) is shown generically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from servesim.report.fmt import is_number

LATENCIES = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2e_s", "E2E"))
LATENCY_STATS = ("mean", "p50", "p90", "p99", "max")
GROUP_SECTIONS = (("per_tenant", "tenant"), ("per_slo_class", "SLO class"))


@dataclass(frozen=True)
class Metric:
    """One number from a summary, ready to be formatted."""

    section: str
    """Table section the row belongs to."""
    key: str
    """Stable dotted key (e.g. `ttft_s.p99`) used to align runs in a comparison."""
    label: str
    """What the reader sees."""
    kind: str
    """Formatter kind, see `fmt.KINDS`."""
    better: int
    """-1 if lower is better, +1 if higher is better, 0 if neither."""
    value: Any


_SCALARS = (
    ("Requests", "num_requests", "Requests", "count", 0),
    ("Requests", "num_finished", "Finished", "count", 1),
    ("Requests", "num_rejected", "Rejected", "count", -1),
    ("Requests", "num_dropped", "Dropped", "count", -1),
    ("Requests", "num_preemptions", "Preemptions", "count", -1),
    ("Throughput", "throughput.requests_per_s", "Request throughput", "rate", 1),
    ("Throughput", "throughput.input_tokens_per_s", "Input token throughput", "rate", 1),
    ("Throughput", "throughput.output_tokens_per_s", "Output token throughput", "rate", 1),
    ("Throughput", "prefix_cache_hit_rate", "Prefix-cache hit rate", "pct", 1),
    ("SLO", "slo_attainment", "SLO attainment", "pct", 1),
    ("SLO", "goodput_requests_per_s", "Goodput", "rate", 1),
    ("SLO", "slo.ttft_s", "TTFT target", "ms", 0),
    ("SLO", "slo.tpot_s", "TPOT target", "ms", 0),
    ("SLO", "slo.e2e_s", "E2E target", "ms", 0),
    ("Time", "simulated_time_s", "Simulated time", "s", 0),
    ("Time", "wall_time_s", "Wall time", "s", -1),
)
_KNOWN_TOP = {key.split(".")[0] for _, key, *_ in _SCALARS} | {k for k, _ in LATENCIES} | {
    k for k, _ in GROUP_SECTIONS}
_KNOWN_KEYS = {key for _, key, *_ in _SCALARS}


def summary_metrics(summary: dict[str, Any]) -> list[Metric]:
    """Every number in `summary` as a Metric, known ones first, in a stable order."""
    out = [Metric(section, key, label, kind, better, _get(summary, key))
           for section, key, label, kind, better in _SCALARS if _get(summary, key) is not None]
    out += [m for m in latency_metrics(summary) if m.value is not None]
    out += _extra_metrics(summary)
    return out


def latency_metrics(summary: dict[str, Any]) -> list[Metric]:
    """Latency statistics (seconds) for every latency present; absent stats have value None."""
    out = []
    for key, name in LATENCIES:
        stats = summary.get(key)
        if isinstance(stats, dict):
            out += [Metric("Latency", f"{key}.{stat}", f"{name} {stat}", "ms", -1, stats.get(stat))
                    for stat in LATENCY_STATS]
    return out


def _extra_metrics(summary: dict[str, Any]) -> list[Metric]:
    out = []
    for key, value in summary.items():
        if key in _KNOWN_TOP:
            if key == "throughput" and isinstance(value, dict):
                out += [Metric("Throughput", f"throughput.{k}", k, "rate", 0, v)
                        for k, v in value.items()
                        if is_number(v) and f"throughput.{k}" not in _KNOWN_KEYS]
            continue
        if is_number(value):
            out.append(Metric("Other", key, key, "plain", 0, value))
        elif isinstance(value, dict):
            out += [Metric(f"Other: {key}", f"{key}.{k}", k, "plain", 0, v)
                    for k, v in _flatten(value) if is_number(v)]
    return out



def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _flatten(value, name + ".")
        else:
            out.append((name, value))
    return out


def _get(mapping: dict[str, Any], dotted: str) -> Any:
    value: Any = mapping
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value if is_number(value) else None


def group_breakdowns(summary: dict[str, Any]) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """The per-tenant / per-SLO-class sections present, as (what a group is, {name: stats})."""
    out = []
    for key, noun in GROUP_SECTIONS:
        groups = summary.get(key)
        if isinstance(groups, dict) and groups:
            out.append((noun, {str(k): v for k, v in groups.items() if isinstance(v, dict)}))
    return out


def slo_targets(scenario: dict[str, Any], summary: dict[str, Any] | None = None) -> dict[str, float]:
    """Latency SLOs (`slo: {ttft_s, tpot_s, e2e_s}`), only those set; from the scenario, else
    from the summary's own `slo` section."""
    slo = scenario.get("slo")
    if not isinstance(slo, dict) and summary is not None:
        slo = summary.get("slo")
    if not isinstance(slo, dict):
        return {}
    return {key: float(slo[key]) for key in ("ttft_s", "tpot_s", "e2e_s")
            if is_number(slo.get(key)) and slo[key] > 0}


def scenario_brief(scenario: dict[str, Any]) -> list[tuple[str, str]]:
    """A few (label, text) lines describing the scenario; unknown shapes are shown compactly."""
    rows = []
    for key, label in (("model", "Model"), ("gpu", "GPU"), ("tp", "Tensor parallel"),
                       ("dtype", "Dtype"), ("seed", "Seed")):
        if scenario.get(key) is not None:
            rows.append((label, one_line(scenario[key])))
    scheduler = scenario.get("scheduler")
    if isinstance(scheduler, dict):
        rows.append(("Scheduler", one_line(scheduler.get("name", scheduler))))
    elif scheduler is not None:
        rows.append(("Scheduler", one_line(scheduler)))
    engine = scenario.get("engine")
    if isinstance(engine, dict):
        keys = ("max_num_batched_tokens", "max_num_seqs", "block_size")
        picked = {k: engine[k] for k in keys if k in engine} or engine
        rows.append(("Engine", one_line(picked)))
    if scenario.get("workload") is not None:
        rows.append(("Workload", workload_brief(scenario["workload"])))
    slo = scenario.get("slo")
    if isinstance(slo, dict) and any(v is not None for v in slo.values()):
        rows.append(("SLO", one_line({k: v for k, v in slo.items() if v is not None})))
    return rows


def workload_brief(workload: Any) -> str:
    """The workload in one line: trace or arrival process, lengths, limits, special features.

    Resolved scenarios spell out every default, so only the keys that say what the workload
    is are picked; anything unrecognised falls back to a compact dump.
    """
    if not isinstance(workload, dict):
        return one_line(workload)
    parts = []
    trace = workload.get("trace")
    if isinstance(trace, dict) and trace.get("name"):
        speedup = trace.get("speedup")
        parts.append(f"trace {trace['name']}" + (f" at {speedup}x speed" if speedup not in (None, 1, 1.0) else ""))
    elif isinstance(trace, str):
        parts.append(f"trace {trace}")
    else:
        parts += _arrival_and_lengths(workload)
    parts += [f"{key}={workload[key]}" for key in ("num_requests", "duration_s")
              if workload.get(key) is not None]
    parts += [key.replace("_", " ") for key in ("sessions", "programs", "shared_prefix") if workload.get(key)]
    attributes = workload.get("attributes")
    if isinstance(attributes, dict) and isinstance(attributes.get("tenants"), dict) and attributes["tenants"]:
        parts.append("tenants " + ", ".join(map(str, attributes["tenants"])))
    return one_line("; ".join(parts)) if parts else one_line(workload)


def _arrival_and_lengths(workload: dict[str, Any]) -> list[str]:
    parts = []
    arrival = workload.get("arrival")
    if isinstance(arrival, dict) and arrival.get("process"):
        rate = arrival.get("rate_per_s")
        parts.append(f"{arrival['process']} arrivals" + (f" at {rate}/s" if rate is not None else ""))
    lengths = workload.get("lengths")
    if isinstance(lengths, dict):
        if lengths.get("dataset"):
            parts.append(f"lengths from {lengths['dataset']}")
        elif lengths.get("prompt_tokens") is not None:
            parts.append(f"{lengths['prompt_tokens']} prompt / {lengths.get('output_tokens')} output tokens")
    return parts


def one_line(value: Any, max_chars: int = 200) -> str:
    """A compact single-line rendering of a scalar, list or nested mapping."""
    text = _compact(value)
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_compact_inner(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_compact_inner(v) for v in value) + "]"
    return str(value)


def _compact_inner(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + _compact(value) + "}"
    return _compact(value)
