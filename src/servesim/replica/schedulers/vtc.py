"""VTC, the Virtual Token Counter fair scheduler (Sheng et al., OSDI'24).

Follows the VTC artifact (`slora/server/router/vtc_req_queue.py` and `manager.py`) on its
LightLLM-style router:
- each tenant u has a counter c_u of the weighted service it received and a FIFO queue;
- when u becomes backlogged (its queue was empty), its counter is *lifted* to the smallest
  counter of the other backlogged tenants, so an idle tenant cannot bank credit;
- admission: repeatedly take the head request of the backlogged tenant with the smallest
  counter while it passes the memory check and the mini-batch has room for its prompt
  (`batch_max_tokens`); the first one that does not fit stops admission (no skipping);
  admitting charges `c_u += input_price * prompt / weight_u`;
- every decode step charges `c_u += output_price / weight_u` per running request of u (per
  token: with speculative decoding a step emits 1 + the accepted drafts);
- a new prefill mini-batch is formed when nothing runs, or after `max_wait_tokens`
  consecutive decode steps; it runs alone (decodes wait), whole prompts, then joins the
  running batch;
- memory check: LightLLM's future peak — with running requests sorted by remaining output
  descending, `max_k (remaining_k * k + sum of the first k contexts)` must fit in the KV cache,
  so requests never need preemption (the peak is checked in blocks of the engine's block size).

`variant: lcf` (least counter first without the lift) and `variant: fcfs` (arrival order) are
the artifact's baselines on the same router.
"""

from __future__ import annotations

from collections import deque
from functools import reduce
from itertools import chain, repeat
from operator import add
from typing import Annotated, Literal

import numpy as np

from pydantic import Field

from servesim.replica.kv_cache import cdiv
from servesim.replica.schedulers import register
from servesim.replica.schedulers.base import Scheduler, SchedulerOutput, SchedulerParams
from servesim.replica.schedulers.outputs import one_token_each
from servesim.replica.schedulers.vtc_peak import FewPeakItems, PeakItems, peak_items
from servesim.replica.schedulers.vtc_stretches import VTCStretches
from servesim.workload.request import Request, RequestState


class VTCParams(SchedulerParams):
    variant: Literal["vtc", "lcf", "fcfs"] = "vtc"
    """`vtc` (counters with lift), `lcf` (least counter first, no lift) or `fcfs`."""
    input_price: float = Field(1.0, ge=0.0)
    """w_p: service charged per prompt token (VTC default 1)."""
    output_price: float = Field(2.0, ge=0.0)
    """w_q: service charged per generated token (VTC default 2)."""
    tenant_weights: dict[str, Annotated[float, Field(gt=0)]] = {}
    """Weight per tenant (default 1): a tenant with weight 2 is entitled to twice the service."""
    max_wait_tokens: int = Field(10, ge=1)
    """Decode steps between two admission opportunities while requests run (LightLLM 10)."""
    batch_max_tokens: int | None = Field(None, ge=1)
    """Prompt tokens of one prefill mini-batch. Unset: max(KV tokens / 6, 3072) (LightLLM)."""
    reserve: Literal["output_len", "max_tokens"] = "output_len"
    """Output length the future-peak memory check reserves: `output_len` (the artifact's
    benchmarks set max_new_tokens to the generated length) or the request's `max_tokens`
    (else `max_model_len` - prompt)."""


class TenantQueues:
    """Per-tenant FIFO queues behind the scheduler's `waiting` interface."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[Request]] = {}
        self._n = 0

    def append(self, req: Request) -> None:
        self.queues.setdefault(req.tenant, deque()).append(req)
        self._n += 1

    def prepend(self, req: Request) -> None:
        self.queues.setdefault(req.tenant, deque()).appendleft(req)
        self._n += 1

    def pop_from(self, tenant: str) -> Request:
        self._n -= 1
        return self.queues[tenant].popleft()

    def remove(self, req: Request) -> None:
        self.queues[req.tenant].remove(req)
        self._n -= 1

    def clear(self) -> None:
        for q in self.queues.values():
            q.clear()
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def __iter__(self):
        # (a C-level iterator, not a generator: `keyed_join.with_keys` reads the first waiting
        # request at every stretch end with one waiting, since vtc's keyed joins are on)
        return chain.from_iterable(self.queues.values())


@register("vtc")
class VTCScheduler(VTCStretches, Scheduler):
    Params = VTCParams
    stable_decode_order = True  # (decodes in admission order, whatever the counters)
    looks_up_prefixes = False  # (every prompt computed in full: `Scheduler.looks_up_prefixes`)

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self.waiting = TenantQueues()
        self.counters: dict[str, float] = {}
        self._decode_steps = 0
        # engine steps before this decision's first decode step (None: nothing to count); with
        # speculative decoding also each scheduled request's output tokens then, because a
        # step emits 1 + its accepted drafts and the counters charge tokens, not steps
        self._mark: int | None = None
        self._tokens_before: list[int] | None = None
        self._speculative = config.num_speculative_tokens > 0
        capacity = kv.num_gpu_blocks * kv.block_size
        self.batch_max_tokens = params.batch_max_tokens or max(capacity // 6, 3072)
        self._init_stretches()

    def weight(self, tenant: str) -> float:
        return self.params.tenant_weights.get(tenant, 1.0)

    # ------------------------------------------------------------------ arrivals
    def add_request(self, req: Request, now_s: float) -> None:
        u = req.tenant
        queue = self.waiting.queues.get(u)
        counters = self.counters
        counters.setdefault(u, 0.0)
        if not queue and self.params.variant == "vtc":
            others = [v for v, q in self.waiting.queues.items() if q and v != u]
            if others:
                if self._arriving is req:
                    self._lifts.append((u, others))  # while a stretch runs: lifted at its end (`vtc_stretches.py`)
                else:
                    counters[u] = max(counters[u], min(counters[v] for v in others))  # the counter lift
        self._arriving = None
        self.waiting.append(req)

    def add_transferred(self, req: Request, now_s: float) -> None:
        # A request whose prefill ran on another replica joins the running batch directly:
        # its tenant gets a counter, as an arrival's does, since its decodes are charged to it.
        # No lift: the lift is for a tenant whose queue turns non-empty, and this one never
        # queues here.
        self.counters.setdefault(req.tenant, 0.0)
        super().add_transferred(req, now_s)

    # ------------------------------------------------------------------ the decision
    def idle(self) -> bool:
        # Nothing runs or waits: `schedule` would only forget the last decision (`_mark`, `_left`),
        # which is read only at the end of a step, after the next `schedule` has forgotten it.
        return (not self.running and not self.waiting and not self.swapped
                and type(self).schedule is VTCScheduler.schedule)

    def schedule(self, now_s: float) -> SchedulerOutput:
        out = SchedulerOutput()
        self._mark = None
        self._left.clear()
        if self.waiting and (not self.running or self._decode_steps >= self.params.max_wait_tokens):
            self._prefill_mini_batch(out)
            if out.scheduled:
                self._decode_steps = 0
                # whole prompts: the first request emits a token now (not a decode step, not
                # charged) and one per decode step after (charged, when fast-forwarded)
                self._mark_decodes(out, 1)
                return out
        # A decode step for every running request, in admission order. The leading ones that
        # decode and fit take their token in one call (`allocate_leading_decodes`: the same as
        # `allocate_slots(req, 1)` for each in order), again after a preemption.
        running, kv = self.running, self.kv
        i = out.num_known_decodes = kv.allocate_leading_decodes(running)  # (the engine's hint: decodes)
        out.known_decodes = known = running[:i]
        out.scheduled = one_token_each(known)
        while i < len(running):
            req = running[i]
            preempted = False
            while not kv.allocate_slots(req, 1):  # only if the peak check was too loose
                victim = running.pop()  # the last admitted: it has not been scheduled yet
                self.preempt(victim, out)
                preempted = True
                if victim is req:
                    break
            else:
                out.scheduled.append((req, 1))
            i += 1  # (a preempted request left the end of `running`: it is not visited)
            # Only after a preemption (its blocks may let the rest fit): a bulk call that failed
            # for another reason (a block key another request registered) would fail again,
            # and retrying after every request would scan the batch once per request.
            if preempted and (k := kv.allocate_leading_decodes(running[i:])) > 0:
                out.scheduled += one_token_each(running[i:i + k])
                i += k
        if out.scheduled:
            self._mark_decodes(out, 0)
        return out

    def _mark_decodes(self, out: SchedulerOutput, prefill: int) -> None:
        """Count the decode steps (and tokens) that follow this decision; `prefill`: 1 when
        this step prefills (its first token is not a decode step and is not charged)."""
        self._mark = self.num_engine_steps + prefill
        if self._speculative:
            self._tokens_before = [req.num_output_tokens + prefill for req, _ in out.scheduled]

    def _prefill_mini_batch(self, out: SchedulerOutput) -> None:
        queues = self.waiting.queues
        batch_tokens = 0
        admitted: list[Request] = []
        # The future peak is at most the sum of every running request's context plus rest (its
        # prompt plus its reserved output: the bound in `vtc_peak`'s docstring), so while that
        # sum and the candidate's fit, the exact check would pass: below overload it always does,
        # and the sorted items are built (kept as requests join) only once a candidate needs them.
        bound, items = self._reserved_sum(), None
        block_size, num_blocks = self.kv.block_size, self.kv.num_gpu_blocks
        while len(self.running) < self.config.max_num_seqs:
            backlogged = [u for u, q in queues.items() if q]
            if not backlogged:
                break
            u = self._next_tenant(backlogged)
            req = queues[u][0]
            n = req.num_tokens
            if admitted and batch_tokens + n > self.batch_max_tokens:
                break  # no skipping: the chosen request waits for room
            grown = bound + req.prompt_len + self._max_new(req)
            if cdiv(grown, block_size) + len(self.running) > num_blocks:  # (the bound does not settle it)
                if items is None:
                    items = peak_items(*self._items())
                if not self._fits(req, items):
                    break
            if not self._admit(req, n, out):
                break  # (the check counts the running requests' blocks only: some are held for a
                # request whose KV is on its way here, a migration's. It waits, as for room)
            bound = grown
            if items is not None:
                items.add(req.num_tokens, self._max_new(req) - req.num_output_tokens)
            admitted.append(req)
            batch_tokens += n

    def _next_tenant(self, backlogged: list[str]) -> str:
        """The backlogged tenant whose queue's head is admitted next: the least counter (or
        the earliest head, `fcfs`)."""
        queues = self.waiting.queues
        if self.params.variant == "fcfs":
            return min(backlogged, key=lambda v: (queues[v][0].arrival_s, queues[v][0].id))
        return min(backlogged, key=self.counters.__getitem__)

    def waiting_head(self) -> Request:
        queues = self.waiting.queues
        return queues[self._next_tenant([u for u, q in queues.items() if q])][0]

    def _admit(self, req: Request, n: int, out: SchedulerOutput) -> bool:
        """Admit the head `req` of its tenant's queue with its `n` tokens, charging its prompt;
        False, changing nothing, if its blocks are not free."""
        if not self.kv.allocate_slots(req, n):
            return False
        u = req.tenant
        self.waiting.pop_from(u)
        self.running.append(req)
        req.state = RequestState.RUNNING
        out.scheduled.append((req, n))
        self.counters[u] += self.params.input_price * req.prompt_len / self.weight(u)
        return True

    def _max_new(self, req: Request) -> int:
        if self.params.reserve == "output_len":
            return req.output_len
        return req.max_tokens or self.config.max_model_len - req.prompt_len

    def _reserved_sum(self) -> int:
        """Sum over the running requests of context plus remaining output as `_items` gives them
        (each one's prompt plus its reserved output, whatever it has generated)."""
        running = self.running
        if self.params.reserve == "output_len":  # (`_max_new` inlined, as in `_items`)
            return sum([r.prompt_len + r.output_len for r in running])
        max_new = self._max_new
        return sum([r.prompt_len + max_new(r) for r in running])

    def _items(self) -> tuple[list[int], list[int]]:
        """(contexts, remaining outputs) of the running requests, for `_fits`."""
        running = self.running
        if self.params.reserve == "output_len":  # (`_max_new` inlined: a pass over the batch per mini-batch)
            return [r.num_tokens for r in running], [r.output_len - r.num_output_tokens for r in running]
        max_new = self._max_new
        return [r.num_tokens for r in running], [max_new(r) - r.num_output_tokens for r in running]

    def _fits(self, new: Request, items: PeakItems | FewPeakItems | None = None) -> bool:
        """LightLLM's future-peak check, in blocks (each request may waste part of one);
        `items`: the running requests' (`_items()`), when the caller keeps them."""
        if items is None:
            items = peak_items(*self._items())
        peak = items.peak_with(new.num_tokens + 1, self._max_new(new) - new.num_output_tokens - 1)
        return cdiv(peak, self.kv.block_size) + len(items) <= self.kv.num_gpu_blocks

    # ------------------------------------------------------------------ bookkeeping
    def on_step_end(self, output: SchedulerOutput, now_s: float) -> None:
        if self._joined:  # arrivals joined the stretch as prompt-only steps (`vtc_stretches.py`)
            self._charge_joined(output)
            return
        steps = self.num_engine_steps - self._mark if self._mark is not None else 0  # > 1: fast-forwarded
        if steps <= 0:  # nothing decoded (a prefill mini-batch alone)
            self._lift_arrivals()
            return
        self._decode_steps += steps
        if self._tokens_before is None:  # one token per request and step
            self._charge_stretch(output, steps)
            return
        self._charge_tokens(output, steps)

    def _charge(self, output: SchedulerOutput, steps: int) -> None:
        """Each scheduled request's tenant pays `price * steps / weight` (computed once per
        tenant: the same float), in batch order as stepping adds it."""
        price = self.params.output_price
        counters, weights, charge = self.counters, self.params.tenant_weights, {}
        if len(counters) == 1 and output.scheduled:  # one tenant (every request's is a key):
            # the same float additions, in C
            (t, c0), = counters.items()
            counters[t] = reduce(add, repeat(price * steps / weights.get(t, 1.0), len(output.scheduled)), c0)
            return
        for r, _ in output.scheduled:
            t = r.tenant
            c = charge.get(t)
            if c is None:
                c = charge[t] = price * steps / weights.get(t, 1.0)
            counters[t] += c

def future_peak(contexts: list[int], rests: list[int]) -> int:
    """LightLLM's future peak of KV tokens: with the requests sorted by remaining output
    (descending), max over k of (k x the k-th remaining + the first k contexts), at least 0.
    Integers, so exact; requests tied on remaining output give the same peak in any order
    (within a tie the term grows with k). Vectorised: it runs for every admission."""
    c, rest = np.asarray(contexts, dtype=np.int64), np.asarray(rests, dtype=np.int64)
    order = np.argsort(-rest, kind="stable")
    terms = np.cumsum(c[order]) + rest[order] * np.arange(1, len(c) + 1, dtype=np.int64)
    return max(0, int(terms.max()))
