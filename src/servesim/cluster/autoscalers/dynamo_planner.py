"""NVIDIA Dynamo planner for an aggregated pool: throughput mode and load mode.

Throughput mode (Dynamo's SLA planner, predictive): every `adjustment_interval` (180 s) it
forecasts the next interval's request count, ISL and OSL from the past intervals and
provisions replicas = ceil(predicted demand / per-replica capacity), where the capacity is
the pre-deployment profile (here: the perf model's prefill and decode throughput, see
`Capacity`). Forecasters: `constant` (next = last) and `moving-average` over
`load_prediction_window_size` intervals; Dynamo's ARIMA/Prophet predictors are not bundled
(they need extra packages), so the default is `constant`.

Load mode (reactive, its SLA rule): a replica's queued prefill work divided by its prefill
throughput estimates the TTFT of a new request; above `ttft_s` (Dynamo default 500 ms)
scale up by one, and scale down by one when every replica would still meet
`scale_down_margin` x `ttft_s` with the work of one replica fewer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from servesim.cluster.autoscalers import register
from servesim.cluster.autoscalers.base import Autoscaler, AutoscalerParams, ceil_div, replica_rps
from servesim.sums import left_sum


class PlannerParams(AutoscalerParams):
    mode: Literal["throughput", "load"] = "throughput"
    """throughput: predictive provisioning; load: reactive SLA rule."""
    load_predictor: Literal["constant", "moving-average"] = "constant"
    """Forecaster of the next interval's load (throughput mode)."""
    load_prediction_window_size: int = Field(50, ge=1)
    """Past intervals the moving average looks at."""
    ttft_s: float = Field(0.5, gt=0)
    """TTFT target (Dynamo `--ttft`, 500 ms)."""
    scale_down_margin: float = Field(0.5, gt=0, lt=1)
    """Load mode: scale down only if the estimated TTFT with one replica fewer stays below
    this share of the target (our choice, for hysteresis)."""


@register("dynamo-planner")
class DynamoPlanner(Autoscaler):
    Params = PlannerParams
    default_interval_s = 180.0  # adjustment_interval

    def history_s(self, interval_s):
        p: PlannerParams = self.params
        if p.mode == "load" or p.load_predictor == "constant":
            return 0.0
        return (p.load_prediction_window_size + 2) * interval_s  # (`_throughput`'s last k samples, and a margin)

    def desired(self, now_s, samples, current):
        if self.params.mode == "load":
            return self._load(samples[-1], current)
        return self._throughput(samples)

    def _throughput(self, samples):
        p: PlannerParams = self.params
        k = 1 if p.load_predictor == "constant" else p.load_prediction_window_size
        recent = samples[-k:]
        span_s = left_sum(s.window_s for s in recent)
        n = sum(s.arrivals for s in recent)
        if n == 0:
            return (1 if samples[-1].num_queued else 0), 0.0
        rate = n / span_s if span_s > 0 else 0.0
        isl = sum(s.prompt_tokens for s in recent) / n
        osl = sum(s.output_tokens for s in recent) / n
        return ceil_div(rate, replica_rps(self.capacity, isl, osl)), rate

    def _load(self, s, current):
        p: PlannerParams = self.params
        if not s.views:
            return (max(current, 1) if s.num_queued else current), 0.0
        tps = self.capacity.prefill_tokens_per_s
        queued = [v.outstanding_prefill_tokens for v in s.views]
        extra = s.num_queued * (sum(queued) / max(1, sum(v.num_waiting + v.num_running for v in s.views)))
        worst_s = (max(queued) + extra / len(queued)) / tps
        if worst_s > p.ttft_s:
            return current + 1, worst_s
        n = len(queued)
        if n > 1 and (sum(queued) + extra) / (n - 1) / tps < p.scale_down_margin * p.ttft_s and not s.num_starting:
            return current - 1, worst_s
        return current, worst_s


