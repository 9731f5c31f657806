"""One replica: the step loop of a vLLM-style engine in virtual time.

Each step: the scheduler picks the batch (allocating KV blocks, maybe preempting), the
performance model prices it, and at the step's end the engine advances the requests, emits
tokens and finishes requests. When the batch is decode-only and the scheduler says the next
steps would repeat it (`fast_forward`), the engine prices many steps at once with numpy and
handles them as one event, stopping before anything could change the decision: the first
finish, the next arrival or timer, or the step that would run out of KV blocks. The result is
identical to stepping one by one (tested).

Swaps: a scheduler moves KV between tiers while it decides (`Scheduler.swap_out/swap_in`) and
lists the requests in its output; the engine prices the copies with `replica.swap` and the
scheduler's `swap_mechanics`: synchronous copies lengthen the step (vLLM v0), overlapped ones
occupy a PCIe stream per direction and make a swapped-in request schedulable only when its copy
is done (FastSwitch). Speculative decoding (`EngineConfig.num_speculative_tokens`) is applied
by the engine to every decoding request, whatever the scheduler (see `replica/spec_decode.py`).
"""

from __future__ import annotations

import math
from itertools import repeat
from typing import Callable, Iterable

import numpy as np

from servesim.core.loop import PRIO_STEP_END, PRIO_STEP_START, EventLoop
from servesim.metrics.recorder import BlockGrowth, Recorder
from servesim.replica.config import EngineConfig
from servesim.replica.kv_cache import KVCacheManager, block_keys, cdiv
from servesim.replica.kv_ports import KVPorts
from servesim.replica.schedulers.base import FastForward, Scheduler, SchedulerOutput
from servesim.replica.spec_decode import end_spec_decode, speculate
from servesim.replica.stretch import Stretch
from servesim.replica.swap import num_copies, num_layers, swap_time_s
from servesim.workload.request import Request, RequestState

DoneCallback = Callable[[Request, float], None]


class Engine:
    """A model replica serving requests with one scheduler, KV cache and cost model."""

    def __init__(self, config: EngineConfig, scheduler: Scheduler, kv: KVCacheManager, perf, loop: EventLoop,
                 recorder: Recorder, on_done: DoneCallback, until_s: float = float("inf"),
                 rng: np.random.Generator | None = None, defer_finishes: bool = False,
                 next_event_s: Callable[[], float] | None = None, lookahead: float = 1.0) -> None:
        self.config = config
        self.scheduler = scheduler
        self.kv = kv
        self.perf = perf
        self.loop = loop
        self.recorder = recorder
        self.on_done = on_done
        self.until_s = until_s  # the end of the run: no stretch runs past it
        # The next event that may concern this replica (an arrival anywhere in the cluster):
        # stretches are priced up to it and extended if it went elsewhere.
        self.next_event_s = next_event_s or loop.next_time_s
        # With n replicas sharing the arrivals, the next one here is about n arrivals away: a
        # new stretch is priced `lookahead` times as far ahead as the next arrival anywhere
        # (pricing is cheap, events are not; the cluster uses 3n).
        self.lookahead = lookahead
        self.stretch: Stretch | None = None  # the fast-forwarded stretch in flight, if any
        self._epoch = 0  # bumped by a crash: events of the lost step or timers are ignored
        # Called with the time before anything here changes (a cluster keeping stale views
        # takes its snapshot then); None when nobody needs it.
        self.on_change: Callable[[float], None] | None = None
        # KV moving to or from other replicas (disaggregated prefill/decode); None otherwise
        self.ports: KVPorts | None = None
        self.busy = False
        self.num_steps = 0
        self.num_fast_forwarded_steps = 0
        # speculative decoding draws acceptances from this generator (pass one spawned from the
        # run's seed; the default is fixed so that runs are reproducible either way)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self._spec_k = config.num_speculative_tokens
        # swap accounting
        self.swap_stall_s = 0.0  # step time added by synchronous copies
        self.swap_transfer_s = 0.0  # copy time, both directions, synchronous or not
        self.num_swap_copies = 0
        self.num_swapped_blocks = 0
        self._link_free_s = [0.0, 0.0]  # when the GPU->CPU and CPU->GPU copy streams are free
        self._wake_s = float("inf")
        self._decode_fns: dict = {}
        self._affines: dict = {}  # batch size -> the perf model's scalar decode step time (or False)
        # May a stretch process finishes late? Only when nothing reacts to a finish before the
        # stretch ends (an open-loop workload: no follow-up requests), and only with the scalar
        # decode form that prices each step of a shrinking batch.
        self.defer_finishes = defer_finishes and self._decode_fn(1) is not False

    # ------------------------------------------------------------------ arrivals
    def add_request(self, req: Request, now_s: float) -> None:
        """A request reaches this replica at `now_s` (the caller records it)."""
        if self.on_change:
            self.on_change(now_s)
        reason = self._reject_reason(req)
        if reason:
            req.state = RequestState.REJECTED
            req.finish_s = now_s
            req.extra["reject_reason"] = reason
            self.on_done(req, now_s)
            return
        if req.hash_ids and self.kv.enable_prefix_caching:
            req.kv_block_keys = block_keys(req, self.kv.block_size)
        self.interrupt(now_s, before=lambda: self.scheduler.add_request(req, now_s))

    def interrupt(self, now_s: float, before: Callable[[], None] | None = None) -> None:
        """Something changes here at `now_s` (`before()`, if given, makes the change): cut the
        stretch in flight so the next step boundary sees it, or start a step if idle."""
        if self.stretch is not None and self.stretch.cut(now_s):  # the scheduler must see it
            st = self.stretch
            st.gen += 1
            self.loop.schedule(st.ends[-1], self._end_fast_forward, (st, st.gen), PRIO_STEP_END)
        if before is not None:
            before()
        if not self.busy:  # start after every arrival of this instant is queued, as a batch
            self.busy = True
            self.loop.schedule(now_s, self._on_start, self._epoch, PRIO_STEP_START)

    def _reject_reason(self, req: Request) -> str | None:
        total = req.prompt_len + req.output_len
        if req.prompt_len < 1 or req.output_len < 1:
            return "empty prompt or output"
        if total > self.config.max_model_len:
            return f"prompt + output = {total} tokens > max_model_len {self.config.max_model_len}"
        if not self.config.enable_chunked_prefill and req.prompt_len > self.config.max_num_batched_tokens:
            return f"prompt of {req.prompt_len} tokens > max_num_batched_tokens without chunked prefill"
        if req.lora is not None and not self.scheduler.supports_lora:
            return f"LoRA adapters are served only by the vllm scheduler, not {self.scheduler.name}"
        if cdiv(total, self.kv.block_size) > self.kv.num_gpu_blocks:
            return f"needs more KV blocks than the GPU has ({self.kv.num_gpu_blocks})"
        return self.scheduler.admission_error(req)

    # ------------------------------------------------------------------ steps
    def _start_step(self, now_s: float) -> None:
        if self.on_change:
            self.on_change(now_s)
        sched = self.scheduler
        if self.ports is not None:
            self.ports.at_boundary(now_s)
        out = sched.schedule(now_s)
        scheduled = out.scheduled
        swap_s = self._swap(out, now_s) if out.swapped_out or out.swapped_in else 0.0
        if not scheduled:
            self.busy = False
            wake_s = now_s + swap_s if swap_s > 0 else sched.next_timer_s()
            if now_s < wake_s < float("inf"):
                self._wake_at(wake_s)
            elif ((sched.num_waiting or sched.swapped) and not sched.num_running
                  and not (self.ports is not None and self.ports.holds_blocks)):
                raise RuntimeError("scheduler is stuck: requests wait but nothing can run")
            return
        self.busy = True
        # A decode: one token scheduled and only the last generated token left to compute.
        known = out.num_known_decodes
        decodes = [r for r, _ in scheduled[:known]] if known else []
        decodes += [r for r, n in scheduled[known:]
                    if n == 1 and r.num_output_tokens and r.prompt_len + r.num_output_tokens - r.num_computed_tokens == 1]
        decode_ctxs = [r.num_computed_tokens for r in decodes]
        prefills = []
        if len(decodes) < len(scheduled):
            decoding = set(map(id, decodes))
            prefills = [(r, n) for r, n in scheduled if id(r) not in decoding]
            for r, _ in prefills:
                if r.first_scheduled_s is None:
                    r.first_scheduled_s = now_s
        if (self.config.fast_forward and not self._spec_k and not swap_s
                and (ff := sched.fast_forward(out)).repeat
                and (not prefills or ff.after_prefill)
                and (self.ports is None or self.ports.allows_stretch(prefills))
                and self._fast_forward(now_s, out, decodes, decode_ctxs, prefills, ff)):
            return
        chunks = [(n, r.num_computed_tokens) for r, n in prefills]
        if self._spec_k and decodes:
            dt, decodes, prefills = speculate(self, decodes, decode_ctxs, chunks, prefills)
        else:
            dt = self.perf.step_time_s(chunks, decode_ctxs)
        payload = (now_s, out, decodes, prefills, sched.num_running, sched.num_waiting, self._epoch)
        self.loop.schedule(now_s + dt + swap_s, self._end_step, payload, PRIO_STEP_END)

    def _on_start(self, now_s: float, epoch: int) -> None:
        if epoch == self._epoch:
            self._start_step(now_s)

    def _end_step(self, now_s: float, payload: tuple) -> None:
        start_s, out, decodes, prefills, num_running, num_waiting, epoch = payload
        if epoch != self._epoch:
            return  # the replica crashed during this step
        if self.on_change:
            self.on_change(now_s)
        step = self.recorder.num_steps
        _advance_decodes(decodes, repeat(1), step)
        finished = [req for req in decodes if req.num_output_tokens >= req.output_len]
        prefill_tokens = 0
        emitted = len(decodes)
        ports, handoffs = self.ports, []
        for req, n in prefills:  # prompt (or recompute) chunks: a token only when caught up
            if type(n) is tuple:  # a speculative decode: (1 + drafts, accepted drafts)
                emitted += end_spec_decode(self, req, n[1], step, now_s)
                if req.num_output_tokens >= req.output_len:
                    finished.append(req)
                continue
            prefill_tokens += n
            req.num_computed_tokens += n
            if req.num_computed_tokens >= req.num_tokens:
                pd = req.extra.get("pd") if ports is not None else None  # handed off to a decode replica
                if pd != "decode":  # the prefill replica emits the first token (or no hand-off)
                    emitted += 1
                    self.emit(req, step, now_s)
                    if req.num_output_tokens >= req.output_len:
                        finished.append(req)
                        continue
                if pd:
                    handoffs.append(req)
        self.num_steps += 1
        self.recorder.log_step(start_s, now_s, prefill_tokens, emitted, num_running, num_waiting,
                               self.kv.num_gpu_blocks - self.kv.num_free_blocks)
        if handoffs:
            self._finish_and_continue(out, finished, now_s, lambda: ports.hand_off(handoffs, now_s, now_s - start_s))
        else:
            self._finish_and_continue(out, finished, now_s)

    def emit(self, req: Request, step: int, time_s: float) -> None:
        """Record one token emitted at the end of `step` (at `time_s`)."""
        req.num_output_tokens += 1
        runs = req.token_steps
        if runs and runs[-1] == step - 1:
            runs[-1] = step
        else:
            runs.append(step)
            runs.append(step)
        if req.first_token_s is None:
            req.first_token_s = time_s

    def _finish_and_continue(self, out: SchedulerOutput, finished: list[Request], now_s: float,
                             hand_off: Callable[[], None] | None = None) -> None:
        for req in finished:
            req.state = RequestState.FINISHED
            if req.finish_s is None:  # (a stretch sets the time of a finish it processes late)
                req.finish_s = now_s
            self.scheduler.finish(req, now_s)
        self.scheduler.end_step(out, now_s, self.num_steps)
        if hand_off is not None:  # prompts handed to decode replicas leave after the step, as finishes
            hand_off()
        for req in finished:
            self.on_done(req, now_s)
        self._start_step(now_s)

    # ------------------------------------------------------------------ swaps and timers
    def _swap(self, out: SchedulerOutput, now_s: float) -> float:
        """Price this step's swaps; returns the time the step waits for synchronous copies."""
        mech = self.scheduler.swap_mechanics
        bs = self.kv.block_size
        layers = num_layers(self.perf)
        wait_s = 0.0
        sides = ((0, out.swapped_out, out.swap_out_blocks), (1, out.swapped_in, out.swap_in_blocks))
        for direction, reqs, blocks in sides:
            for i, req in enumerate(reqs):
                nb = blocks[i] if i < len(blocks) else self.kv.num_blocks_of(req.id)
                t = swap_time_s(nb, bs, self.perf, mech)
                if nb:
                    self.num_swap_copies += num_copies(nb, layers, mech.blocks_per_copy)
                self.num_swapped_blocks += nb
                self.swap_transfer_s += t
                if mech.overlap:
                    end = max(now_s, self._link_free_s[direction]) + t
                    self._link_free_s[direction] = end
                    if direction:
                        self.scheduler.swap_done(req, end)
                else:
                    wait_s += t
        self.swap_stall_s += wait_s
        return wait_s

    def _wake_at(self, t: float) -> None:
        """Call `schedule` again at `t` unless a step has started by then (policy timers)."""
        if self._wake_s <= t and self._wake_s > self.loop.now_s:
            return  # an earlier wake-up is pending
        self._wake_s = t
        self.loop.schedule(t, self._on_wake, self._epoch, PRIO_STEP_START)

    def _on_wake(self, now_s: float, epoch: int) -> None:
        if epoch != self._epoch:
            return
        self._wake_s = float("inf")
        if not self.busy:
            self.busy = True
            self._start_step(now_s)

    # ------------------------------------------------------------------ fast forward
    def _fast_forward(self, now_s: float, out: SchedulerOutput, decodes: list[Request], decode_ctxs: list[int],
                      prefills: list[tuple[Request, int]], ff: FastForward) -> bool:
        """Run this step and the decode-only steps that repeat it as one event (a `Stretch`).

        Step 0 is the scheduled step itself: decodes, plus prompt chunks that finish their
        prompts (those requests emit their first token and decode from step 1 on). Every later
        step gives every request still running one token. The stretch stops before anything
        could change that: an arrival here (`cut`), a policy timer, the step that would run out
        of KV blocks, and the first finish — unless finishes can be processed late (nothing
        reacts to them, no prefix keys, and a scheduler that stays steady when requests leave),
        in which case requests leave the batch at their last step and their finish is recorded
        at its time. Returns False, changing nothing, if fewer than two steps would be safe.
        Step times come from the perf model's scalar decode form, one call per step, so nothing
        scales with tokens.
        """
        if prefills:
            for req, n in prefills:
                if n != req.prompt_len + req.num_output_tokens - req.num_computed_tokens:
                    return False  # a prompt still in progress gets a chunk, not one token, next step
            reqs = decodes + [req for req, _ in prefills]
            # contexts after step 0 (the tokens in KV when step 1 starts)
            ctx1 = [c + 1 for c in decode_ctxs] + [req.num_computed_tokens + n for req, n in prefills]
            chunks = [(n, req.num_computed_tokens) for req, n in prefills]
        else:
            reqs, ctx1, chunks = decodes, [c + 1 for c in decode_ctxs], prefills
        remaining = [req.output_len - req.num_output_tokens for req in reqs]  # tokens to emit, step 0 included
        through = self.defer_finishes and ff.through_finishes and not any(req.kv_block_keys for req in reqs)
        if (max(remaining) if through else min(remaining)) < 2:
            return False
        end0 = now_s + self.perf.step_time_s(chunks, decode_ctxs)
        st = Stretch(now_s, end0, out, decodes, prefills, reqs, ctx1, remaining, through, self._decode_fn,
                     self.perf, self.scheduler.num_waiting, self._decode_affine)
        # Price up to the next event anywhere, and at least one step past step 0: the event may
        # not concern this replica (a submission here cuts the stretch back to the step in
        # flight); `_end_fast_forward` extends the stretch when its end is reached uncut.
        ahead_s = now_s + (self.next_event_s() - now_s) * self.lookahead
        st.price(min(max(ahead_s, math.nextafter(end0, math.inf)), self._own_horizon_s()))
        if len(st.ends) < 2:
            return False
        # KV: step j >= 1 needs room for ctx1 + j tokens. first_new: the first step that needs
        # one more block for a request; it needs another every block_size steps after that,
        # until its last step (remaining - 1). Freed blocks are not counted on: allocations must
        # fit in the blocks free now, which also keeps the free queue's order exact.
        st.first_new = self.kv.first_new_block_steps(reqs, ctx1)
        st.free_blocks = self.kv.num_free_blocks
        if not self._limit(st, 1):
            return False
        self.stretch = st
        self.loop.schedule(st.ends[-1], self._end_fast_forward, (st, st.gen), PRIO_STEP_END)
        return True

    def _limit(self, st: Stretch, k_safe: int) -> bool:
        """Shorten the stretch to the steps whose KV blocks fit in the free ones and whose
        prefix keys register as stepping would (the first `k_safe` steps are known to be fine).
        False if fewer than two steps remain."""
        bs = self.kv.block_size
        k = len(st.ends)
        first_new, remaining, free = st.first_new, st.remaining, st.free_blocks

        def need(steps: int) -> int:
            return sum((min(steps, r) - 1 - f) // bs + 1 for f, r in zip(first_new, remaining) if f < min(steps, r))

        # (cheap bound first: each request needs at most one block per block_size steps, + 1)
        if len(first_new) * ((k - 1) // bs + 1) > free and need(k) > free:
            lo, hi = k_safe, k  # need(lo) <= free < need(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if need(mid) <= free else (lo, mid)
            st.truncate(lo)
            st.final = True
            k = lo
        if st.keyed and k > k_safe and self.kv.keys_conflict_many([(req, c + k - 1) for req, c in st.keyed]):
            st.truncate(k_safe)
            st.final = True
        return len(st.ends) >= 2

    def _own_horizon_s(self) -> float:
        """The next time this replica changes by itself: a policy timer or the end of the run."""
        return min(self.until_s, self.scheduler.next_timer_s())

    def _decode_affine(self, n: int):
        """The perf model's affine decode form for n sequences, memoised (None: none)."""
        a = self._affines.get(n, False)
        if a is False:
            form = getattr(self.perf, "decode_affine", None)
            a = self._affines[n] = form(n) if form else None
        return a

    def _decode_fn(self, n: int):
        """The perf model's scalar decode step time for n sequences, memoised (False: none)."""
        f = self._decode_fns.get(n)
        if f is None:
            f = self._decode_fns[n] = self.perf.decode_time_fn(n) or False
        return f

    def _end_fast_forward(self, now_s: float, payload) -> None:
        st, gen = payload
        if gen != st.gen:
            return  # replaced by a cut or an extension
        if not st.final and len(st.ends) < st.kmax:
            # Nothing touched this replica: extend to at least four times the stretch's span so far.
            k = len(st.ends)
            own = self._own_horizon_s()
            st.price(min(own, max(self.next_event_s(), 4 * st.ends[-1] - 3 * st.start_s)))
            if len(st.ends) > k:
                self._limit(st, k)
            if len(st.ends) > k:
                st.gen += 1
                self.loop.schedule(st.ends[-1], self._end_fast_forward, (st, st.gen), PRIO_STEP_END)
                return
        self.stretch = None
        if self.on_change:
            self.on_change(now_s)
        self._finish_and_continue(st.out, self._apply_stretch(st), now_s)

    def _apply_stretch(self, st: Stretch) -> list[Request]:
        """Advance the requests, KV blocks and step log by the stretch's steps; returns the
        requests that finished in it, in finish order."""
        ends, k, reqs, remaining = st.ends, len(st.ends), st.reqs, st.remaining
        bs = self.kv.block_size
        first_new = st.first_new
        steps_of = [r if r < k else k for r in remaining]  # steps each request runs in the stretch
        # blocks each request gets at steps f, f + bs, ... below m (the steps it runs)
        new_blocks = [(req, (m - f - 1) // bs + 1) for req, f, m in zip(reqs, first_new, steps_of) if f < m]
        finished = [i for i, r in enumerate(remaining) if r <= k]
        if len(finished) > 1:
            finished.sort(key=remaining.__getitem__)  # in finish order (then running order), as stepping
        # a request that finished before the last step frees all its blocks after its last step
        frees = [(m, self.kv.num_blocks_of(reqs[i].id) + max(0, (m - first_new[i] - 1) // bs + 1))
                 for i in finished if (m := steps_of[i]) < k]
        kv_used = BlockGrowth(self.kv.num_gpu_blocks - st.free_blocks, first_new, steps_of, bs, frees)
        first = self.recorder.num_steps
        nd = len(st.decodes)
        _advance_decodes(st.decodes, steps_of, first)
        prefill_tokens = 0
        for (req, n), m in zip(st.prefills, steps_of[nd:]):  # prompts (or recomputes) finished in step 0
            prefill_tokens += n
            req.num_computed_tokens += n + m - 1
            req.num_output_tokens += m
            req.token_steps += (first, first + m - 1)
            if req.first_token_s is None:
                req.first_token_s = ends[0]
        self.kv.allocate_plain_many(new_blocks)
        for req, c in st.keyed:
            self.kv.cache_full_blocks(req, c + k - 1)
        done = [reqs[i] for i in finished]
        for req in done:
            req.finish_s = ends[req.token_steps[-1] - first]
        self.num_steps += k
        self.num_fast_forwarded_steps += k
        self.recorder.log_decode_steps(st.start_s, ends, st.sizes, st.num_waiting, kv_used, prefill_tokens)
        return done

    # ------------------------------------------------------------------ clock
    def set_perf(self, perf, now_s: float) -> None:
        """Steps that start after `now_s` are timed by `perf` (a clock change: power capping,
        frequency locking). The step in flight keeps its time, as on a GPU; a fast-forwarded
        stretch is cut there, exactly as an arrival cuts it."""
        if self.stretch is not None and self.stretch.cut(now_s):
            st = self.stretch
            st.gen += 1
            self.loop.schedule(st.ends[-1], self._end_fast_forward, (st, st.gen), PRIO_STEP_END)
        self.perf = perf
        self._decode_fns = {}
        self._affines = {}

    # ------------------------------------------------------------------ failures
    def crash(self, now_s: float) -> list[Request]:
        """Stop at `now_s`: apply the stretch steps that ended before it, lose the step in
        flight, release every request's KV and return the requests (unfinished, in the
        scheduler's order: running, waiting, swapped)."""
        if self.on_change:
            self.on_change(now_s)
        st = self.stretch
        if st is not None:
            self.stretch = None
            st.gen += 1  # its end event is void
            j = st.steps_before(now_s)
            if j:
                st.truncate(j)
                done = self._apply_stretch(st)
                for req in done:
                    req.state = RequestState.FINISHED
                    self.scheduler.finish(req, now_s)
                for req in done:
                    self.on_done(req, now_s)
        self._epoch += 1  # a plain step in flight, a pending start or wake-up: all void
        self.busy = False
        self._wake_s = float("inf")
        return self.scheduler.drain(now_s)

    def restart(self, scheduler: Scheduler, kv: KVCacheManager) -> None:
        """Come back with a fresh scheduler and KV cache (a restarted engine)."""
        self.scheduler = scheduler
        self.kv = kv
        self._link_free_s = [0.0, 0.0]

    # ------------------------------------------------------------------ end of run
    def drain(self, now_s: float) -> None:
        """Mark every request still held as dropped (the run stopped before they finished),
        with those whose KV was coming here."""
        held = self.scheduler.drain(now_s)
        if self.ports is not None:
            held += self.ports.drain()
        for req in held:
            req.state = RequestState.DROPPED
            req.finish_s = now_s


def _advance_decodes(decodes: list[Request], steps: Iterable[int], first: int) -> None:
    """Each decoding request emitted one token at the end of each of its next `steps` engine
    steps, from step `first` on (the hot loop of the engine)."""
    prev = first - 1
    for req, m in zip(decodes, steps):
        req.num_computed_tokens += m
        req.num_output_tokens += m
        runs = req.token_steps
        if runs[-1] == prev:
            runs[-1] = prev + m
        else:
            runs.append(first)
            runs.append(prev + m)
