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

from dataclasses import dataclass

import numpy as np

from servesim.metrics.exact import WeightedValues
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


def weighted_percentiles(values: np.ndarray, weights: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """np.percentile(np.repeat(values, weights), qs) without materialising the repeat."""
    keep = weights > 0
    if not keep.all():  # (no copy when nothing is dropped: the ITL columns have a value per step)
        values, weights = values[keep], weights[keep]
    del keep
    if len(values) == 0:
        return [float("nan")] * len(qs)
    order = np.argsort(values)  # ties hold equal values: their order does not matter
    v, c = values[order], weights[order]
    del order
    np.cumsum(c, out=c)
    n = int(c[-1])
    out = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        lo = int(np.floor(pos))
        hi = min(lo + 1, n - 1)
        a = v[np.searchsorted(c, lo + 1)]
        b = v[np.searchsorted(c, hi + 1)]
        out.append(float(a + (b - a) * (pos - lo)))
    return out


def stats(values: np.ndarray, weights: np.ndarray | None = None) -> dict[str, float | None]:
    """mean, p50, p90, p99 and max of the finite values (weights: multiplicities)."""
    if weights is None:
        weights = np.ones(len(values), dtype=np.int64)
    ok = np.isfinite(values) & (weights > 0)
    if not ok.all():
        values, weights = values[ok], weights[ok]
    del ok
    if len(values) == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
    p50, p90, p99 = weighted_percentiles(values, weights, (50, 90, 99))
    # not np.dot: BLAS splits long dot products over its threads, so the last bits would depend
    # on the machine's core count; numpy's pairwise sum has one fixed order everywhere
    mean = float((values * weights).sum() / weights.sum())
    return {"mean": mean, "p50": p50, "p90": p90, "p99": p99, "max": float(values.max())}


#: A run's token emissions as (runs per request, run starts, run ends): request i emitted one
#: token at the end of every step of its runs, inclusive ranges of the (concatenated) step log.
TokenRuns = tuple[np.ndarray, np.ndarray, np.ndarray]


def tokens_per_request(runs: TokenRuns) -> np.ndarray:
    """Tokens each request emitted: the total length of its step runs."""
    counts, starts, ends = runs
    per_run = np.concatenate([[0], np.cumsum(ends - starts + 1)])
    last = np.cumsum(counts)
    return per_run[last] - per_run[last - counts]


def itl_values(runs: TokenRuns, ends: StepEnds, folder: str | None = None) -> WeightedValues:
    """Every inter-token gap, as (gap value, multiplicity) pairs, from the requests' step runs.

    Inside a run [a, b] the gaps are the step-to-step gaps end[i+1] - end[i] for a <= i < b;
    many requests share the same steps, so step i's gap counts the runs with start <= i < end
    (sorted run bounds, counted a chunk of steps at a time: work and memory scale with steps
    and runs, not tokens). Gaps between consecutive runs of one request (it was skipped or
    preempted) are listed one by one. Pairs beyond memory go to a file in `folder`.
    """
    counts, starts, stops = runs
    first_start, first_stop = np.sort(starts), np.sort(stops)
    out = WeightedValues(folder)
    prev, base = None, 0  # last end of the previous chunk, global index of this chunk's first step
    for chunk in ends.chunks():
        seq = chunk if prev is None else np.concatenate(([prev], chunk))
        lo = base - (prev is not None)  # global index of the step whose gap is seq[1] - seq[0]
        gaps = np.diff(seq)
        hi = lo + len(gaps)
        mult = (_count_upto(first_start, lo, hi) - _count_upto(first_stop, lo, hi))
        keep = (mult > 0) & np.isfinite(gaps)
        out.add(gaps[keep], mult[keep])
        prev, base = chunk[-1], base + len(chunk)
    later = np.ones(len(starts), dtype=bool)  # runs that follow another run of the same request
    later[(np.cumsum(counts) - counts)[counts > 0]] = False
    idx = np.flatnonzero(later)
    if len(idx):
        between = ends[starts[idx]] - ends[stops[idx - 1]]
        between = between[np.isfinite(between)]
        out.add(between, np.ones(len(between), dtype=np.int64))
    return out


def _count_upto(sorted_bounds: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """For each i in [lo, hi): how many bounds are <= i."""
    a, b = np.searchsorted(sorted_bounds, [lo, hi])
    inside = np.bincount(sorted_bounds[a:b] - lo, minlength=hi - lo)
    return a + np.cumsum(inside)


def itl_stats(runs: TokenRuns, ends: StepEnds, folder: str | None = None) -> dict[str, float | None]:
    """`stats` of the inter-token gaps (exact percentiles; the mean from an exact sum)."""
    values = itl_values(runs, ends, folder)
    try:
        if values.total_weight == 0:
            return {"mean": None, "p50": None, "p90": None, "p99": None, "max": None}
        p50, p90, p99 = values.percentiles((50, 90, 99))
        return {"mean": values.mean(), "p50": p50, "p90": p90, "p99": p99, "max": values.max}
    finally:
        values.close()


def summarize(cols: RequestColumns, ends: StepEnds, runs: TokenRuns, *, ttft_slo_s: float | None,
              tpot_slo_s: float | None, prefix_hits: tuple[int, int], wall_time_s: float,
              folder: str | None = None) -> dict:
    """The summary.json dictionary (`ends`: every step's end time, as token runs index them)."""
    finished = cols.state == FINISHED
    start = float(cols.arrival_s.min()) if len(cols.arrival_s) else 0.0
    end = float(np.nanmax(cols.finish_s)) if finished.any() else start
    duration = max(end - start, 1e-12)
    itl = itl_stats(runs, ends, folder)
    queried, hit = prefix_hits
    out = {
        "num_requests": int(len(cols.id)),
        "num_finished": int(finished.sum()),
        "num_rejected": int((cols.state == 5).sum()),
        "num_dropped": int((cols.state == 6).sum()),
        "num_aborted": int((cols.state == 7).sum()),
        "num_failed": int((cols.state == 8).sum()),
        "simulated_time_s": ends.max() if len(ends) else 0.0,
        "wall_time_s": wall_time_s,
        "ttft_s": stats(cols.ttft_s),
        "tpot_s": stats(cols.tpot_s),
        "itl_s": itl,
        "e2e_s": stats(cols.e2e_s),
        "throughput": {
            "requests_per_s": float(finished.sum() / duration),
            "input_tokens_per_s": float(cols.prompt_len[finished].sum() / duration),
            "output_tokens_per_s": float(cols.num_output_tokens.sum() / duration),
        },
        "num_preemptions": int(cols.num_preemptions.sum()),
        "prefix_cache_hit_rate": float(hit / queried) if queried else 0.0,
        "num_steps": len(ends),
    }
    met = slo_met(cols, ttft_slo_s, tpot_slo_s)
    if met is not None:
        out["slo"] = {"ttft_s": ttft_slo_s, "tpot_s": tpot_slo_s}
        out["slo_attainment"] = float(met.mean()) if len(met) else 0.0
        out["goodput_requests_per_s"] = float(met.sum() / duration)
    for key, labels in (("per_tenant", cols.tenant), ("per_slo_class", cols.slo_class)):
        groups = sorted({x for x in labels if x is not None})
        if len(groups) > 1 or (key == "per_slo_class" and groups):
            out[key] = {g: _group(cols.select(labels == g), met[labels == g] if met is not None else None, duration)
                        for g in groups}
    return out


def slo_met(cols: RequestColumns, ttft_slo_s: float | None, tpot_slo_s: float | None) -> np.ndarray | None:
    """Per request: finished and within both SLOs (per-request targets override the defaults)."""
    has_own = np.isfinite(cols.ttft_slo_s).any() or np.isfinite(cols.tpot_slo_s).any()
    if ttft_slo_s is None and tpot_slo_s is None and not has_own:
        return None
    ttft_t = np.where(np.isfinite(cols.ttft_slo_s), cols.ttft_slo_s, np.inf if ttft_slo_s is None else ttft_slo_s)
    tpot_t = np.where(np.isfinite(cols.tpot_slo_s), cols.tpot_slo_s, np.inf if tpot_slo_s is None else tpot_slo_s)
    tpot = np.nan_to_num(cols.tpot_s, nan=0.0)  # one-token outputs have no TPOT to miss
    return (cols.state == FINISHED) & (cols.ttft_s <= ttft_t) & (tpot <= tpot_t)


def _group(cols: RequestColumns, met: np.ndarray | None, duration: float) -> dict:
    g = {
        "num_requests": int(len(cols.id)),
        "num_finished": int((cols.state == FINISHED).sum()),
        "ttft_s": stats(cols.ttft_s),
        "tpot_s": stats(cols.tpot_s),
        "e2e_s": stats(cols.e2e_s),
        "output_tokens_per_s": float(cols.num_output_tokens.sum() / duration),
    }
    if met is not None:
        g["slo_attainment"] = float(met.mean()) if len(met) else 0.0
    return g
