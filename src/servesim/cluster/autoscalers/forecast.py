"""Forecast-driven provisioning in the spirit of Seagull (spec §6.8).

Seagull found a persistent forecast ("the next window looks like the last one", or like the
same window one season ago) about as accurate as learned models. This scaler predicts the
arrival rate of the window that starts one cold start from now: the larger of the last
`window_s` (persistent) and, when `season_s` is set and history reaches back that far, the
same window one season earlier (so a recurring burst is provisioned before it comes). It
provisions ceil(predicted rate / (per-replica capacity x target_utilization)), the capacity
coming from the perf model for the observed request shape.
"""

from __future__ import annotations

from pydantic import Field

from servesim.cluster.autoscalers import register
from servesim.cluster.autoscalers.base import Autoscaler, AutoscalerParams, ceil_div, replica_rps, since


class ForecastParams(AutoscalerParams):
    window_s: float = Field(60.0, gt=0)
    """Length of the forecast window (and of the history it averages)."""
    season_s: float | None = Field(None, gt=0)
    """Season of the seasonal-persistent forecast (Seagull: a day or a week); unset: persistent only."""
    target_utilization: float = Field(0.7, gt=0, le=1)
    """Share of a replica's capacity to plan for (headroom for bursts inside a window)."""


@register("forecast")
class Forecast(Autoscaler):
    Params = ForecastParams
    default_interval_s = 15.0

    def history_s(self, interval_s):
        # the last window, and the one a season back (with the oldest sample kept before it:
        # its start tells that history reaches back that far)
        p: ForecastParams = self.params
        return p.window_s + (p.season_s or 0.0) + 2 * interval_s

    def desired(self, now_s, samples, current):
        p: ForecastParams = self.params
        seen_s = samples[-1].time_s  # the newest metrics (they lag by the scrape delay)
        rate, isl, osl = _window(samples, seen_s - p.window_s, seen_s)
        if p.season_s:
            start = now_s + self.capacity.cold_start_s - p.season_s
            if samples[0].time_s - samples[0].window_s <= start:
                r2, i2, o2 = _window(samples, start, start + p.window_s)
                if r2 > rate:
                    rate, isl, osl = r2, i2, o2
        if rate == 0:
            return (1 if samples[-1].num_queued else 0), 0.0
        per = replica_rps(self.capacity, isl, osl) * p.target_utilization
        return ceil_div(rate, per), rate


def _window(samples, t0: float, t1: float) -> tuple[float, float, float]:
    """Arrival rate and mean prompt/output lengths of the samples taken in (t0, t1]."""
    got = samples[since(samples, t0):since(samples, t1)]
    n = sum(s.arrivals for s in got)
    if not n:
        return 0.0, 0.0, 0.0
    return (n / (t1 - t0), sum(s.prompt_tokens for s in got) / n, sum(s.output_tokens for s in got) / n)
