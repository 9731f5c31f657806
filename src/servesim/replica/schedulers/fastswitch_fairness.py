"""FastSwitch's fairness bookkeeping: the tenants' Virtual Token Counters and the requests held.

`FastSwitchScheduler` (`fastswitch.py`) walks the requests in priority order and pays for the
context switches; this mixin keeps what that order is made of: each tenant's counter (weighted
service counted at step ends, the snapshot taken at refresh steps, the VTC lift of a tenant
back from idle), the requests held per tenant and in arrival order, and the per-request
`_key`. Separate because it is the policy's fairness state, apart from its switching
mechanics; it shares that state with the scheduler (set by `FastSwitchScheduler.__init__`),
hence a mixin placed before `VLLMSteps` (its hooks call the base's through `super()`).

Deferred counting: with one tenant held, its counter decides nothing (every key has the same
counter, so the order is arrival order), and with integral prices every delta is an integer
float, whose sums are exact in any grouping while they stay far below 2**53. Then the per-step
pass over the batch is skipped and each request's tokens since it was last counted are
counted when the counter can matter: before a refresh snapshot, before a stretch that may
cross one, when another tenant's request or a transferred request arrives, when a request is
preempted by recompute (its progress is reset), leaves, or the run drains. The counters, the
snapshots and the served marks are then exactly the per-step pass's
(`test_deferred_counters_equal_the_per_step_pass`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import chain
from operator import itemgetter

from servesim.replica.schedulers.base import SchedulerOutput
from servesim.workload.request import Request, RequestState

_FIRST = itemgetter(0)
# Deferral needs every counter below this: integer floats up to 2**53 add exactly, and the
# tokens of the steps between two counts (at most `priority_update_interval` steps of
# `max_num_batched_tokens`, times a price of at most `MAX_DEFERRED_PRICE`) stay far below.
EXACT_COUNTER_LIMIT = 2.0 ** 40
MAX_DEFERRED_PRICE = 1024.0


def integral_prices(input_price: float, output_price: float) -> bool:
    """Prices whose deltas are integer floats (the defaults 1 and 2 are): deferral allowed."""
    return all(0.0 <= p <= MAX_DEFERRED_PRICE and p.is_integer() for p in (input_price, output_price))


class FastSwitchFairness:
    """`FastSwitchScheduler`'s counters and held requests (state set by its `__init__`)."""

    # ---- fairness bookkeeping ------------------------------------------------------
    def add_request(self, req: Request, now_s: float) -> None:
        if self._deferred and req.tenant not in self._held:
            self._count_all()  # another tenant: the counters order the requests from now on
        self._held[req.tenant] = self._held.get(req.tenant, 0) + 1
        self._arrived[req.tenant] = self._arrived.get(req.tenant, 0) + 1
        self._hold(req)
        super().add_request(req, now_s)

    def _hold(self, req: Request) -> None:
        key = (req.arrival_s, req.id)
        i = bisect_right(self._arrival_keys, key)
        self._arrival_keys.insert(i, key)
        self._by_arrival.insert(i, req)

    def _release(self, req: Request) -> None:
        i = bisect_left(self._arrival_keys, (req.arrival_s, req.id))
        if i < len(self._by_arrival) and self._by_arrival[i] is req:
            del self._arrival_keys[i], self._by_arrival[i]

    def _lift(self) -> None:
        """VTC lift: a tenant back from idle (all it holds arrived since the last step) starts
        at the smallest counter of the tenants active before. Decided when the next step is
        scheduled (an engine takes new requests in at a step boundary), so the counters and
        finishes include the step that was running at the arrival, whether it ran alone or
        in a fast-forwarded stretch (settled at its end): the same either way."""
        arrived, self._arrived = self._arrived, {}
        held, counters = self._held, self.counters
        back = [t for t, n in arrived.items() if 0 < held.get(t, 0) <= n]
        if back:
            floor = min((counters.get(t, 0.0) for t in held if t not in back), default=0.0)
            for tenant in back:
                counters[tenant] = max(counters.get(tenant, 0.0), floor)

    def add_transferred(self, req: Request, now_s: float) -> None:
        # counted from its first scheduled step on (all its tokens then): not while deferred
        self._count_all()
        self._unscheduled.add(req.id)
        self._held[req.tenant] = self._held.get(req.tenant, 0) + 1
        self._hold(req)
        super().add_transferred(req, now_s)

    def drain(self, now_s: float) -> list[Request]:
        self._count_all()
        self._unscheduled.clear()
        self._held.clear()
        self._arrived.clear()
        self._arrival_keys.clear()
        self._by_arrival.clear()
        return super().drain(now_s)

    def on_step_end(self, output: SchedulerOutput, now_s: float) -> None:
        p = self.params
        prompt, self._chunk_prompt = self._chunk_prompt, None  # (set by `repeats_chunk` for this step)
        start, k = self._sched_step, self.num_engine_steps - self._sched_step
        last_refresh = (start + k - 1) // p.priority_update_interval * p.priority_update_interval
        if k > 1 and last_refresh > start:
            # A fast-forwarded stretch of k steps crossed a refresh step: snapshot the counters
            # as they were at its start plus the tokens emitted before that step, exactly as
            # stepping would. The token log says how many (a speculative step emits several, a
            # request that joined the stretch starts at its step); a request's prompt counted
            # with its first token (whole in step 0, or in a joined request's step), or, for a
            # chunk stretch's prompt (unfinished, `n` tokens each step), as far as its chunks
            # before that step reached.
            snap = dict(self.counters)
            for req, n in output.scheduled:
                old_in, old_out = self._served.get(req.id, (0, 0))
                emitted = req.num_output_tokens - old_out - _tokens_since(req.token_steps, last_refresh)
                computed = req.num_computed_tokens
                if req is prompt:
                    computed -= n * (start + k - last_refresh)
                if emitted > 0 or req is prompt:  # (max(old_in, min(computed, prompt)), as conditions)
                    new_in = p_len if (p_len := req.prompt_len) < computed else computed
                    new_in = new_in if new_in > old_in else old_in
                else:
                    new_in = old_in
                delta = p.input_price * (new_in - old_in) + p.output_price * emitted
                snap[req.tenant] = snap.get(req.tenant, 0.0) + delta
            self._snapshot, self._snap_step = snap, last_refresh
        if self._deferred:  # (every stretch started counted: `fast_forward`; its step is eager)
            return
        if self._unscheduled:
            self._unscheduled.difference_update(req.id for req, _ in output.scheduled)
        self._count(map(_FIRST, output.scheduled))
        self._deferred = self._may_defer()

    def _count(self, reqs) -> None:
        """Count the tokens of `reqs` since each was last counted into their tenants' counters."""
        served, counters, finished = self._served, self.counters, RequestState.FINISHED
        in_price, out_price = self.params.input_price, self.params.output_price
        for req in reqs:  # (the hot loop: names bound once)
            computed, n_out = req.num_computed_tokens, req.num_output_tokens
            old_in, old_out = served.get(req.id, (0, 0))
            new_in = computed if computed < req.prompt_len else req.prompt_len  # min(computed, prompt)
            if new_in < old_in:
                new_in = old_in
            delta = in_price * (new_in - old_in) + out_price * (n_out - old_out)
            if delta:
                counters[req.tenant] = counters.get(req.tenant, 0.0) + delta
            if req.state is finished:
                served.pop(req.id, None)  # (kept by `forget` until its last tokens counted)
            else:
                served[req.id] = (new_in, n_out)

    def _count_all(self) -> None:
        """Count what deferral left uncounted (the requests that ran since: running or swapped)
        and stop deferring; the next step's end decides again."""
        if self._deferred:
            self._count(chain(self.running, self.swapped))
            self._deferred = False

    def _may_defer(self) -> bool:
        return (self._defer_prices and len(self._held) == 1 and not self._unscheduled
                and all(c < EXACT_COUNTER_LIMIT for c in self.counters.values()))

    def preempt(self, req: Request, out: SchedulerOutput) -> None:
        if self._deferred:
            self._count((req,))  # before its progress is reset
        super().preempt(req, out)

    def _key(self, req: Request) -> tuple:
        t = req.tenant
        return (self._snapshot.get(t, self.counters.get(t, 0.0)), req.arrival_s, req.id)

    def forget(self, req: Request) -> None:
        if self._deferred:
            self._count((req,))  # its tokens since the last count (a finished one's last step too)
        self._unscheduled.discard(req.id)
        self._release(req)
        if req.state is not RequestState.FINISHED:  # a finished one's last step is counted at its end
            self._served.pop(req.id, None)
        held = self._held
        if held.get(req.tenant, 0) > 1:
            held[req.tenant] -= 1
        else:
            held.pop(req.tenant, None)


def _tokens_since(runs: list[int], step: int) -> int:
    """Tokens a request emitted at the end of engine step `step` or later, from its token log
    (runs of steps, [first, last] pairs, one token per step of a run; a run starts where the
    one before it ends or later): the runs that reach `step`, read from the end."""
    n, i = 0, len(runs) - 2
    while i >= 0 and runs[i + 1] >= step:
        first = runs[i]
        n += runs[i + 1] - (first if first > step else step) + 1
        if first < step:
            break  # (the runs before end at `first` at most; earlier replicas' runs too)
        i -= 2
    return n
