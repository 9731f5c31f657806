"""FastSwitch: fairness-driven preemptive scheduling with cheap KV context switches.

Shen, Li, Gao, "FastSwitch: Optimizing Context Switching Efficiency in Fairness-aware LLM
Serving" (arXiv 2411.18424), scheduling.md §4.2. The policy is a preemptive priority
scheduler whose priorities follow fairness: every `priority_update_interval` scheduling steps
the priority of each request is refreshed from its tenant's Virtual Token Counter (weighted
service: `input_price` per prompt token computed, `output_price` per generated token; a
tenant that returns from idle is lifted to the smallest active counter, as in VTC). Each step
walks running, swapped and waiting requests in priority order (tenant counter, then arrival)
and serves them while the token budget, `max_num_seqs` and KV blocks allow; when a request
does not fit, running requests of lower priority are swapped out to make room.

What the paper is about is the cost of those switches; three mechanisms, each a parameter so
that they can be switched off one by one (all off = vLLM v0 swapping):
1. block groups: KV is allocated in runs of contiguous blocks, so a swap copies whole groups
   (`block_group_size` blocks per copy and layer) instead of one 16-token block per copy;
2. asynchronous swaps overlapped with compute (`overlap_swap`): the step does not wait; a
   swapped-in request is scheduled once its copy is done;
3. KV reuse (`reuse_cpu_kv`): a request keeps its CPU copy after a swap-in, and a finished
   turn's copy is kept for its conversation (session or program), so the next swap-out moves
   only the blocks computed since. CPU copies are reclaimed oldest first when room is needed.
The paper's group-size policy is dynamic (split/merge); here every request's blocks form
groups of `block_group_size` (an upper bound on contiguity). Blocks being swapped out are
reusable at once (the paper waits for the copy): a simplification.
"""

from __future__ import annotations

from pydantic import Field

from servesim.replica.schedulers import register
from servesim.replica.schedulers.base import Scheduler, SchedulerOutput, SchedulerParams
from servesim.replica.swap import SwapMechanics
from servesim.workload.request import Request, RequestState


class FastSwitchParams(SchedulerParams):
    priority_update_interval: int = Field(100, ge=1)
    """Scheduling steps between priority refreshes (the paper varies this frequency; 100 is
    an assumption, TODO(verify))."""
    input_price: float = Field(1.0, ge=0.0)
    """Counter weight of a prompt token (VTC w_p)."""
    output_price: float = Field(2.0, ge=0.0)
    """Counter weight of a generated token (VTC w_q)."""
    block_group_size: int = Field(32, ge=1)
    """Blocks per contiguous group, i.e. per swap copy (the paper: dynamic, up to tens)."""
    overlap_swap: bool = True
    """Run swaps asynchronously, overlapped with compute (False: the step waits, vLLM v0)."""
    reuse_cpu_kv: bool = True
    """Keep CPU copies across swap-ins and turns; swap out only what is new."""


def context_key(req: Request):
    """The conversation a request continues (its KV prefix is the previous turn's), if any."""
    if req.session_id is not None:
        return ("session", req.session_id)
    if req.program_id is not None:
        return ("program", req.program_id)
    return None


@register("fastswitch")
class FastSwitchScheduler(Scheduler):
    Params = FastSwitchParams

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self.swap_mechanics = SwapMechanics(blocks_per_copy=params.block_group_size, overlap=params.overlap_swap)
        self.counters: dict[str, float] = {}  # tenant -> weighted service (live)
        self._snapshot: dict[str, float] = {}  # tenant -> counter at the last refresh
        self._served: dict[int, tuple[int, int]] = {}  # req id -> (prompt tokens, outputs) counted
        self._snap_step = -1  # engine step at whose start the snapshot was taken
        self._sched_step = 0

    # ---- fairness bookkeeping ------------------------------------------------------
    def add_request(self, req: Request, now_s: float) -> None:
        active = {r.tenant for r in self.unfinished()}
        if req.tenant not in active:  # VTC lift: a returning tenant starts at the active minimum
            floor = min((self.counters.get(t, 0.0) for t in active), default=0.0)
            self.counters[req.tenant] = max(self.counters.get(req.tenant, 0.0), floor)
        super().add_request(req, now_s)

    def on_step_end(self, output: SchedulerOutput, now_s: float) -> None:
        p = self.params
        start, k = self._sched_step, self.num_engine_steps - self._sched_step
        last_refresh = (start + k - 1) // p.priority_update_interval * p.priority_update_interval
        if k > 1 and last_refresh > start:
            # A fast-forwarded stretch of k identical decode steps crossed a refresh step:
            # snapshot the counters as they were at its start, exactly as stepping would.
            snap = dict(self.counters)
            for req, _ in output.scheduled:
                snap[req.tenant] = snap.get(req.tenant, 0.0) + p.output_price * (last_refresh - start)
            self._snapshot, self._snap_step = snap, last_refresh
        for req, _ in output.scheduled:
            prompt_done = min(req.num_computed_tokens, req.prompt_len)
            old_in, old_out = self._served.get(req.id, (0, 0))
            new_in = max(old_in, prompt_done)
            delta = p.input_price * (new_in - old_in) + p.output_price * (req.num_output_tokens - old_out)
            if delta:
                self.counters[req.tenant] = self.counters.get(req.tenant, 0.0) + delta
            self._served[req.id] = (new_in, req.num_output_tokens)

    def _key(self, req: Request) -> tuple:
        t = req.tenant
        return (self._snapshot.get(t, self.counters.get(t, 0.0)), req.arrival_s, req.id)

    # ---- the decision ----------------------------------------------------------------
    def schedule(self, now_s: float) -> SchedulerOutput:
        step = self.num_engine_steps
        if step % self.params.priority_update_interval == 0 and step != self._snap_step:
            self._snapshot = dict(self.counters)
            self._snap_step = step
        self._sched_step = step
        out = SchedulerOutput()
        cfg = self.config
        budget = cfg.max_num_batched_tokens
        order = sorted([*self.running, *self.swapped, *self.waiting], key=self._key)
        rank = {r.id: i for i, r in enumerate(order)}
        swapped_now: set[int] = set()
        admitting = True  # new and swapped requests join in priority order until one does not fit
        for i, req in enumerate(order):
            if req.id in swapped_now:
                continue
            if req.state == RequestState.RUNNING:
                if budget <= 0 or not self.is_swap_ready(req, now_s):
                    continue  # no budget left, or its swap-in is still in flight
                n = min(req.num_tokens - req.num_computed_tokens, budget,
                        cfg.max_model_len - 1 - req.num_computed_tokens)
                if n <= 0:
                    continue
                if not self._fit(lambda: self.kv.allocate_slots(req, n), rank, i, out, swapped_now):
                    self._evict(req, out, swapped_now)  # nothing of lower priority left: itself
                    continue
                out.scheduled.append((req, n))
                budget -= n
                continue
            if not admitting or len(self.running) >= cfg.max_num_seqs:
                admitting = False
                continue
            if req.state == RequestState.SWAPPED:
                need = self.kv.num_cpu_blocks_of(req.id) + 1
                if not self._fit(lambda: self.kv.num_free_blocks >= need, rank, i, out, swapped_now):
                    admitting = False
                    continue
                self.swapped.remove(req)
                self.swap_in(req, out, keep_cpu_copy=self.params.reuse_cpu_kv)
                self.running.append(req)
                if not self.swap_mechanics.overlap and budget > 0:  # a sync copy is done before the step
                    self.kv.allocate_slots(req, 1)
                    out.scheduled.append((req, 1))
                    budget -= 1
                elif self.swap_mechanics.overlap:
                    self.swap_ready_s[req.id] = float("inf")  # the engine sets the copy's end
            elif budget > 0 and self._admit(req, budget, rank, i, out, swapped_now):
                budget -= out.scheduled[-1][1]
            else:
                admitting = False
        return out

    def _admit(self, req, budget, rank, i, out, swapped_now) -> bool:
        kv = self.kv
        hits = kv.get_computed_blocks(req)
        num_cached = len(hits) * kv.block_size
        n = req.num_tokens - num_cached
        if not self.config.enable_chunked_prefill and n > budget:
            return False
        n = min(n, budget)
        if not self._fit(lambda: kv.allocate_slots(req, n, hits), rank, i, out, swapped_now):
            return False
        self.waiting.remove(req)
        self.start(req, num_cached, n, out)
        return True

    def _fit(self, try_allocate, rank, i, out, swapped_now) -> bool:
        """Run `try_allocate`, swapping out lower-priority running requests until it succeeds."""
        while not try_allocate():
            victims = [r for r in self.running if rank.get(r.id, -1) > i]
            if not victims:
                return False
            self._evict(max(victims, key=lambda r: rank[r.id]), out, swapped_now)
        return True

    def _evict(self, victim: Request, out: SchedulerOutput, swapped_now: set[int]) -> None:
        """Swap a running request out (recompute if the CPU tier is full)."""
        self.running.remove(victim)
        self.swap_ready_s.pop(victim.id, None)
        for j, (r, _) in enumerate(out.scheduled):
            if r is victim:  # cannot happen for lower-priority victims; kept as a guard
                del out.scheduled[j]
                break
        swapped_now.add(victim.id)
        if self.swap_out(victim, out, context_key(victim) if self.params.reuse_cpu_kv else None):
            self.swapped.append(victim)
        else:
            self.preempt(victim, out)

    def finish(self, req: Request, now_s: float) -> None:
        super().finish(req, now_s)
        self._served.pop(req.id, None)
        key = context_key(req) if self.params.reuse_cpu_kv else None
        if key is not None:  # keep the turn's CPU copy for the conversation's next turn
            self.kv.retain_cpu_copy(req.id, key, (req.prompt_len + req.output_len) // self.kv.block_size)
        else:
            self.kv.free_cpu(req.id)

    def is_steady(self, output: SchedulerOutput) -> bool:
        # With nothing waiting or swapped, priority refreshes change nothing: the same
        # requests decode until one finishes or arrives.
        return (not self.waiting and not self.swapped and not output.swapped_in and not output.swapped_out
                and not output.preempted and not self.swap_ready_s and len(output.scheduled) == len(self.running))
