"""Earliest deadline first from each request's SLO (scheduling spec §10.1).

Deadlines: a request that has not emitted its first token must do so by
`arrival + ttft_slo`; a request that is generating must emit its next token by
`last_token_time + tpot_slo`. Each step uses the unified token budget of `priority` with the
deadline as the key: running requests are served earliest deadline first, waiting requests
are admitted earliest deadline first, and when memory or sequence slots are short the
latest-deadline running request is preempted (recompute). Requests without their own SLO use
the `default_*` parameters; a request with no TTFT target at all sorts last (by arrival).

With no target at all (no `default_*`, none held with its own SLO) every deadline is infinite
and the order is arrival: the keys are then static, so a waiting head that KV blocks or
sequence slots hold back stays blocked while only decodes run (as under `priority`), and
fast-forward covers those steps and the arrivals queued behind it.
"""

from __future__ import annotations

from pydantic import Field

from servesim.replica.schedulers import register
from servesim.replica.schedulers.base import SchedulerOutput, SchedulerParams
from servesim.replica.schedulers.priority import KeyedScheduler
from servesim.workload.request import Request, RequestState


class EDFParams(SchedulerParams):
    default_ttft_s: float | None = Field(None, gt=0)
    """TTFT target for requests without their own `ttft_slo_s` (None: no prefill deadline)."""
    default_tpot_s: float | None = Field(None, gt=0)
    """Per-token target for requests without their own `tpot_slo_s` (None: no decode deadline)."""
    preemption: bool = True
    """Preempt a later-deadline running request for an earlier-deadline waiting one."""


@register("edf")
class EDFScheduler(KeyedScheduler):
    Params = EDFParams
    static_waiting_keys = True  # a waiting request's deadline is fixed: its arrival or its last token

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self.preempt_for_waiting = params.preemption
        self._last_token_s: dict[int, float] = {}
        self._no_default_deadline = params.default_ttft_s is None and params.default_tpot_s is None
        self._num_with_slo = 0  # held requests (waiting, running, swapped) with their own SLO
        self._num_with_tpot = 0  # ... with their own per-token target

    @property
    def static_keys(self) -> bool:  # every deadline infinite: the key is (inf, arrival, id)
        return self._no_default_deadline and not self._num_with_slo

    def _count_targets(self, req: Request, sign: int) -> None:
        """A held request with its own targets joins (+1) or leaves (-1) the counts."""
        self._num_with_slo += sign * _has_slo(req)
        self._num_with_tpot += sign * (req.tpot_slo_s is not None)

    def add_request(self, req: Request, now_s: float) -> None:
        self._count_targets(req, 1)
        super().add_request(req, now_s)

    def add_transferred(self, req: Request, now_s: float) -> None:
        self._count_targets(req, 1)
        super().add_transferred(req, now_s)

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        # a newcomer with its own deadline would make the keys time-varying
        return self.static_keys and (req is None or not _has_slo(req)) and super().arrival_keeps_batch(req)

    def deadline_s(self, req: Request) -> float:
        if req.first_token_s is None:
            ttft = req.ttft_slo_s if req.ttft_slo_s is not None else self.params.default_ttft_s
            return float("inf") if ttft is None else req.arrival_s + ttft
        tpot = req.tpot_slo_s if req.tpot_slo_s is not None else self.params.default_tpot_s
        last = self._last_token_s.get(req.id, req.first_token_s)
        return float("inf") if tpot is None else last + tpot

    def key(self, req: Request) -> tuple:
        return (self.deadline_s(req), req.arrival_s, req.id)

    def repeat_order(self, output: SchedulerOutput) -> list[Request] | None:
        # In a repeated step every request's last token came at the previous step's end, so
        # deadlines differ only by the per-token targets: with one target for the whole batch
        # (or none) they tie and the order is (arrival, id) at every step.
        default = self.params.default_tpot_s
        reqs = [r for r, _ in output.scheduled]
        if len({default if r.tpot_slo_s is None else r.tpot_slo_s for r in reqs}) > 1:
            return None
        return sorted(reqs, key=lambda r: (r.arrival_s, r.id))

    def admits_joins(self) -> bool:
        # (`on_step_end` keeps the decodes' last token times: a request that joined a stretch
        # is in the output the stretch's end hands it, with the others)
        return True

    def on_step_end(self, output: SchedulerOutput, now_s: float) -> None:
        if self.params.default_tpot_s is None and not self._num_with_tpot:
            return  # no decode deadline to keep: the last token times are never read
        for req, _ in output.scheduled:
            if (req.state == RequestState.RUNNING and req.first_token_s is not None
                    and req.num_computed_tokens >= req.num_tokens - 1):
                self._last_token_s[req.id] = now_s  # it emitted a token at this step's end

    def forget(self, req: Request) -> None:
        super().forget(req)
        self._count_targets(req, -1)
        self._last_token_s.pop(req.id, None)

    # Its own tables and counts only (the stored keys, the target counts, the last token
    # times): a step's finishes leave `running` in one pass (`finish_all`).
    batch_free_forget = forget

    def drain(self, now_s: float) -> list[Request]:
        self._num_with_slo = self._num_with_tpot = 0
        return super().drain(now_s)


def _has_slo(req: Request) -> bool:
    return req.ttft_slo_s is not None or req.tpot_slo_s is not None
