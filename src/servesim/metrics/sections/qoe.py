"""Andes' streaming QoE per request: how well the token-delivery timeline met the expected one.

A user reads streamed tokens at a finite pace. Request r expects its first token TTFT_exp after
arrival and then TDS_exp tokens per second: token i is expected at T_exp(i) = TTFT_exp + i/TDS_exp.
The client buffer shows token i at show(i) = max(t_i, show(i-1) + 1/TDS_exp), show(0) =
max(t_0, TTFT_exp) (times from arrival): tokens generated faster than TDS_exp bring nothing.
QoE = area under the shown-tokens curve / area under the expected curve, both up to the last
shown token (scheduling.md §5.2, Andes arXiv 2404.16283): 1 when every token is shown on
time, lower for a long TTFT or stalls. With T = show(N-1), the areas are sum(T - show(i)) and
sum(T - T_exp(i)).

Expected TTFT / TDS: per request `extra["qoe_ttft_s"]` / `extra["qoe_tds"]`, else the
scheduler's `ttft_exp_s` / `tds_exp` parameters (andes), else 1 s and 5 tokens/s. The section
is reported when the scheduler is `andes` or a request carries its own targets; finished
requests only (`num_unfinished` counts the others).
"""

from __future__ import annotations

import numpy as np

from servesim.metrics.stream_stats import StreamValues
from servesim.workload.request import RequestState

KEY = "qoe"
DEFAULT_TTFT_S = 1.0
DEFAULT_TDS = 5.0  # tokens per second: a fast reader (assumption)


def qoe(token_times_s: np.ndarray, ttft_exp_s: float, tds_exp: float) -> float:
    """QoE in [0, 1] of tokens emitted at `token_times_s` (seconds from the request's arrival)."""
    n = len(token_times_s)
    if n == 0:
        return 0.0
    gap = 1.0 / tds_exp
    offset = gap * np.arange(n)
    expected = ttft_exp_s + offset
    shown = np.maximum.accumulate(np.maximum(token_times_s - offset, ttft_exp_s)) + offset
    end = shown[-1]
    target = float((end - expected).sum())
    return 1.0 if target <= 0 else float((end - shown).sum()) / target


def qoe_many(token_times_s: np.ndarray, counts: np.ndarray, ttft_exp_s: np.ndarray,
             tds_exp: np.ndarray) -> list[float]:
    """`qoe` of each of several requests, float for float: `token_times_s` holds their tokens
    one request after another (`counts` of each; times from each one's arrival), the targets one
    per request. `qoe`'s element-wise steps are taken for the whole chunk at once (the same
    operands: a token's offset is 1 / TDS_exp times its place); only the running maximum and
    the two sums, whose floats depend on each request's own array, are taken request by
    request (numpy's pairwise sum of the same values in the same order). A request none of
    whose tokens comes after its expected time (`token_times_s - offset <= ttft_exp_s` for
    each) is shown exactly as expected (`shown == expected`, the same sum twice): its QoE is
    1.0, with no call of its own."""
    ends = np.cumsum(counts)
    starts = ends - counts
    # (in place where it can: a fresh array of a chunk's tokens costs several times the pass)
    offset = np.arange(len(token_times_s), dtype=np.float64)
    offset -= np.repeat(starts, counts)  # (each token's place in its request: exact integers)
    offset *= np.repeat(1.0 / tds_exp, counts)
    ttft = np.repeat(ttft_exp_s, counts)
    shown = token_times_s - offset
    out = [1.0 if n else 0.0 for n in counts.tolist()]
    some = np.flatnonzero(counts)
    if not len(some):
        return out
    todo = some[np.logical_or.reduceat(shown > ttft, starts[some])].tolist()  # (those with a late token)
    if not todo:
        return out
    np.maximum(shown, ttft, out=shown)
    bounds = [(k, int(starts[k]), int(ends[k])) for k in todo]
    for _, a, b in bounds:
        run = shown[a:b]
        np.maximum.accumulate(run, out=run)
    shown += offset
    last = np.repeat(shown[ends - 1], counts)  # (each token's request's last shown time: `end`)
    ttft += offset  # (expected)
    behind = np.subtract(last, ttft, out=ttft)  # (end - expected)
    last -= shown  # (end - shown)
    for k, a, b in bounds:
        target = float(behind[a:b].sum())
        out[k] = 1.0 if target <= 0 else float(last[a:b].sum()) / target
    return out


def targets(req, ttft_exp_s: float = DEFAULT_TTFT_S, tds_exp: float = DEFAULT_TDS) -> tuple[float, float]:
    """(TTFT_exp, TDS_exp) of a request: its own, else the given defaults."""
    extra = req.extra
    return float(extra.get("qoe_ttft_s", ttft_exp_s)), float(extra.get("qoe_tds", tds_exp))


def section(data) -> dict | None:
    sched = data.params.get("scheduler") or {}
    if isinstance(sched, str):
        sched = {"name": sched}
    t = data.table
    tagged = t.extras.has("qoe_tds") or t.extras.has("qoe_ttft_s")
    if sched.get("name") != "andes" and not tagged:
        return None
    ttft = float(sched.get("ttft_exp_s", DEFAULT_TTFT_S))
    tds = float(sched.get("tds_exp", DEFAULT_TDS))
    values, unfinished, num_good = StreamValues(data.folder), 0, 0
    try:
        for chunk in t.chunks():
            finished = t.cols["state"][chunk] == int(RequestState.FINISHED)
            unfinished += int((~finished).sum())
            arrival_s = t.cols["arrival_s"][chunk]
            for part, times, counts in data.token_times_chunks(np.flatnonzero(finished) + chunk.start):
                ttfts = t.extras.at("qoe_ttft_s", part, ttft)[1]  # (a request's own targets, else the defaults)
                tdss = t.extras.at("qoe_tds", part, tds)[1]
                times -= np.repeat(arrival_s[part - chunk.start], counts)  # (from each one's arrival; a fresh array)
                v = np.array(qoe_many(times, counts, ttfts, tdss))
                values.add(v)
                num_good += int((v >= 0.9).sum())
        if not len(values):
            return None
        return {
            "mean": values.mean(),
            "p50": values.percentile(50),
            "p10": values.percentile(10),
            "min": values.min(),
            "share_ge_0_9": num_good / len(values),
            "num_requests": len(values),
            "num_unfinished": unfinished,
            "ttft_exp_s": ttft,
            "tds_exp": tds,
        }
    finally:
        values.close()
