"""A fast-forwarded stretch of speculative decode steps (`num_speculative_tokens > 0`).

The plain `Stretch` relies on every request emitting one token a step. With speculative
decoding each request emits 1 + accepted drafts, a random number, so contexts, KV blocks and
finishes differ per request and per step. This stretch replays the engine's decode steps
without the engine and scheduler machinery: per step and per request, in batch order,

- k = min(num_speculative_tokens, tokens left - 1, the `max_model_len` bound) lookahead slots
  (k = 0: the request decodes plainly, as `speculate` does on its last token);
- its KV blocks grow to hold ctx + 1 + k tokens (`allocate_slots`); the stretch stops before
  the first step whose blocks would not fit in those free when it started (stepping would then
  decode a request plainly or preempt: the engine steps that one);
- its accepted drafts are the next row of `AcceptanceDraws` (rows in batch order per step,
  read with `peek` and taken only for the steps applied, so a cut leaves the rest to
  stepping); it emits min(accepted + 1, tokens left);
- the step time is `speculate`'s: the perf model's step time over the verify chunks and plain
  decodes, plus the draft cost.

It stops at the first finish, or (when finishes may be processed late, as for `Stretch`)
when every request has finished. Pricing is lazy up to a horizon and extended like a
`Stretch`; the engine applies it with `apply` (requests, KV blocks, step log), exactly as
stepping one by one would have left them (tests/replica/test_spec_fast_forward.py).

Only decode-only steps are fast-forwarded, for schedulers whose repeated steps keep the batch
in the same order (`Scheduler.stable_decode_order`: acceptances are drawn in batch order).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from typing import Any, Callable

from servesim.replica.spec_decode import AcceptanceDraws
from servesim.workload.request import Request


class SpecStretch:
    """Speculative decode steps of a fixed batch, priced lazily; applied at `end_s`."""

    # what the engine's generic stretch code reads (`FastForwarding._limit`): nothing to limit here
    first_new: list = []
    remaining: list = []
    keyed: list = []
    prefills: list = []  # (a replica's view subtracts prompt chunks finished in step 0: none)

    def __init__(self, engine, start_s: float, out: Any, batch: list[Request], step0: list[int], dt0_s: float,
                 spec0_reqs: list[Request], num_running: int, num_waiting: int, through: bool) -> None:
        cfg = engine.config
        self.start_s = start_s
        self.out = out
        self.reqs = batch  # the decodes in batch order (the order of their acceptance rows)
        self.through = through
        self.num_running = num_running  # the scheduler's counts when step 0 was scheduled
        self.num_waiting = num_waiting
        self.waiting_from: list[int] = []  # steps from which one more request waits (arrivals kept)
        self.final = False  # cut, or nothing more to price: never extended again
        self.gen = 0  # bumped whenever the pending end event is replaced
        self._perf = engine.perf
        self._draws: AcceptanceDraws = engine.spec_draws
        self._k_max = cfg.num_speculative_tokens
        self._draft_ratio = cfg.spec_draft_cost_ratio
        self._max_len = cfg.max_model_len
        kv = engine.kv
        self._bs = kv.block_size
        self.free_blocks = kv.num_free_blocks  # after step 0's allocations
        self._used0 = kv.num_gpu_blocks - kv.num_free_blocks
        # the running state after the last priced step, per request (index into `reqs`)
        self._ctx = [r.num_computed_tokens + n for r, n in zip(batch, step0)]
        self._rem = [r.output_len - r.num_output_tokens - n for r, n in zip(batch, step0)]
        self._held = [kv.num_blocks_of(r.id) for r in batch]
        self.held0 = list(self._held)
        # step 0's finishes as stepping lists them: plain decodes first, then speculative ones
        spec0 = {id(r) for r in spec0_reqs}
        gone = sorted((i for i, left in enumerate(self._rem) if not left), key=lambda i: id(batch[i]) in spec0)
        self._active = [i for i, left in enumerate(self._rem) if left] if through else list(range(len(batch)))
        # per step: end time, tokens emitted, requests run, their emitted tokens, blocks granted
        self.ends = [start_s + dt0_s]
        self.sizes = [sum(step0)]  # tokens emitted in each step
        self._runs: list[list[int]] = [list(range(len(batch)))]
        self._emits: list[list[int]] = [step0]
        self._grants: list[list[tuple[int, int]]] = [[]]  # (step 0's blocks are allocated already)
        self._alloc = [0]  # blocks granted in steps 1..j
        self._rows = [0]  # acceptance rows read by steps 1..j
        self._finishes: list[tuple[int, int]] = [(0, i) for i in gone]  # (step, request) in finish order
        self._free_at: list[tuple[int, int]] = []  # (first step after a finish, blocks it frees)
        self._extra_step = False  # `truncate` by a crash: the step in flight had taken its rows
        self.kmax = 1 << 62  # unknown: `final` says when the stretch is done
        if gone:
            self._done_with(0, gone)

    @property
    def k(self) -> int:
        """Steps in the stretch."""
        return len(self.ends)

    @property
    def end_s(self) -> float:
        return self.ends[-1]

    # ---------------------------------------------------------------- pricing
    def price(self, horizon: float) -> None:
        """Take steps until one would start at or after `horizon`, or the stretch is done."""
        while not self.final and self.ends[-1] < horizon:
            self._step()

    def _step(self) -> None:
        """Price one more step (or mark the stretch done if its blocks do not fit)."""
        ctx, rem, held = self._ctx, self._rem, self._held
        k_max, bs, max_len = self._k_max, self._bs, self._max_len
        act = self._active
        verify, plain, ctxs, spec, grants = [], [], [], [], []
        need = 0
        for i in act:
            c = ctx[i]
            k = min(k_max, rem[i] - 1, max_len - 2 - c)
            ctxs.append(c)
            if k > 0:
                verify.append((1 + k, c))
                spec.append(k)
                tokens = c + 1 + k
            else:
                plain.append(c)
                spec.append(0)
                tokens = c + 1
            nb = -(-tokens // bs) - held[i]
            if nb > 0:
                grants.append((i, nb))
                need += nb
        alloc = self._alloc[-1] + need
        if alloc > self.free_blocks:  # (frees inside the stretch are not counted on)
            self.final = True
            return
        perf = self._perf
        rows = self._rows[-1]
        if verify:
            accepted = iter(self._draws.peek(rows, len(verify)))
            rows += len(verify)
            dt = perf.step_time_s(verify, plain)
            dt += self._draft_ratio * k_max * perf.step_time_s([], ctxs)  # (as `speculate`, term for term)
        else:
            dt = perf.step_time_s([], ctxs)
        emits = []
        done_plain, done_spec = [], []  # stepping lists a step's finishes plain decodes first
        for i, k in zip(act, spec):
            if k:
                a = next(accepted)
                n = min((a if a < k else k) + 1, rem[i])
            else:
                n = 1
            emits.append(n)
            ctx[i] += n
            rem[i] -= n
            if not rem[i]:
                (done_spec if k else done_plain).append(i)
        for i, nb in grants:
            held[i] += nb
        j = len(self.ends)
        self.ends.append(self.ends[-1] + dt)
        self.sizes.append(sum(emits))
        self._runs.append(act)
        self._emits.append(emits)
        self._grants.append(grants)
        self._alloc.append(alloc)
        self._rows.append(rows)
        if done_plain or done_spec:
            done = done_plain + done_spec
            self._finishes += [(j, i) for i in done]
            self._done_with(j, done)

    def _done_with(self, j: int, done: list[int]) -> None:
        """Requests that emitted their last token in step j: the stretch ends there, or they
        leave the batch (their blocks free from step j + 1 on, for the views)."""
        if not self.through:
            self.final = True
            return
        gone = set(done)
        self._active = [i for i in self._active if i not in gone]
        self._free_at.append((j + 1, sum(self._held[i] for i in done)))
        if not self._active:
            self.final = True

    # ---------------------------------------------------------------- cutting and reading
    def steps_before(self, t: float) -> int:
        """Steps that ended before `t` (events at `t` come before a step ending at `t`)."""
        return bisect_left(self.ends, t)

    def step_in_flight(self, t: float) -> int:
        """The step running at `t` (the last one if `t` is at or after the end)."""
        return min(bisect_left(self.ends, t), len(self.ends) - 1)

    def add_waiting(self, t: float) -> None:
        """A request joined the waiting queue at `t` without cutting the stretch (as `Stretch`)."""
        self.waiting_from.append(bisect_left(self.ends, t) + 1)

    def cut(self, t: float) -> bool:
        """Keep the steps that started before `t`; True if steps were dropped (their
        acceptance rows stay untaken)."""
        self.final = True
        k = bisect_left(self.ends, t) + 1
        if k < len(self.ends):
            self._keep(k)
            return True
        return False

    def truncate(self, k: int) -> None:
        """Keep the first k steps, step k having started (a crash during it): its acceptance
        rows were drawn when it started, so they stay taken."""
        self._extra_step = k < len(self.ends)
        self._keep(k)

    def _keep(self, k: int) -> None:
        self.final = True
        for lst in (self.ends, self.sizes, self._runs, self._emits, self._grants):
            del lst[k:]
        del self._alloc[k:], self._rows[k + 1:]  # (a crash's step in flight took its rows)
        self._finishes = [(j, i) for j, i in self._finishes if j < k]
        self._free_at = [(j, b) for j, b in self._free_at if j <= k]

    def finished_before(self, j: int) -> int:
        """How many requests emitted their last token in steps 0..j-1."""
        return bisect_left(self._finishes, (j, -1))

    def blocks_added(self, j: int, block_size: int, blocks_held: Callable[[Any], int]) -> int:
        """KV blocks the stretch has added by step j (granted at steps 1..j), less those of
        requests that finished before step j."""
        return self._alloc[min(j, len(self._alloc) - 1)] - sum(b for s, b in self._free_at if s <= j)

    # ---------------------------------------------------------------- applying
    def apply(self, engine) -> list[Request]:
        """Advance the requests, KV blocks, acceptance draws and step log by the stretch's
        steps; returns the requests that finished in it, in finish order."""
        k, reqs = len(self.ends), self.reqs
        first = engine.recorder.num_steps
        total = [0] * len(reqs)
        for j in range(k):
            s = first + j
            for i, n in zip(self._runs[j], self._emits[j]):
                total[i] += n
                runs = reqs[i].token_steps  # as `Engine.emit`, then one single-step run per extra token
                if runs[-1] == s - 1:
                    runs[-1] = s
                else:
                    runs += (s, s)
                if n > 1:
                    runs += (s, s) * (n - 1)
        for req, n in zip(reqs, total):
            req.num_computed_tokens += n
            req.num_output_tokens += n
        grants = [0] * len(reqs)
        for j in range(1, k):
            for i, nb in self._grants[j]:
                grants[i] += nb
        engine.kv.allocate_plain_many([(reqs[i], nb) for i, nb in enumerate(grants) if nb])
        self._draws.skip(self._rows[min(k, len(self._rows) - 1)] if self._extra_step else self._rows[k - 1])
        done = [reqs[i] for _, i in self._finishes]
        for j, i in self._finishes:
            reqs[i].finish_s = self.ends[j]
        self._log(engine, k)
        engine.num_steps += k
        engine.num_fast_forwarded_steps += k
        return done

    def _log(self, engine, k: int) -> None:
        """One step-log entry per step (tokens emitted differ from the batch size)."""
        log = engine.recorder.log_step
        n0 = len(self.reqs)
        waiting = sorted(self.waiting_from)
        freed, f = 0, 0
        free_at = self._free_at
        start = self.start_s
        for j in range(k):
            while f < len(free_at) and free_at[f][0] <= j:
                freed += free_at[f][1]
                f += 1
            running = self.num_running - (n0 - len(self._runs[j])) if j else self.num_running
            log(start, self.ends[j], 0, self.sizes[j], running, self.num_waiting + bisect_right(waiting, j),
                self._used0 + self._alloc[j] - freed)
            start = self.ends[j]


def spec_fast_forward(engine, now_s: float, out, batch: list[Request], dt0_s: float, plain: list[Request],
                      spec_items: list, ff) -> bool:
    """Run step 0 (a decode-only step `speculate` just planned: `plain` decodes and `spec_items`
    (req, (1 + k, accepted))) and the speculative steps that repeat it as one event. False,
    changing nothing, if fewer than two steps would be safe."""
    sched = engine.scheduler
    if not sched.stable_decode_order:
        return False
    bs = engine.kv.block_size
    for req in batch:  # a prefix block still to register would be registered by stepping only
        keys = req.kv_block_keys
        if keys and len(keys) * bs > req.prompt_len + req.num_output_tokens:
            return False
    left = {id(r): r.output_len - r.num_output_tokens for r in batch}
    emitted = {id(r): 1 for r in plain}
    for req, (_, a) in spec_items:
        emitted[id(req)] = min(a + 1, left[id(req)])
    step0 = [emitted[id(r)] for r in batch]
    through = engine.defer_finishes and ff.through_finishes and not any(r.kv_block_keys for r in batch)
    st = SpecStretch(engine, now_s, out, batch, step0, dt0_s, [r for r, _ in spec_items], sched.num_running,
                     sched.num_waiting, through)
    next_s = engine.next_event_s()
    if engine.lookahead > 1 or (engine.ports is None and sched.arrival_keeps_batch(None)):
        next_s = max(now_s + (next_s - now_s) * engine.lookahead, math.nextafter(st.end_s, math.inf))
    st.price(min(next_s, engine._own_horizon_s()))
    if st.k < 2:
        return False
    engine.stretch = st
    engine._schedule_stretch_end(st)
    return True
