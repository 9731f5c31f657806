"""Pure summaries of a run, with vLLM's benchmark definitions.

TTFT = first token time - arrival; TPOT = (E2E - TTFT) / (output tokens - 1); ITL = every gap
between consecutive tokens of a request; E2E = last token time - arrival. Throughput divides
by the span from the first arrival to the last completion. SLO attainment (DistServe) is the
share of all requests meeting both the TTFT and the TPOT target; goodput is that count per
second. Percentiles interpolate linearly between order statistics, as numpy's default; the
inter-token gaps (one per step, so as many as the run has steps) are reduced out of core
(metrics/exact.py), with exact percentiles and a mean from an exact sum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from servesim.metrics.itl import RunChunks, TokenRuns, itl_stats
from servesim.metrics.stream_stats import StreamStats, stats, weighted_percentiles  # noqa: F401  (re-exported)
from servesim.metrics.step_ends import StepEnds

STATE_NAMES = ("waiting", "running", "preempted", "swapped", "finished", "rejected", "dropped", "aborted",
               "failed")
FINISHED = 4


@dataclass(frozen=True)
class RequestColumns:
    """Per-request columns (NaN where a value does not exist)."""

    id: np.ndarray
    tenant: np.ndarray  # object array of str
    slo_class: np.ndarray  # object array of str or None
    state: np.ndarray  # int codes, see STATE_NAMES
    arrival_s: np.ndarray
    prompt_len: np.ndarray
    output_len: np.ndarray
    num_output_tokens: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    num_preemptions: np.ndarray
    ttft_slo_s: np.ndarray  # per-request SLO (NaN = scenario default)
    tpot_slo_s: np.ndarray

    @property
    def ttft_s(self) -> np.ndarray:
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> np.ndarray:
        return np.where(self.state == FINISHED, self.finish_s - self.arrival_s, np.nan)

    @property
    def tpot_s(self) -> np.ndarray:
        n = self.num_output_tokens
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = (self.finish_s - self.first_token_s) / (n - 1)
        return np.where((self.state == FINISHED) & (n > 1), tpot, np.nan)

    def select(self, mask: np.ndarray) -> "RequestColumns":
        return RequestColumns(**{k: getattr(self, k)[mask] for k in self.__dataclass_fields__})


def tokens_per_request(runs: TokenRuns) -> np.ndarray:
    """Tokens each request emitted: the total length of its step runs."""
    counts, starts, ends = runs
    per_run = np.concatenate([[0], np.cumsum(ends - starts + 1)])
    last = np.cumsum(counts)
    return per_run[last] - per_run[last - counts]


#: The requests' columns: a function giving them a chunk of rows at a time (one chunk of every
#: row when they are in memory)
ColumnChunks = Callable[[], Iterable[RequestColumns]]


def summarize(chunks: ColumnChunks, ends: StepEnds, runs: RunChunks, *, ttft_slo_s: float | None,
              tpot_slo_s: float | None, prefix_hits: tuple[int, int], wall_time_s: float,
              folder: str | None = None, itl: dict | None = None) -> dict:
    """The summary.json dictionary (`ends`: every step's end time, as token runs index them;
    `itl`: the inter-token gaps' figures when they were reduced during the run).

    Every figure is reduced chunk by chunk, the percentiles out of core beyond memory
    (stream_stats.py): the same bytes as from the whole columns."""
    total = _Group(folder)
    labels: dict[str, set] = {"per_tenant": set(), "per_slo_class": set()}
    for c in chunks():
        total.add(c, _met(c, ttft_slo_s, tpot_slo_s))
        # (sets of the labels, not np.unique: that imports numpy.ma, 6 ms of a short run)
        labels["per_tenant"].update(c.tenant[c.tenant != None].tolist())  # noqa: E711
        labels["per_slo_class"].update(c.slo_class[c.slo_class != None].tolist())  # noqa: E711
    duration = max(total.end_s - total.start_s, 1e-12) if total.num_finished else 1e-12
    if itl is None:
        itl = itl_stats(runs, ends, folder)
    queried, hit = prefix_hits
    states = total.states
    out = {
        "num_requests": total.n,
        "num_finished": total.num_finished,
        "num_rejected": int(states[5]),
        "num_dropped": int(states[6]),
        "num_aborted": int(states[7]),
        "num_failed": int(states[8]),
        "simulated_time_s": ends.max() if len(ends) else 0.0,
        "wall_time_s": wall_time_s,
        "ttft_s": total.ttft.result(),
        "tpot_s": total.tpot.result(),
        "itl_s": itl,
        "e2e_s": total.e2e.result(),
        "throughput": {
            "requests_per_s": float(total.num_finished / duration),
            "input_tokens_per_s": float(total.input_tokens / duration),
            "output_tokens_per_s": float(total.output_tokens / duration),
        },
        "num_preemptions": total.num_preemptions,
        "prefix_cache_hit_rate": float(hit / queried) if queried else 0.0,
        "num_steps": len(ends),
    }
    report_met = ttft_slo_s is not None or tpot_slo_s is not None or total.has_own_slo
    if report_met:
        out["slo"] = {"ttft_s": ttft_slo_s, "tpot_s": tpot_slo_s}
        out["slo_attainment"] = float(total.num_met / total.n) if total.n else 0.0
        out["goodput_requests_per_s"] = float(total.num_met / duration)
    wanted = {key: sorted(g) for key, g in labels.items() if len(g) > 1 or (key == "per_slo_class" and g)}
    if wanted:
        out.update(_groups(chunks, wanted, ttft_slo_s, tpot_slo_s, duration, report_met, folder))
    return out


def _groups(chunks, wanted: dict[str, list], ttft_slo_s, tpot_slo_s, duration: float, report_met: bool,
            folder) -> dict:
    """per_tenant / per_slo_class: a second pass over the chunks, a `_Group` per label."""
    acc = {key: {g: _Group(folder) for g in groups} for key, groups in wanted.items()}
    for c in chunks():
        met = _met(c, ttft_slo_s, tpot_slo_s)
        for key, groups in acc.items():
            labels = c.tenant if key == "per_tenant" else c.slo_class
            for g, group in groups.items():
                mask = labels == g
                if mask.any():
                    group.add(c.select(mask), met[mask])
    return {key: {g: group.section(duration, report_met) for g, group in groups.items()}
            for key, groups in acc.items()}


class _Group:
    """The summary's figures of a set of requests, added a chunk of rows at a time."""

    def __init__(self, folder: str | None) -> None:
        self.n = self.num_finished = self.num_met = self.num_preemptions = 0
        self.input_tokens = self.output_tokens = 0
        self.states = np.zeros(len(STATE_NAMES), dtype=np.int64)
        self.start_s, self.end_s = np.inf, -np.inf  # first arrival, last finish
        self.has_own_slo = False
        self.ttft, self.tpot, self.e2e = StreamStats(folder), StreamStats(folder), StreamStats(folder)

    def add(self, c: RequestColumns, met: np.ndarray) -> None:
        finished = c.state == FINISHED
        self.n += len(c.id)
        self.num_finished += int(finished.sum())
        self.states += np.bincount(c.state, minlength=len(STATE_NAMES))[:len(STATE_NAMES)]
        if len(c.id):
            self.start_s = min(self.start_s, float(c.arrival_s.min()))
        done = c.finish_s[~np.isnan(c.finish_s)]
        if len(done):
            self.end_s = max(self.end_s, float(done.max()))
        self.input_tokens += int(c.prompt_len[finished].sum())
        self.output_tokens += int(c.num_output_tokens.sum())
        self.num_preemptions += int(c.num_preemptions.sum())
        self.num_met += int(met.sum())
        self.has_own_slo = self.has_own_slo or bool(np.isfinite(c.ttft_slo_s).any() or np.isfinite(c.tpot_slo_s).any())
        self.ttft.add(c.ttft_s)
        self.tpot.add(c.tpot_s)
        self.e2e.add(c.e2e_s)

    def section(self, duration: float, report_met: bool) -> dict:
        g = {
            "num_requests": self.n,
            "num_finished": self.num_finished,
            "ttft_s": self.ttft.result(),
            "tpot_s": self.tpot.result(),
            "e2e_s": self.e2e.result(),
            "output_tokens_per_s": float(self.output_tokens / duration),
        }
        if report_met:
            g["slo_attainment"] = float(self.num_met / self.n) if self.n else 0.0
        return g


def slo_met(cols: RequestColumns, ttft_slo_s: float | None, tpot_slo_s: float | None) -> np.ndarray | None:
    """Per request: finished and within both SLOs (per-request targets override the defaults)."""
    has_own = np.isfinite(cols.ttft_slo_s).any() or np.isfinite(cols.tpot_slo_s).any()
    if ttft_slo_s is None and tpot_slo_s is None and not has_own:
        return None
    return _met(cols, ttft_slo_s, tpot_slo_s)


def _met(cols: RequestColumns, ttft_slo_s: float | None, tpot_slo_s: float | None) -> np.ndarray:
    """`slo_met` as if a target were set (no target: +inf)."""
    ttft_t = np.where(np.isfinite(cols.ttft_slo_s), cols.ttft_slo_s, np.inf if ttft_slo_s is None else ttft_slo_s)
    tpot_t = np.where(np.isfinite(cols.tpot_slo_s), cols.tpot_slo_s, np.inf if tpot_slo_s is None else tpot_slo_s)
    tpot = np.nan_to_num(cols.tpot_s, nan=0.0)  # one-token outputs have no TPOT to miss
    return (cols.state == FINISHED) & (cols.ttft_s <= ttft_t) & (tpot <= tpot_t)
