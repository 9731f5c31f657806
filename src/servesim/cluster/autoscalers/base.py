"""The autoscaler plug-in contract.

Every `interval_s` the scale controller scrapes the cluster into a `Sample` (replica views
read through `Replica.view(t)`, exact at any t, plus the arrivals since the last sample) and
asks the autoscaler how many replicas it wants. The autoscaler sees only samples at least
`scrape_delay_s` old (its metrics pipeline lags), returns a desired count, and the
controller clamps it to [min_replicas, max_replicas], starts or drains replicas, and logs
the decision.

To add a policy: one file in this folder with an `Autoscaler` subclass decorated with
`@register("name")`, a pydantic `Params` model carrying the reference implementation's
names, defaults and docstrings (cite the source in the class docstring), and its reference
decision interval as `default_interval_s`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import ClassVar, Sequence

from pydantic import BaseModel, ConfigDict

from servesim.cluster.view import ReplicaView
from servesim.sums import left_sum


class AutoscalerParams(BaseModel):
    """Base of every autoscaler's parameters (unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


@dataclass(frozen=True)
class Sample:
    """One scrape of the scaled pool."""

    time_s: float
    views: tuple[ReplicaView, ...]  # ready replicas (they report metrics)
    num_starting: int  # scaling up, not ready yet
    num_draining: int
    num_queued: int  # requests held at the cluster while no replica was ready
    arrivals: int  # requests that arrived since the previous sample
    prompt_tokens: int  # their prompt tokens
    output_tokens: int  # their output tokens
    window_s: float  # time since the previous sample

    @property
    def num_ready(self) -> int:
        return len(self.views)

    @property
    def concurrency(self) -> float:
        """In-flight requests, including those queued at the cluster (Knative's concurrency)."""
        return sum(v.num_outstanding for v in self.views) + self.num_queued

    @property
    def rate_per_s(self) -> float:
        return self.arrivals / self.window_s if self.window_s > 0 else 0.0


@dataclass(frozen=True)
class Capacity:
    """What one replica of the pool can do, from the perf model (the "profile" that Dynamo's
    planner and forecasting scalers need)."""

    prefill_tokens_per_s: float  # a full token budget of prefill per step
    decode_tokens_per_s: float  # max_num_seqs decoding at a typical context
    max_num_seqs: int
    num_gpu_blocks: int
    block_size: int
    cold_start_s: float
    role: str = "mixed"  # the pool's: a prefill or decode pool does only its part of each request


class Autoscaler:
    """Base class: holds the parameters and the pool's capacity."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[AutoscalerParams]] = AutoscalerParams
    default_interval_s: ClassVar[float] = 15.0

    def __init__(self, params: AutoscalerParams, capacity: Capacity, min_replicas: int, max_replicas: int) -> None:
        self.params = params
        self.capacity = capacity
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas

    def desired(self, now_s: float, samples: Sequence[Sample], current: int) -> tuple[int, float]:  # pragma: no cover
        """(desired replicas, the metric that decided) from the visible samples (oldest
        first, at least one); `current` = ready + starting replicas."""
        raise NotImplementedError

    def history_s(self, interval_s: float) -> float:
        """How long before the newest visible sample `desired` reads samples (0: the newest
        alone). The controller keeps that span, so that a run's memory does not grow with its
        length; `interval_s` is the time between samples."""
        return 0.0


def window(samples: Sequence[Sample], now_s: float, window_s: float) -> list[Sample]:
    """The samples taken in (now - window, now] (at least the newest one)."""
    return samples[since(samples, now_s - window_s):] or [samples[-1]]


def since(samples: Sequence[Sample], t: float) -> int:
    """Index of the first sample taken after `t` (samples are in time order: a search, not a
    scan of the whole run's history at every tick)."""
    return bisect_right(samples, t, key=_time)


def _time(s: Sample) -> float:
    return s.time_s


def ceil_div(x: float, y: float) -> int:
    """ceil(x / y) robust to float noise (1e-9 relative)."""
    return math.ceil(x / y - 1e-9) if y > 0 else 0


def per_replica(s: Sample, metric: str) -> float:
    """A pod metric averaged over ready replicas: concurrency (running + waiting + queued at
    the cluster), num_waiting (vLLM `num_requests_waiting`, plus the cluster queue) or
    kv_cache_usage (vLLM `gpu_cache_usage_perc`, 0-1)."""
    n = max(s.num_ready, 1)
    if metric == "concurrency":
        return s.concurrency / n
    if metric == "num_waiting":
        return (sum(v.num_waiting for v in s.views) + s.num_queued) / n
    if not s.views:
        return 1.0 if s.num_queued else 0.0
    return left_sum(v.kv_usage for v in s.views) / n


def replica_rps(cap: Capacity, prompt_tokens: float, output_tokens: float) -> float:
    """Requests per second one replica sustains for this request shape (prefill and decode
    share a mixed replica's GPU, so their times add; a prefill or decode replica does one of
    them, as Dynamo's planner sizes its prefill and decode workers apart)."""
    work_s = ((prompt_tokens / cap.prefill_tokens_per_s if cap.role != "decode" else 0.0)
              + (output_tokens / cap.decode_tokens_per_s if cap.role != "prefill" else 0.0))
    return 1.0 / work_s if work_s > 0 else float("inf")
