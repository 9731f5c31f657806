"""VTC's fast-forward answers: decode steps capped by `max_wait_tokens`, through finishes.

Under overload VTC's queue never empties, and between two prefill mini-batches it runs exactly
`max_wait_tokens` decode steps of its running batch whatever arrives or finishes: admission is
looked at only when that count is reached (or nothing runs), a finish only frees blocks, and an
arrival joins a tenant's queue. So those steps repeat, up to the count (`FastForward.max_steps`),
and through finishes. What a stretch must leave as stepping would is the tenants' counters,
charged at the stretch's end: each request's tenant pays `output_price / weight` per token it
emitted. Stepping adds that charge once per request and step; a stretch adds `steps` times it
per request and takes back the steps of the requests that finished early (`finish` lists them).
The two are the same float only when every value involved is an integer below 2**53, so the
answers here hold only then (`_exact_charges`: an integral output price, power-of-two tenant
weights dividing it, integral counters below 2**40); otherwise VTC keeps its earlier answers
(decode steps with nothing waiting, up to the first finish).

An arrival while such a stretch runs is kept when the queue was not empty and the newcomer's
tenant already waits (no counter lift, which would read counters the stretch has not charged
yet) or the variant does not lift (`lcf`, `fcfs`).

An arrival while a stretch through finishes runs (nothing waited when it was planned) joins it
as a prompt-only step (`Stretch.stall`, `stalls_decodes`) where stepping would run its
mini-batch at that boundary: `max_wait_tokens` decode steps counted since the last mini-batch
(or nothing running), every waiting request of one tenant (so no lift, and the counters do not
choose) fresh and admitted in order by the batch's token cap and the future-peak check on the
requests running then (their tokens from the stretch), and each prompt's charge an integer (the
counters stay exact in any grouping). The stretch's end then charges each request's tokens
since the decision, a joined one's less its first (`_charge_joined`). An arrival that comes
fewer than `max_wait_tokens` decode steps after the last mini-batch is held: stepping runs decode
steps of the same batch, it waiting, until the count is reached (`stall_wait` says how many),
so the stretch goes on to that step with it waiting and it joins there (`stretch_join._hold`).

With speculative decoding the same answers hold (the stretches are `SpecStretch`es capped
the same way): a step emits 1 + its accepted drafts, and the counters charge each request's
tokens since the decision (integers too); a lift deferred to the end of a cut stretch reads
them without the tokens of the step in flight, counted from the engine's token log
(`_charge_tokens`).

With a migrator reading the head of line (`head_read_outside`) a lift deferred to the stretch's end
would be read too early: there the replica settles the stretch before each arrival instead
(`settles_before`, `Engine.settle_before`), the steps that ended before it applied and charged, the
boundary before it run again (nothing came since: every arrival settles), and the lift made at once.
"""

from __future__ import annotations

import math

from servesim.replica.schedulers.arrival_joins import is_fresh
from servesim.replica.schedulers.outputs import (
    NO_FAST_FORWARD, REPEAT_AFTER_PREFILL, REPEAT_DECODES, UNLIMITED_STEPS, FastForward, SchedulerOutput,
)
from servesim.replica.schedulers.vtc_peak import peak_items
from servesim.workload.request import Request

_COUNTER_BOUND = float(1 << 40)  # counters below it stay exact integers with any charge added (< 2**53)


class VTCStretches:
    """The fast-forward methods of `VTCScheduler` (which holds the state they use)."""

    def _init_stretches(self) -> None:
        p = self.params
        self._integral_prices = float(p.output_price).is_integer() and p.output_price < 1 << 20 and all(
            w > 0 and math.frexp(w)[0] == 0.5 and (p.output_price / w).is_integer() for w in p.tenant_weights.values())
        self._keeps_arrivals = False  # the stretch in flight was planned with a queue (capped)
        self._left: list[Request] = []  # requests that finished since the last `schedule`
        self._arriving: Request | None = None  # an arrival while a stretch runs (`arriving_in_stretch`)
        self._lifts: list[tuple[str, list[str]]] = []  # (tenant, backlogged others) of lifts deferred
        self._joined: list[Request] = []  # requests that joined the stretch in flight, in order

    def _exact_charges(self) -> bool:
        """Are the counters' charges exact whatever their grouping (integers below 2**53)?"""
        return self._integral_prices and all(c.is_integer() and c < _COUNTER_BOUND for c in self.counters.values())

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        self._keeps_arrivals = False
        prefill = self._mark is not None and self._mark > self.num_engine_steps  # a prefill mini-batch
        whole = len(output.scheduled) == len(self.running)  # (after a mini-batch: nothing else runs)
        if output.preempted or (prefill and not whole):
            return NO_FAST_FORWARD  # (a mini-batch runs alone: the stalled decodes join next step)
        if not self._exact_charges():
            # the earlier answers: with nothing waiting, decode steps until the first finish
            if self.waiting:
                return NO_FAST_FORWARD
            return REPEAT_AFTER_PREFILL if prefill else REPEAT_DECODES
        if not self.waiting:
            return _THROUGH  # (an arrival cuts the stretch: then the count decides)
        if (self.head_read_outside and self.params.variant != "fcfs"
                and sum(1 for q in self.waiting.queues.values() if q) > 1):
            return NO_FAST_FORWARD  # (the head of line is the least-served tenant's, by counters charged at the end)
        # the schedule of step j >= 1 sees the decode steps so far: a mini-batch sets the count
        # to 0 and its own step is none, a decode step saw `_decode_steps` before it
        cap = self.params.max_wait_tokens + 1 if prefill else self.params.max_wait_tokens - self._decode_steps
        if cap < 2:
            return NO_FAST_FORWARD  # (the next step looks at admission again)
        self._keeps_arrivals = True
        return FastForward(repeat=True, after_prefill=True, through_finishes=True, max_steps=cap)

    def arriving_in_stretch(self, req: Request) -> None:
        self._arriving = req  # (its lift, if any, waits for the stretch's end: `add_request`)

    def settles_before(self, req: Request) -> bool:
        # The head of line a migrator reads follows the counters (a lift, and the steps charged
        # so far): settled at every arrival, not only at one that lifts or makes two tenants
        # wait, so that no arrival is in the queue when the boundary before it runs again
        return self.params.variant != "fcfs"

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        if not (self._keeps_arrivals and self.waiting):
            return False  # (the next arrival, None, is guessed to be of a tenant that waits)
        return req is None or self.params.variant != "vtc" or bool(self.waiting.queues.get(req.tenant))

    # ---- arrivals joining as prompt-only steps (`stretch_join._stall_join`) ----------------
    stalls_decodes = True  # (a mini-batch runs alone, the decodes wait)

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        # a stretch through finishes, planned with nothing waiting; one tenant waits (no lift,
        # its queue's order), each newcomer fresh (vtc's admission makes no prefix lookup)
        if self._keeps_arrivals or self._lifts or self.head_read_outside or not self._exact_charges():
            return None  # (with a migrator reading the head, arrivals cut: `settles_before` settles them)
        if sum(1 for q in self.waiting.queues.values() if q) != 1:
            return None
        joins = [(req, req.num_tokens) for req in self.waiting]
        return joins if all(is_fresh(req) for req, _ in joins) else None

    def stall_wait(self, s: int, last_stall: int | None) -> int:
        # `schedule` at step s runs a mini-batch once `max_wait_tokens` decode steps ran since the
        # last one: the decision's count (less its own mini-batch step) and the stretch's steps,
        # or the steps since the stretch's last stall
        if last_stall is None:
            count = self._decode_steps + s - (self._mark - self.num_engine_steps)
        else:
            count = s - last_stall - 1
        return max(0, self.params.max_wait_tokens - count)

    def stall_admits(self, joins: list[tuple[Request, int]], s: int, last_stall: int | None, running_at) -> bool:
        # the mini-batch at step s (`stall_wait` 0) takes every newcomer: `_prefill_mini_batch`'s
        # checks on the requests running at s, each prompt's charge an integer
        u = joins[0][0].tenant
        counter, weight, price = self.counters[u], self.weight(u), self.params.input_price
        for req, _ in joins:  # (each prompt's charge keeps the counter an exact integer)
            counter += price * req.prompt_len / weight
            if not (counter.is_integer() and counter < _COUNTER_BOUND):
                return False
        if len(joins) > 1 and sum([n for _, n in joins[1:]]) + joins[0][1] > self.batch_max_tokens:
            return False  # (the batch's token cap stops the mini-batch inside `joins`: stepping's)
        # `running` still lists the stretch's requests that left before s: a superset of those
        # running at s, whose count and reserved sum bound stepping's (`_prefill_mini_batch`'s
        # bound); when they settle both checks no pass over the stretch is made
        running = self.running
        num = len(running) + len(joins)
        bound = self._reserved_sum() + sum([r.prompt_len + self._max_new(r) for r, _ in joins])
        if num <= self.config.max_num_seqs and -(-bound // self.kv.block_size) + num - 1 <= self.kv.num_gpu_blocks:
            return True
        return self._admits_at(joins, running_at())

    def _admits_at(self, joins: list[tuple[Request, int]], running: list[tuple[Request, int]]) -> bool:
        """`_prefill_mini_batch`'s checks of `joins` on the (request, tokens) running at the stall:
        the sequence cap, the batch's token cap and the future peak, every one admitted."""
        if len(running) + len(joins) > self.config.max_num_seqs:
            return False
        max_new = self._max_new
        items = peak_items([n for _, n in running], [max_new(r) - n + r.prompt_len for r, n in running])
        batch_tokens = 0
        for j, (req, n) in enumerate(joins):
            if (j and batch_tokens + n > self.batch_max_tokens) or not self._fits(req, items):
                return False
            items.add(n, max_new(req))
            batch_tokens += n
        return True

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        if self._tokens_before is None:  # (charged by tokens at the stretch's end: the stall emits none)
            prefill = self._mark - self.num_engine_steps
            self._tokens_before = [r.num_output_tokens + prefill for r, _ in out.scheduled]
        for req, n in joins:
            if not self._admit(req, n, out):  # (the engine checked their blocks)
                raise AssertionError(f"request {req.id} could not join the stretch")
            self._joined.append(req)
            self._tokens_before.append(1)  # (its first token, in the prompt's step, is not charged)

    def _charge_joined(self, output: SchedulerOutput) -> None:
        """The end of a stretch that arrivals joined: the decode steps since its last prompt-only
        step (the last joined request's first token) are the count, and each request pays
        for its tokens since the decision (`_charge_tokens`)."""
        last = self.num_engine_steps - 1
        self._decode_steps = last - self._joined[-1].token_steps[0]
        self._charge_tokens(output, self._decode_steps)
        self._joined.clear()
        if not self._speculative:
            self._tokens_before = None

    def finish(self, req: Request, now_s: float) -> None:
        super().finish(req, now_s)
        if self._mark is not None:
            self._left.append(req)

    def _charge_stretch(self, output: SchedulerOutput, steps: int) -> None:
        """Charge the `steps` decode steps that ended now, as stepping would have: the lifts of
        arrivals that came during the last step (the one in flight when they cut the stretch)
        read the counters charged up to the step before it."""
        last = self.num_engine_steps - 1
        if self._lifts and steps > 1:
            self._charge(output, steps - 1)
            self._refund_departed(steps - 1, last - 1)
            steps = 1
        self._lift_arrivals()
        self._charge(output, steps)
        self._refund_departed(steps, last)
        self._left.clear()

    def _charge_tokens(self, output: SchedulerOutput, steps: int) -> None:
        """With speculative decoding: charge each scheduled request's tokens since the decision
        (a step emits 1 + its accepted drafts), as stepping would have: the lifts of arrivals
        that came during the last step read the counters without that step's tokens (the
        engine's token log, `Request.token_steps`, says how many it emitted), also when that
        step is the stretch's only one (cut in its step 0; until the forty-second round such
        lifts read that step's tokens, reached at many replicas with several tenants)."""
        price, weights, counters = self.params.output_price, self.params.tenant_weights, self.counters
        emitted = [r.num_output_tokens - before for (r, _), before in zip(output.scheduled, self._tokens_before)]
        if self._lifts and steps:  # (the last step decoded: stalled steps emit no charged token)
            last = self.num_engine_steps - 1
            final = [_tokens_at(r.token_steps, last) for r, _ in output.scheduled]
            for (r, _), n, m in zip(output.scheduled, emitted, final):
                counters[r.tenant] += price * (n - m) / weights.get(r.tenant, 1.0)
            self._lift_arrivals()
            emitted = final
        for (r, _), n in zip(output.scheduled, emitted):
            counters[r.tenant] += price * n / weights.get(r.tenant, 1.0)
        self._lift_arrivals()

    def _refund_departed(self, steps: int, last: int) -> None:
        """Take back, from the charge of `steps` steps up to step `last`, the steps after their
        last token of the requests that finished inside the stretch."""
        price, weights, counters = self.params.output_price, self.params.tenant_weights, self.counters
        for req in self._left:
            if not req.token_steps:
                continue  # (driven without the engine's token log: stepped, charged what it ran)
            extra = min(last - req.token_steps[-1], steps)  # the steps charged after its last token
            if extra > 0:
                counters[req.tenant] -= price * extra / weights.get(req.tenant, 1.0)

    def _lift_arrivals(self) -> None:
        """The counter lifts of the arrivals deferred while a stretch ran, in arrival order."""
        counters = self.counters
        for u, others in self._lifts:
            counters[u] = max(counters[u], min(counters[v] for v in others))
        self._lifts.clear()

_THROUGH = FastForward(repeat=True, after_prefill=True, through_finishes=True, max_steps=UNLIMITED_STEPS)


def _tokens_at(runs: list[int], step: int) -> int:
    """Tokens a request emitted at the end of `step`, from its token log (runs of steps,
    [first, last] pairs, one token per step of a run; several tokens at one step are runs of
    their own; the pairs' ends never decrease): the runs that hold `step`, read from the end."""
    n, i = 0, len(runs) - 2
    while i >= 0 and runs[i + 1] >= step:
        if runs[i] <= step:
            n += 1
        i -= 2
    return n
