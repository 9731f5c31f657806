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
from servesim.replica.schedulers.arrival_joins import admit_whole, is_fresh, whole_prompts
from servesim.replica.schedulers.andes_pending import SWAPPED, WAITING, PendingOrder
from servesim.replica.schedulers.base import (
    NO_FAST_FORWARD, REPEAT_THROUGH, FastForward, SchedulerOutput, SchedulerParams,
)
from servesim.replica.schedulers.outputs import EACH_STEP
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

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self._last_token_s: dict[int, float] = {}
        self._outputs: dict[int, int] = {}
        # (arrival, TTFT_exp, TDS_exp, 1 / TDS_exp) per held request: fixed for its lifetime,
        # read for every pending request at every step (`densities`, `slacks_s`)
        self._qoe: dict[Request, tuple[float, float, float, float]] = {}
        # the pending requests in density order, kept up to date by the hooks below
        self._pending = PendingOrder(self)
        # did the last `schedule` leave requests pending, the preemption cap 0 by `_no_slack`?
        # Then the only stretch planned from it is decided step by step (`fast_forward`), and
        # an arrival is valued at the next step
        self._each_step = False
        self._no_slack_seen = False  # (in the last `schedule`)
        # what the last `finish_admits_at` left for the steps after it until the next finish:
        # (time, free blocks at most, token budget, sequence slots, requests running), and
        # whether its choice holds until then (`finish_holds`)
        self._span: tuple[float, int, int, int, int] | None = None
        self._holds = False

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
        last = self._last_token_s.get(req.id, now_s) - req.arrival_s
        if n > 0 and last < ttft + n * lat and p.token_latency_s <= lat:
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
        last_token, qoe, qoe_of = self._last_token_s, self._qoe, self._qoe_of
        out = []
        for req in reqs:
            arrival, ttft, _, lat = qoe.get(req) or qoe_of(req)
            t = now_s - arrival
            n = req.num_output_tokens
            exp_len = (t + horizon) / lat
            if n > 0 and last_token.get(req.id, now_s) - arrival < ttft + n * lat and tok_lat <= lat:
                q_serve = 1.0
            else:
                q_serve = 1.0 - ((exp_len - min(n + served_ahead, exp_len)) / exp_len) ** 2
            if n == 0:
                q_wait = 1.0 if t + horizon <= ttft else 0.0
            else:
                q_wait = 1.0 - ((exp_len - min(n, exp_len)) / exp_len) ** 2
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
        solve = self.num_engine_steps % self.params.solver_interval == 0
        self._pending.refresh(now_s)
        self._no_slack_seen = False
        evict, chosen = self.decide(now_s, solve and self._contended(self.kv.num_free_blocks, len(self.running)))
        for req in evict:
            self.evict(req, out, swap=True)
        num_evicted = len(out.swapped_out) + len(out.preempted)
        # the running pass evicts the latest admitted by swap (vLLM v0)
        budget = self.schedule_running(out, self.config.max_num_batched_tokens, swap=True)
        if len(out.swapped_out) + len(out.preempted) == num_evicted:  # swap-in only if nothing else was preempted
            self._bring_in(out, chosen, budget)
        # (only after a step that `_no_slack` decided, as the next ones most likely are: else the
        # first boundary would most likely end the stretch)
        self._each_step = self._no_slack_seen and len(self._pending) > 0
        self._holds = False  # (until a stretch planned from this step says so at a boundary)
        return out

    def _contended(self, free_blocks: int, num_running: int) -> bool:
        """Is KV memory contended (utilisation at the threshold), `free_blocks` free as the step
        starts, `num_running` running?"""
        total = self.kv.num_gpu_blocks
        return (total - max(0, free_blocks - num_running)) / total >= self.params.util_threshold

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
        if self._no_slack(k, now_s):
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

    def _no_slack(self, k: int, now_s: float) -> bool:
        """Are k + 1 pending requests past their next token's time? Then the k-th smallest
        slack is <= 0, and so is the preemption cap (the overhead is > 0), whatever runs."""
        return self.params.unit_overhead_s >= 1e-200 and bisect_right(self._pending.slack_keys, now_s) > k

    def _knapsack(self, now_s: float) -> tuple[list[Request], list[Request] | Iterable[Request]]:
        running = self.running
        max_preempt, run_weights = self._max_preempt(now_s)
        order = self._pending.order(now_s)
        if max_preempt < 1:  # no slack to sacrifice: admit what fits, preempt nothing
            self._no_slack_seen = not run_weights  # (`_no_slack` decided it: no pass over the batch)
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

    def join_blocks(self, joins: list[tuple[Request, int]]) -> tuple[int, int]:
        # free blocks keeping `schedule`'s util = (total - (free - running)) / total under the
        # threshold (2 blocks of margin for its floats)
        blocks, _ = super().join_blocks(joins)
        return blocks, math.ceil((1.0 - self.params.util_threshold) * self.kv.num_gpu_blocks) + len(self.running) + 2

    def on_step_end(self, output: SchedulerOutput, now_s: float) -> None:
        outputs, last_token, running = self._outputs, self._last_token_s, RequestState.RUNNING
        for req, _ in output.scheduled:
            n = req.num_output_tokens
            if outputs.get(req.id, 0) != n and req.state is running:
                outputs[req.id] = n
                last_token[req.id] = now_s

    # ---- pending membership (`PendingOrder`) ----------------------------------------
    def add_request(self, req: Request, now_s: float) -> None:
        super().add_request(req, now_s)
        self._pending.add(req, WAITING)

    def preempt(self, req: Request, out: SchedulerOutput) -> None:
        super().preempt(req, out)
        self._pending.add(req, WAITING, front=True)

    def swap_or_recompute(self, req: Request, out: SchedulerOutput, swap: bool, reuse_key=None) -> None:
        super().swap_or_recompute(req, out, swap, reuse_key)
        if req.state is RequestState.SWAPPED:  # (else `preempt` queued it)
            self._pending.add(req, SWAPPED)

    def admit(self, req: Request, budget: int, out: SchedulerOutput, make_room=None) -> int | None:
        left = super().admit(req, budget, out, make_room)
        if left is not None:
            self._pending.remove(req)
        return left

    def resume(self, req: Request, out: SchedulerOutput, num_tokens: int, keep_cpu_copy: bool = False) -> int:
        self._pending.remove(req)
        return super().resume(req, out, num_tokens, keep_cpu_copy)

    def drain(self, now_s: float) -> list[Request]:
        self._pending.clear()
        return super().drain(now_s)

    def forget(self, req: Request) -> None:
        self._outputs.pop(req.id, None)
        self._last_token_s.pop(req.id, None)
        self._qoe.pop(req, None)
        self._pending.remove(req)

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        # Nothing waits or is swapped out: no knapsack or admission can change the batch, and
        # a finish admits nobody (prompts done this step decode with the rest). Else, after a
        # step that evicted and swapped in nothing, the densities move with time: each next
        # step is decided at its start (`finish_admits_at`), inside an admission stretch.
        if self.nothing_pending(output):
            return REPEAT_THROUGH
        if (self._each_step and self.finish_admission() and len(output.scheduled) == len(self.running)
                and not (output.preempted or output.swapped_out or output.swapped_in)):
            return EACH_STEP
        return NO_FAST_FORWARD

    def finish_admission(self) -> bool:
        return self.params.solver_interval == 1  # (every step solves: no step count to follow)

    def finish_admits_at(self, now_s: float, num_running: int, free_blocks: int, num_held: int,
                         free_at_start: int) -> list[tuple[Request, int]] | None:
        # `schedule` at `now_s` with `num_held` decodes (and a prompt's rest) running: the
        # knapsack's preemption cap is 0 without a pass over the batch (`_no_slack`), or memory
        # is not contended, so `decide` evicts nothing and `_bring_in` takes the pending requests
        # by density until one does not fit; a swap-in or a recompute is left to stepping
        pending = self._pending
        pending.refresh(now_s)
        self._span, self._holds = None, False
        if (len(pending) and self._contended(free_at_start, num_held)
                and not self._no_slack(int(self.params.sacrifice_percentile * (num_held + len(pending))), now_s)):
            return None
        cfg, kv = self.config, self.kv
        budget, room = cfg.max_num_batched_tokens - num_running, cfg.max_num_seqs - num_held
        joins: list[tuple[Request, int]] = []
        for e in pending.order(now_s):
            req = e[3]
            if budget <= 0 or len(joins) >= room:
                break
            if req.state is RequestState.SWAPPED:
                if free_blocks - kv.num_cpu_blocks_of(req.id) - 1 >= 0:  # (`swap_in_room`)
                    return None
                break
            if not is_fresh(req):
                return None
            n = self.first_chunk(req, 0, budget)
            need = -(-n // kv.block_size)
            if n <= 0 or need > free_blocks:
                break  # it waits (`admit` fails), and so do the requests after it
            joins.append((req, n))
            if n != req.num_tokens:
                if n != budget:
                    return None  # a chunk with budget left (the long-prefill cap): not this stretch's
                break  # a first chunk spends the budget: its rest runs first next step
            budget -= n
            free_blocks -= need
        num_held += len(joins)
        self._span = (now_s, free_blocks, cfg.max_num_batched_tokens - num_held, cfg.max_num_seqs - num_held, num_held)
        return joins

    def finish_holds(self) -> bool:
        # After the last answer's admissions, with no slack (a count of pending requests past
        # their time, which only grows with time) no step evicts, and if the smallest pending
        # request does not fit the blocks free now (which only fall until a finish) nothing
        # comes in, whatever the order the densities take
        self._holds = self._span is not None and self._none_fit(0)
        return self._holds

    def _none_fit(self, num_new: int, tokens: int | None = None) -> bool:
        """With `num_new` more pending requests (a newcomer of `tokens` tokens), would no step
        until the next finish evict or bring in any (see `finish_holds`)?"""
        now_s, free, budget, room, held = self._span
        pending = self._pending
        if pending.num_keyed or not self._no_slack(
                int(self.params.sacrifice_percentile * (held + len(pending) + num_new)), now_s):
            return False
        if budget <= 0 or room <= 0:
            return True  # (`_bring_in` stops before any request)
        waiting, swapped = pending.sizes
        if swapped and swapped[0] + 1 <= free:
            return False
        smallest = min(waiting[0], tokens) if waiting and tokens is not None else (
            waiting[0] if waiting else tokens)
        if smallest is None:
            return True
        _, _, threshold, chunked = self.limits  # (`first_chunk`, from the size alone)
        n = threshold if 0 < threshold < smallest else smallest
        return (not chunked and n > budget) or -(-min(n, budget) // self.kv.block_size) > free

    def admit_at_finish(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        for req, n in joins:  # (`admit` from a budget of its chunk: `first_chunk` gives it n)
            if self.admit(req, n, out) is None:
                raise AssertionError(f"request {req.id} could not be admitted at a finish")

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        # the stretch in flight after a `schedule` that left requests pending is decided at each
        # step's start (`fast_forward`), which values a newcomer as that `schedule` would; from
        # a boundary whose choice holds until the next finish, only if it would not come in either
        if not (self._each_step and self.finish_admission()):
            return False
        return req is None or not self._holds or (not req.kv_block_keys and self._none_fit(1, req.num_tokens))

