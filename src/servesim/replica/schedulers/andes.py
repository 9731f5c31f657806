"""Andes: QoE-aware preemptive scheduling for text streaming.

Liu et al., "Andes: Defining and Enhancing Quality-of-Experience in LLM-Based Text Streaming
Services" (arXiv 2404.16283); scheduling.md §5, following the reference scheduler (a vLLM v0
fork). Each request expects a token-delivery timeline (TTFT_exp, then TDS_exp tokens/s; QoE in
`metrics/sections/qoe.py`). Every `solver_interval` steps, when KV memory is contended
(utilisation >= `util_threshold`), Andes chooses which requests hold the GPU:
- value(r) = (Q_serve - Q_wait) * (1 + 0.5 if running): the QoE a request gains over the next
  `horizon_s` if served (at `token_latency_s` per token) rather than left waiting; weight(r) =
  its KV blocks; density = value / weight;
- preemption cap: the `sacrifice_percentile` slack (time a request can wait before its QoE
  drops: its next token's expected time minus now) divided by the swap cost of a mean
  request bounds how many running requests may be preempted this round (none below 1);
- candidates: the running requests with the lowest density, no denser than the best waiting
  one, up to the cap; a greedy knapsack over candidates + waiting + swapped by density, with
  the blocks the other running requests leave, stops at the first misfit;
- candidates not picked are swapped out (vLLM v0 swap: synchronous per-block copies); picked
  swapped requests are swapped in and picked waiting ones admitted, in density order.
Without contention, waiting requests are admitted by density and swapped ones come back.
Then the step runs as vLLM's token-budget loop: running requests first (on allocation
failure the latest running one is swapped out), then swap-ins and admissions (chunked).

Expected TTFT / TDS live in this scheduler's parameters with per-request overrides in
`Request.extra["qoe_ttft_s"]` / `extra["qoe_tds"]` (the QoE summary section reads the same).
Value is the reference code's form; the served-token count is capped at the expected count
(tokens ahead of the timeline are worth nothing). Slack is defined here (the reference code's
definition was not available) as the expected time of the request's next token minus now.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from heapq import merge
from itertools import chain
from typing import Iterable

from pydantic import Field

from servesim.metrics.sections.qoe import DEFAULT_TDS, DEFAULT_TTFT_S, targets
from servesim.replica.schedulers import register
from servesim.replica.schedulers.arrival_joins import admit_whole, whole_prompts
from servesim.replica.schedulers.andes_notes import LastTokenNotes
from servesim.replica.schedulers.andes_pending import SWAPPED, WAITING, PendingOrder, keeps_pace
from servesim.replica.schedulers.base import (
    NO_FAST_FORWARD, REPEAT_THROUGH, FastForward, SchedulerOutput, SchedulerParams,
)
from servesim.replica.schedulers.queues import DensityQueue
from servesim.replica.schedulers.vllm_steps import VLLMSteps
from servesim.workload.request import Request, RequestState


class AndesParams(SchedulerParams):
    ttft_exp_s: float = Field(DEFAULT_TTFT_S, gt=0.0)
    """Expected time to first token (s), unless the request sets `extra["qoe_ttft_s"]`."""
    tds_exp: float = Field(DEFAULT_TDS, gt=0.0)
    """Expected token delivery speed (tokens/s), unless the request sets `extra["qoe_tds"]`."""
    horizon_s: float = Field(10.0, gt=0.0)
    """Look-ahead of the value function (reference code: delta_t = 10)."""
    token_latency_s: float = Field(0.02, gt=0.0)
    """Assumed time per generated token of a served request (reference code: 0.02 s)."""
    util_threshold: float = Field(0.9, ge=0.0, le=1.0)
    """KV utilisation from which the knapsack runs (selective triggering; reference 0.9)."""
    sacrifice_percentile: float = Field(0.1, ge=0.0, lt=1.0)
    """Slack percentile that bounds preemptions per round (reference 0.1)."""
    unit_overhead_s: float = Field(3 / 90000, ge=0.0)
    """Swap overhead per token of a block (reference: 3/90000 * block_size s per block)."""
    solver_interval: int = Field(1, ge=1)
    """Steps between knapsack rounds (the older reference version: 5)."""


@register("andes")
class AndesScheduler(VLLMSteps):
    Params = AndesParams
    stable_decode_order = True  # (running order; it repeats only with nothing pending: no knapsack)
    may_swap = True  # (its running pass preempts by swap while the CPU tier has room)

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        # when each request last emitted, noted lazily for the running batch (`andes_notes.py`)
        self._notes = LastTokenNotes()
        self._last_token_s = self._notes.last_token_s  # (settled: what the QoE model reads)
        # (arrival, TTFT_exp, TDS_exp, 1 / TDS_exp) per held request: fixed for its lifetime,
        # read for every pending request at every step (`densities`, `slacks_s`)
        self._qoe: dict[Request, tuple[float, float, float, float]] = {}
        # the pending requests in density order, kept up to date by the hooks below
        self._pending = PendingOrder(self)
        self.waiting = DensityQueue()  # (admitted by density from anywhere in it)

    # ---- QoE model -------------------------------------------------------------------
    def _targets(self, req: Request) -> tuple[float, float]:
        return targets(req, self.params.ttft_exp_s, self.params.tds_exp)

    def value(self, req: Request, now_s: float, running: bool) -> float:
        p = self.params
        ttft, tds = self._targets(req)
        lat = 1.0 / tds
        t = now_s - req.arrival_s
        n = req.num_output_tokens
        exp_len = (t + p.horizon_s) / lat
        self._notes.settle(req)
        if n > 0 and keeps_pace(self._last_token_s.get(req.id, now_s), req.arrival_s, ttft, n, lat, p.token_latency_s):
            q_serve = 1.0
        else:
            served = min(n + p.horizon_s / p.token_latency_s, exp_len)
            q_serve = 1.0 - ((exp_len - served) / exp_len) ** 2
        if n == 0:
            q_wait = 1.0 if t + p.horizon_s <= ttft else 0.0
        else:
            q_wait = 1.0 - ((exp_len - min(n, exp_len)) / exp_len) ** 2
        return (q_serve - q_wait) * (1.5 if running else 1.0)

    def weight(self, req: Request) -> int:
        return round((req.prompt_len + req.num_output_tokens + 1) / self.kv.block_size + 0.5)

    def slack_s(self, req: Request, now_s: float) -> float:
        ttft, tds = self._targets(req)
        return req.arrival_s + ttft + req.num_output_tokens / tds - now_s

    # The same three, for many requests at once (the hot path: every pending request is valued
    # at every step). Each float operation is the one of `value`/`weight`/`slack_s`, in the
    # same order, so the results are identical; only the per-request overhead is gone.
    def _qoe_of(self, req: Request) -> tuple[float, float, float, float]:
        q = self._qoe.get(req)
        if q is None:
            ttft, tds = self._targets(req)
            q = self._qoe[req] = (req.arrival_s, ttft, tds, 1.0 / tds)
        return q

    def densities(self, reqs: list[Request], now_s: float, running: bool) -> list[float]:
        """`value(r, now_s, running) / weight(r)` for each of `reqs`."""
        p = self.params
        horizon, tok_lat = p.horizon_s, p.token_latency_s
        served_ahead = horizon / tok_lat
        boost = 1.5 if running else 1.0
        bs = self.kv.block_size
        if running:
            self._notes.settle_all(reqs)
        last_token, qoe, qoe_of = self._last_token_s, self._qoe, self._qoe_of
        out = []
        for req in reqs:
            arrival, ttft, _, lat = qoe.get(req) or qoe_of(req)
            t = now_s - arrival
            n = req.num_output_tokens
            exp_len = (t + horizon) / lat
            if n > 0 and last_token.get(req.id, now_s) - arrival < ttft + n * lat and tok_lat <= lat:  # (`keeps_pace`)
                q_serve = 1.0
            else:
                a = n + served_ahead
                q_serve = 1.0 - ((exp_len - (exp_len if exp_len < a else a)) / exp_len) ** 2
            if n == 0:
                q_wait = 1.0 if t + horizon <= ttft else 0.0
            else:
                q_wait = 1.0 - ((exp_len - (exp_len if exp_len < n else n)) / exp_len) ** 2
            out.append((q_serve - q_wait) * boost / round((req.prompt_len + n + 1) / bs + 0.5))
        return out

    def slacks_s(self, reqs: list[Request], now_s: float) -> list[float]:
        """`slack_s(r, now_s)` for each of `reqs`."""
        qoe, qoe_of = self._qoe, self._qoe_of
        out = []
        for req in reqs:
            arrival, ttft, tds, _ = qoe.get(req) or qoe_of(req)
            out.append(arrival + ttft + req.num_output_tokens / tds - now_s)
        return out

    # ---- the decision ------------------------------------------------------------------
    def schedule(self, now_s: float) -> SchedulerOutput:
        out = SchedulerOutput()
        kv = self.kv
        total = kv.num_gpu_blocks
        util = (total - max(0, kv.num_free_blocks - len(self.running))) / total
        solve = self.num_engine_steps % self.params.solver_interval == 0
        self._pending.refresh(now_s)
        evict, chosen = self.decide(now_s, solve and util >= self.params.util_threshold)
        for req in evict:
            self.evict(req, out, swap=True)
        num_evicted = len(out.swapped_out) + len(out.preempted)
        # the running pass evicts the latest admitted by swap (vLLM v0)
        budget = self.schedule_running(out, self.config.max_num_batched_tokens, swap=True)
        if len(out.swapped_out) + len(out.preempted) == num_evicted:  # swap-in only if nothing else was preempted
            self._bring_in(out, chosen, budget)
        return out

    def idle(self) -> bool:
        # Nothing runs, waits or is swapped, so nothing is pending: `schedule` would only drop
        # `_pending`'s leftovers (newcomers and time checks of requests no longer pending), which
        # every later refresh skips as it would now (it values only requests still pending).
        return (not self.running and not self.waiting and not self.swapped and not len(self._pending)
                and type(self).schedule is AndesScheduler.schedule)

    def decide(self, now_s: float, contended: bool) -> tuple[list[Request], Iterable[Request]]:
        """(running requests to swap out, pending requests to bring in, in that order): the
        knapsack when memory is `contended`, else every pending request by density."""
        if len(self._pending) and contended:
            return self._knapsack(now_s)
        return [], (e[3] for e in self._pending.order(now_s))

    def _max_preempt(self, now_s: float) -> tuple[int, list[int]]:
        """How many running requests this round may preempt (the `sacrifice_percentile` slack
        over the swap cost of a mean request), and the running requests' weights."""
        p = self.params
        running, pending = self.running, self._pending
        k = int(p.sacrifice_percentile * (len(running) + len(pending)))
        if p.unit_overhead_s >= 1e-200 and bisect_right(pending.slack_keys, now_s) > k:
            # k + 1 pending requests are past their next token's time: the k-th smallest
            # slack is <= 0, and so is the cap (the overhead is > 0), whatever runs
            return 0, []
        qoe, qoe_of = self._qoe, self._qoe_of
        run_keys = []  # `slacks_s` + now of the running requests
        for r in running:
            arrival, ttft, tds, _ = qoe.get(r) or qoe_of(r)
            run_keys.append(arrival + ttft + r.num_output_tokens / tds)
        run_keys.sort()
        threshold = pending.kth_slack_key(k, run_keys) - now_s  # the k-th smallest slack
        bs = self.kv.block_size
        run_weights = [round((r.prompt_len + r.num_output_tokens + 1) / bs + 0.5) for r in running]  # `weight`
        total_weight = sum(run_weights) + pending.total_weight
        overhead = p.unit_overhead_s * bs * total_weight / (len(running) + len(pending))
        return (math.floor(threshold / overhead) if overhead > 0 else len(running)), run_weights

    def _knapsack(self, now_s: float) -> tuple[list[Request], list[Request] | Iterable[Request]]:
        running = self.running
        max_preempt, run_weights = self._max_preempt(now_s)
        order = self._pending.order(now_s)
        if max_preempt < 1:  # no slack to sacrifice: admit what fits, preempt nothing
            return [], (e[3] for e in order)
        head = next(order)
        best = -head[0]
        run_dens = self.densities(running, now_s, True)
        idx = sorted((i for i, d in enumerate(run_dens) if d <= best), key=run_dens.__getitem__)[:max_preempt]
        cand = [(-run_dens[i], -1, j, running[i], run_weights[i]) for j, i in enumerate(idx)]
        in_cand = set(idx)
        capacity = self.kv.num_gpu_blocks - sum(w for i, w in enumerate(run_weights) if i not in in_cand)
        picked, chosen = set(), []
        # cand and pending by decreasing density, ties: candidates first, then queue order
        for _, group, _, r, w in merge(sorted(cand), chain((head,), order)):
            if w > capacity:
                break
            capacity -= w
            if group < 0:
                picked.add(r)
            else:
                chosen.append(r)
        return [c[3] for c in cand if c[3] not in picked], chosen

    def _bring_in(self, out: SchedulerOutput, chosen: list[Request], budget: int) -> None:
        for req in chosen:
            if budget <= 0 or len(self.running) >= self.config.max_num_seqs:
                return
            if req.state == RequestState.SWAPPED:
                if self.swap_in_room(req) < 0:
                    return
                budget -= self.resume(req, out, 1)
                continue
            left = self.admit(req, budget, out)
            if left is None:
                return
            budget = left

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        # One newcomer, nothing else pending: no knapsack while the KV use is under the
        # threshold (`join_blocks` keeps it there), so `admit` takes it whole, as vLLM's.
        if len(self.waiting) != 1 or len(self._pending) != 1:
            return None
        cfg = self.config
        return whole_prompts(self.waiting, len(self.running), num_running, cfg.max_num_seqs,
                             cfg.max_num_batched_tokens, lambda req, budget: self.first_chunk(req, 0, budget))

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        admit_whole(self, joins, out)

    def before_join(self) -> None:
        """What `schedule` sets before its admission, set by a join admitting in its place
        (`replica/keyed_join.py`): nothing (its pending order is refreshed per step, and only
        the request admitted leaves it: `start`)."""

    def joins_last(self, req: Request, now_s: float) -> bool:
        """Would waiting `req`, admitted into the stretch in flight by vLLM's calls, be what the
        next `schedule` does, and run after every running request in the later steps
        (`replica/keyed_join.py`)? While it is the only pending request (nothing swapped) and
        the knapsack does not run (`join_blocks` keeps the KV use under its threshold):
        `decide` then brings in only it, by `admit`; it joins `running` last, whose order the
        running pass keeps (`stable_decode_order`)."""
        return len(self._pending) == 1

    def join_blocks(self, joins: list[tuple[Request, int]]) -> tuple[int, int]:
        # free blocks keeping `schedule`'s util = (total - (free - running)) / total under the
        # threshold (2 blocks of margin for its floats)
        blocks, _ = super().join_blocks(joins)
        return blocks, math.ceil((1.0 - self.params.util_threshold) * self.kv.num_gpu_blocks) + len(self.running) + 2

    def on_step_end(self, output: SchedulerOutput, now_s: float) -> None:
        self._notes.note_step(output, now_s, self.num_engine_steps, self.running)

    # ---- pending membership (`PendingOrder`) ----------------------------------------
    def add_request(self, req: Request, now_s: float) -> None:
        super().add_request(req, now_s)
        self._pending.add(req, WAITING)

    def add_transferred(self, req: Request, now_s: float) -> None:
        super().add_transferred(req, now_s)
        self._notes.outputs[req.id] = req.num_output_tokens  # (its tokens here run it stale)

    def preempt(self, req: Request, out: SchedulerOutput) -> None:
        self._notes.settle(req)  # (its note leaves the batch with it)
        super().preempt(req, out)
        self._pending.add(req, WAITING, front=True)

    def swap_or_recompute(self, req: Request, out: SchedulerOutput, swap: bool, reuse_key=None) -> None:
        self._notes.settle(req)
        super().swap_or_recompute(req, out, swap, reuse_key)
        if req.state is RequestState.SWAPPED:  # (else `preempt` queued it)
            self._pending.add(req, SWAPPED)

    def start(self, req: Request, num_cached: int, num_tokens: int, out: SchedulerOutput) -> None:
        # admitted (by `admit`, a join, or a keyed join's vLLM calls): it is no longer pending
        super().start(req, num_cached, num_tokens, out)
        self._pending.remove(req)

    def resume(self, req: Request, out: SchedulerOutput, num_tokens: int, keep_cpu_copy: bool = False) -> int:
        self._pending.remove(req)
        return super().resume(req, out, num_tokens, keep_cpu_copy)

    def drain(self, now_s: float) -> list[Request]:
        # (the notes are not settled: the requests leave this scheduler for good, and after a
        # crash, whose settled stretch tells the policy no step ends, they could not be)
        self._pending.clear()
        return super().drain(now_s)

    def forget(self, req: Request) -> None:
        self._notes.forget(req.id)
        self._qoe.pop(req, None)
        self._pending.remove(req)

    # (Its own tables only, so `finish_all`'s one pass would be exact, but it is not named
    # `batch_free_forget`: at azure-conv-10x the pass's set lookup per running request cost
    # more than the `remove` scans it saves, +0.5 % of the instructions (bff23).)

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        # Nothing waits or is swapped out: no knapsack or admission can change the batch, and
        # a finish admits nobody (prompts done this step decode with the rest).
        return REPEAT_THROUGH if self.nothing_pending(output) else NO_FAST_FORWARD

