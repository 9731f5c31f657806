"""Mooncake's overload-oriented admission: reject at each stage, early, or early on prediction.

Loads are SLO ratios (Mooncake arXiv v3 §7): prefill load = the conductor's estimated TTFT /
`ttft_slo_s`; decode load = the predicted time between tokens of the decode pool's batch /
`tbt_slo_s`, the batch being the decoding requests per decode replica (their mean over the
pool) at the mean prompt length of the requests admitted so far (servesim's choice of
context; the paper does not give its TBT model's inputs).

- `decode` (the paper's baseline): each stage rejects on its own load. A request rejected
  after its prefill wastes that prefill.
- `early`: admit at arrival iff both loads are below 1, the decode load as it is now. The decode
  load a request adds shows up one prefill later, so P and D loads swing in anti-phase.
- `predictive`: the decode load is predicted for the moment the request's prefill would end:
  requests whose decode started (or will start, at their predicted prefill end) by then and
  has not run `decode_time_s` yet, plus this one.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque

from servesim.cluster.config import DisaggregationConfig
from servesim.cluster.prediction import Predictor, tbt_s
from servesim.sums import left_sum
from servesim.workload.request import Request


class Admission:
    """Rejection decisions and their bookkeeping for one run."""

    def __init__(self, cluster, cfg: DisaggregationConfig, decode_indices: list[int]) -> None:
        self.cluster = cluster
        self.cfg = cfg
        self.decode = decode_indices
        self.predictor = Predictor([r.engine for r in cluster.replicas])
        self._starts: deque[float] = deque()  # decode start times (prefill ends), in order
        self._prefilling: dict[int, float] = {}  # admitted request id -> predicted prefill end
        self._ctx_sum = 0
        self._num_admitted = 0
        self.rejected_at_arrival = 0
        self.rejected_at_decode = 0
        self.rejected_after_prefill_tokens = 0  # prompt tokens computed for requests then rejected

    # ------------------------------------------------------------------ decisions
    def at_arrival(self, req: Request, pick: int, now_s: float) -> str | None:
        """Why `req`, routed to prefill replica `pick`, is rejected at arrival (None: admitted)."""
        cfg = self.cfg
        ttft_s = req.extra.pop("ttft_pred_s", None)
        if ttft_s is None:
            c = self.cluster
            cached = c.replicas[pick].cached_blocks(req) * req.hash_block_tokens
            ttft_s = self.predictor.ttft_s(pick, c.replicas[pick].view(now_s).outstanding_prefill_tokens,
                                           req.prompt_len, cached)
        reason = None
        if ttft_s > cfg.ttft_slo_s:
            reason = "predicted TTFT above ttft_slo_s"
        elif cfg.rejection == "early" and self._decode_load(self._running_per_decode(now_s)) >= 1.0:
            reason = "decode load at arrival above tbt_slo_s"
        elif cfg.rejection == "predictive" and self._decode_load(self._predicted_per_decode(now_s + ttft_s)) > 1.0:
            reason = "predicted decode load above tbt_slo_s"
        if reason is not None:
            self.rejected_at_arrival += 1
            return reason
        self._prefilling[req.id] = now_s + ttft_s
        self._ctx_sum += req.prompt_len
        self._num_admitted += 1
        return None

    def at_decode(self, req: Request, now_s: float) -> str | None:
        """`req`'s prefill just ended: why it is rejected now (only the `decode` policy)."""
        self._prefilling.pop(req.id, None)
        self._starts.append(now_s)
        if self.cfg.rejection != "decode" or self._decode_load(self._running_per_decode(now_s)) < 1.0:
            return None
        self.rejected_at_decode += 1
        self.rejected_after_prefill_tokens += req.prompt_len - req.num_cached_tokens
        return "decode load above tbt_slo_s after prefill"

    # ------------------------------------------------------------------ loads
    def _decode_load(self, seqs_per_replica: float) -> float:
        ctx = self._ctx_sum // max(self._num_admitted, 1)
        reps = self.cluster.replicas
        alive = [i for i in self.decode if reps[i].alive] or self.decode
        tbt = left_sum(tbt_s(reps[i].engine.perf, seqs_per_replica, ctx) for i in alive) / len(alive)
        return tbt / self.cfg.tbt_slo_s

    def _running_per_decode(self, now_s: float) -> float:
        """Decoding requests per decode replica now (the engines' running batches)."""
        reps = self.cluster.replicas
        return sum(reps[i].view(now_s).num_running for i in self.decode) / len(self.decode)

    def _predicted_per_decode(self, t_s: float) -> float:
        """Requests decoding at `t_s` per decode replica, each decode lasting `decode_time_s`,
        with this request counted."""
        t_d = self.cfg.decode_time_s
        starts = self._starts
        while starts and starts[0] + t_d <= self.cluster.loop.now_s:
            starts.popleft()  # over for every later prediction too
        n = len(starts) - bisect_right(starts, t_s - t_d)
        n += sum(1 for end in self._prefilling.values() if t_s - t_d < end <= t_s)
        return (n + 1) / len(self.decode)

    def section(self) -> dict:
        return {"policy": self.cfg.rejection, "rejected_at_arrival": self.rejected_at_arrival,
                "rejected_at_decode": self.rejected_at_decode,
                "rejected_after_prefill_tokens": self.rejected_after_prefill_tokens}
