"""Config of where requests come from: trace replay, arrival processes, prompt/output lengths."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from servesim.workload.config_base import Strict, check_int_spec, IntSpec


class TraceConfig(Strict):
    """Replay of a trace file, open loop: each row becomes one request at its timestamp."""

    name: str = "azure-conv"
    """Shipped trace name (`servesim trace list`) or path to a CSV/JSONL(.gz) trace file."""
    speedup: float = Field(1.0, gt=0)
    """Replay speed: arrival_s = (timestamp - first timestamp - start_s) / speedup (2 = twice as fast)."""
    start_s: float = Field(0.0, ge=0)
    """Skip rows earlier than this many trace seconds after the first row (time slicing)."""
    end_s: float | None = Field(None, gt=0)
    """Stop at rows this many trace seconds after the first row (None = to the end)."""
    skip_bad_rows: bool = False
    """Skip malformed rows (counted in `Workload.skipped_rows`) instead of failing on the first one."""

    @model_validator(mode="after")
    def _slice_order(self) -> TraceConfig:
        if self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"trace.end_s ({self.end_s}) must be greater than trace.start_s ({self.start_s})")
        return self


class RateCurveConfig(Strict):
    """A time-varying rate: arrivals are generated in 'operational time' and warped onto it."""

    kind: Literal["piecewise", "diurnal"] = "diurnal"
    """piecewise: rates at given times (absolute req/s); diurnal: sinusoid around arrival.rate_per_s."""
    points: list[tuple[float, float]] = [(0.0, 1.0)]
    """piecewise: [[time_s, rate_per_s], ...]; times start at 0 and increase; rates >= 0."""
    interpolation: Literal["step", "linear"] = "step"
    """piecewise: hold each rate until the next point (step) or ramp linearly between points."""
    period_s: float | None = Field(None, gt=0)
    """Repeat the curve with this period (diurnal: defaults to 86400; piecewise: None = hold last rate)."""
    peak_to_trough: float = Field(3.0, ge=1)
    """diurnal: ratio of the highest to the lowest rate."""
    peak_at_s: float = Field(14 * 3600.0, ge=0)
    """diurnal: time of the peak within the period (default 14:00)."""

    @field_validator("points")
    @classmethod
    def _points_ok(cls, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if not points or points[0][0] != 0:
            raise ValueError(f"curve.points must start at time 0, got {points!r}")
        times = [t for t, _ in points]
        if any(b <= a for a, b in zip(times, times[1:])):
            raise ValueError(f"curve.points times must increase, got {times}")
        if any(r < 0 for _, r in points) or not any(r > 0 for _, r in points):
            raise ValueError(f"curve.points rates must be >= 0 and not all 0, got {[r for _, r in points]}")
        return points

    @model_validator(mode="after")
    def _period_covers_points(self) -> RateCurveConfig:
        last = self.points[-1][0]
        if self.kind == "piecewise" and self.period_s is not None and self.period_s < last:
            raise ValueError(f"curve.period_s ({self.period_s}) must be >= the last point's time ({last})")
        return self


ARRIVAL_FIELDS: dict[str, tuple[str, ...]] = {
    "poisson": ("rate_per_s", "curve"),
    "gamma": ("rate_per_s", "cv", "curve"),
    "weibull": ("rate_per_s", "cv", "curve"),
    "onoff": ("rate_per_s", "on_s", "off_s", "off_rate_per_s"),
    "closed": ("users", "think_time_s", "think_time_dist", "ramp_up_s", "warmup_requests"),
    "servegen": ("rate_per_s", "model", "start_s", "top_clients"),
}


class ArrivalConfig(Strict):
    """When requests (or sessions / programs) start. Only the fields of the chosen process apply."""

    process: Literal["poisson", "gamma", "weibull", "onoff", "closed", "servegen"] = "poisson"
    """poisson | gamma (by cv) | weibull (by cv) | onoff bursts | closed (N users) | servegen (multi-tenant)."""
    rate_per_s: float | None = Field(None, gt=0)
    """Mean rate (req/s). Default 1.0; for servegen the target mean rate (None = rates as released)."""
    cv: float = Field(1.0, gt=0)
    """Coefficient of variation of inter-arrival times (gamma, weibull); 1 = Poisson-like, > 1 bursty."""
    curve: RateCurveConfig | None = None
    """Time-varying rate for poisson/gamma/weibull (piecewise or diurnal)."""
    on_s: float = Field(10.0, gt=0)
    """onoff: mean burst duration, s (exponentially distributed)."""
    off_s: float = Field(30.0, gt=0)
    """onoff: mean quiet duration, s (exponentially distributed)."""
    off_rate_per_s: float = Field(0.0, ge=0)
    """onoff: Poisson rate during quiet periods (bursts run at rate_per_s)."""
    users: int = Field(1, ge=1)
    """closed: number of users; each has one request (or session / program) in flight at a time."""
    think_time_s: float = Field(1.0, ge=0)
    """closed: mean time between a user's finished request and their next one, s."""
    think_time_dist: Literal["exponential", "fixed"] = "exponential"
    """closed: distribution of think times."""
    ramp_up_s: float = Field(0.0, ge=0)
    """closed: start the users evenly over this many seconds (user i at i * ramp_up_s / users)
    instead of all at time 0, as benchmark clients ramp up; 0 = every user starts at once."""
    warmup_requests: int = Field(0, ge=0)
    """closed: mark the first N requests as warm-up (AIPerf/GenAI-Perf `--warmup-request-count`);
    they are served but `client_metrics` leaves them out."""
    model: str = "m-small"
    """servegen: client-model name (servegen-m-small, deepseek-r1, mm-image...) or path to a traces .tar.xz."""
    start_s: float = Field(0.0, ge=0)
    """servegen: offset into the ServeGen timeline, s (e.g. 86400 + 14*3600 = day 2, 14:00)."""
    top_clients: int | None = Field(None, ge=1)
    """servegen: keep only the N clients with the most requests (None = all)."""

    @model_validator(mode="after")
    def _fields_match_process(self) -> ArrivalConfig:
        allowed = ARRIVAL_FIELDS[self.process]
        extra = sorted(f for f in self.model_fields_set if f != "process" and f not in allowed)
        if extra:
            raise ValueError(
                f"arrival.{extra[0]} does not apply to process {self.process!r} "
                f"(its fields: {', '.join(allowed)})"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump_applicable(self, handler: SerializerFunctionWrapHandler) -> dict:
        # A dump (e.g. a run's resolved scenario.yaml) must load again: write only the fields
        # of the chosen process, the ones the validator above accepts.
        allowed = ("process", *ARRIVAL_FIELDS[self.process])
        return {k: v for k, v in handler(self).items() if k in allowed}


class LengthsConfig(Strict):
    """Prompt and output lengths of generated requests (tokens)."""

    dataset: str | None = None
    """Sample (prompt, output) from a shipped table (sharegpt, arxiv, deepseek-r1, mm-image) or a trace file."""
    prompt_tokens: IntSpec = 512
    """Without dataset: fixed prompt length, or [low, high] uniform."""
    output_tokens: IntSpec = 128
    """Without dataset: fixed output length, or [low, high] uniform."""
    max_prompt_tokens: int | None = Field(None, ge=1)
    """Clip sampled prompt lengths to this many tokens (None = no clip)."""
    max_output_tokens: int | None = Field(None, ge=1)
    """Clip sampled output lengths to this many tokens (None = no clip)."""

    @model_validator(mode="after")
    def _check(self) -> LengthsConfig:
        check_int_spec("lengths.prompt_tokens", self.prompt_tokens, 1)
        check_int_spec("lengths.output_tokens", self.output_tokens, 1)
        if self.dataset is not None and self.model_fields_set & {"prompt_tokens", "output_tokens"}:
            raise ValueError("lengths.dataset and lengths.prompt_tokens/output_tokens are exclusive")
        return self

    @model_serializer(mode="wrap")
    def _dump_applicable(self, handler: SerializerFunctionWrapHandler) -> dict:
        # With a dataset the fixed lengths do not apply, and writing them would not load again.
        data = handler(self)
        if self.dataset is not None:
            data = {k: v for k, v in data.items() if k not in ("prompt_tokens", "output_tokens")}
        return data
