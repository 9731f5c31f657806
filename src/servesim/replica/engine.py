"""One replica: the step loop of a vLLM-style engine in virtual time.

Each step: the scheduler picks the batch (allocating KV blocks, maybe preempting), the performance model
prices it, and at the step's end the engine advances the requests, emits tokens and finishes requests. When
the batch is decode-only and the scheduler says the next steps would repeat it (`fast_forward`), the engine
runs many steps as one event, stopping before anything could change the decision: the first finish, an
arrival here, a policy timer, or the step that would run out of KV blocks (see `replica/fast_forward.py`).
The result is identical to stepping one by one (tested).

Swaps: a scheduler moves KV between tiers while it decides (`Scheduler.swap_out/swap_in`) and
lists the requests in its output; the engine prices the copies with `replica.swap` and the
scheduler's `swap_mechanics`: synchronous copies lengthen the step (vLLM v0), overlapped ones
occupy a PCIe stream per direction and make a swapped-in request schedulable only when its copy
is done (FastSwitch). Speculative decoding (`EngineConfig.num_speculative_tokens`) is applied by the engine
to every decoding request, whatever the scheduler (see `replica/spec_decode.py`); steps that repeat are
fast-forwarded by `replica/spec_stretch.py`.

A request's arrival (admission checks, keeping or cutting the stretch in flight) is `EngineArrivals`'
(`replica/engine_arrivals.py`); the swap pricing and timer wake-ups are `StepWaits`' (`replica/engine_waits.py`);
clock changes, crashes, restarts and the end of run are `EngineLifecycle`'s (`replica/engine_lifecycle.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from servesim.core.loop import PRIO_STEP_END, EventLoop
from servesim.metrics.recorder import Recorder
from servesim.replica.chunk_stretch import chunk_fast_forward
from servesim.replica.config import EngineConfig
from servesim.replica.engine_arrivals import EngineArrivals
from servesim.replica.engine_lifecycle import EngineLifecycle
from servesim.replica.engine_waits import StepWaits
from servesim.replica.kv_cache import KVCacheManager
from servesim.replica.kv_ports import KVPorts
from servesim.replica import moved_runs
from servesim.replica.lone_stretch import lone_fast_forward
from servesim.replica.schedulers.base import NO_FAST_FORWARD, FastForward, Scheduler, SchedulerOutput
from servesim.replica.shared_chunk import shared_fast_forward
from servesim.replica.spec_decode import (acceptance_draws, end_spec_decode, spec_fast_forward, spec_stepped,
                                          speculate)
from servesim.replica.fast_forward import DecodeFns, FastForwarding
from servesim.replica.step_batch import split_batch
from servesim.replica.token_advance import advance_decodes_step, delivered_at
from servesim.workload.request import Request, RequestState

if TYPE_CHECKING:
    from servesim.replica.stretch import Stretch

DoneCallback = Callable[[Request, float], None]

# Steps a lean join at a replica among many prices ahead by the scalar loop (`Engine.join_ahead`).
# The next arrival routed to a busy replica of many cuts its stretch about 25 steps on (the
# matrix's azure-conv at 8 replicas), so steps priced past that are dropped; a stretch reaching
# the last priced step uncut is extended by its end event. 32 rather than 64 (`price`'s
# crossover between the scalar loop and a numpy chunk) since the loop prices run by run:
# callgrind of that cell, 4,000 less 1,000 requests, 428.8 k -> 422.4 k instructions a request
# (16: worse at 1,000 requests); the same floats either way.
JOIN_AHEAD = 32


class Engine(EngineArrivals, FastForwarding, StepWaits, EngineLifecycle):
    """A model replica serving requests with one scheduler, KV cache and cost model."""

    # Slots, not an instance dict: with 44 attributes an engine overflows CPython 3.11's shared keys
    # (at most 30 a class), so its attributes lived in a dict of their own, where each `self.f()`
    # call's method load fails its specialised form and looks the name up in that dict and the type
    # (and each `self.x` read takes the dict's hinted form): slots make both a fixed offset (reg32).
    __slots__ = ("config", "_arrival_caps", "scheduler", "kv", "perf", "loop", "recorder", "on_done", "until_s",
                 "next_event_s", "lookahead", "join_ahead", "stretch", "_epoch", "on_change", "on_event", "ports",
                 "busy", "num_steps", "num_fast_forwarded_steps", "num_joined_arrivals", "num_held_arrivals",
                 "num_finish_admissions", "rng", "_spec_k", "spec_draws", "_spec_ff", "swap_stall_s",
                 "swap_transfer_s", "num_swap_copies", "num_swapped_blocks", "_link_free_s", "_wake_s",
                 "decode_fns", "_spec_env", "defer_finishes", "keyed_through", "notice", "follow_ups",
                 "deliver", "keyed_joins", "cache_read_outside", "keys_seen",
                 "sole_arrival", "shared_keys_only", "_unevented", "_admission_error", "moved")

    def __init__(self, config: EngineConfig, scheduler: Scheduler, kv: KVCacheManager, perf, loop: EventLoop,
                 recorder: Recorder, on_done: DoneCallback, until_s: float = float("inf"),
                 rng: np.random.Generator | None = None, defer_finishes: bool = False,
                 next_event_s: Callable[[], float] | None = None, lookahead: float = 1.0,
                 notice: DoneCallback | None = None, decode_fns: DecodeFns | None = None) -> None:
        self.config = config
        # what every arrival is checked against (`_reject_reason`), as plain values (a pydantic
        # field's read takes about four plain reads): max_model_len, and the longest prompt
        # without chunked prefill (None: chunked)
        self._arrival_caps = (config.max_model_len,
                              None if config.enable_chunked_prefill else config.max_num_batched_tokens)
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
        # (pricing is cheap, events are not; the cluster uses 20n: simulation.py).
        self.lookahead = lookahead
        # Steps an arrival's lean join prices ahead by the scalar loop when many requests leave
        # before its stretch's last step (`Stretch.price_on`): only where the horizon is a guess.
        self.join_ahead = JOIN_AHEAD if lookahead > 1 else 0
        self.stretch: Stretch | None = None  # the fast-forwarded stretch in flight, if any
        self._epoch = 0  # bumped by a crash: events of the lost step or timers are ignored
        # Called with the time before anything here changes (a cluster keeping stale views
        # takes its snapshot then); None when nobody needs it.
        self.on_change: Callable[[float], None] | None = None
        # Called at each of this engine's events and arrivals, before anything here changes (a
        # cluster that keeps its routers' in-flight counts reads this replica's again); None: nobody.
        self.on_event: Callable[[], None] | None = None
        # KV moving to or from other replicas (disaggregated prefill/decode); None otherwise
        self.ports: KVPorts | None = None
        self._count_from_zero()
        self._speculation(config, rng)
        # (`_decode_fn`, `_decode_forms`: one a pool, its perf model's)
        self.decode_fns = decode_fns if decode_fns is not None and decode_fns.perf is perf else DecodeFns(perf)
        self._spec_env: tuple | None = None  # (`spec_stretch.spec_env`, for the perf model it names first)
        self._wiring(defer_finishes, kv, notice)
        self._policy_checks()  # (`_admission_error`)

    def _count_from_zero(self) -> None:
        """The engine's counters and its swap accounting, at the start of a run."""
        self.busy = False
        self.num_steps = 0
        self.num_fast_forwarded_steps = 0
        self.num_joined_arrivals = 0  # requests admitted into a stretch in flight (`replica/stretch_join.py`)
        self.num_held_arrivals = 0  # stretches gone on with arrivals behind a blocked head or held to a later admission (same file)
        self.num_finish_admissions = 0  # waiting requests admitted inside a stretch (`replica/admission_stretch.py`)
        self.swap_stall_s = 0.0  # step time added by synchronous copies
        self.swap_transfer_s = 0.0  # copy time, both directions, synchronous or not
        self.num_swap_copies = 0
        self.num_swapped_blocks = 0
        self._link_free_s = [0.0, 0.0]  # when the GPU->CPU and CPU->GPU copy streams are free
        self._wake_s = float("inf")

    def _speculation(self, config: EngineConfig, rng: np.random.Generator | None) -> None:
        """Speculative decoding's draft length and acceptance draws, and whether its steps may be fast-forwarded."""
        # speculative decoding draws acceptances from this generator (pass one spawned from the
        # run's seed; the default is fixed so that runs are reproducible either way)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self._spec_k = config.num_speculative_tokens
        self.spec_draws = acceptance_draws(self.rng, config) if self._spec_k else None
        self._spec_ff = self._spec_k and not spec_stepped(config)  # (may speculative steps be fast-forwarded)

    def _wiring(self, defer_finishes: bool, kv: KVCacheManager, notice: DoneCallback | None) -> None:
        """How finishes are processed (late, inside a stretch, where allowed) and who is told of
        them; and what the simulation (or a server) sets after building the engine, at its default."""
        # May a stretch process finishes late? Only when nothing reacts to a finish before the
        # stretch ends but `notice` (a closed-loop workload's follow-ups, called at the finish's
        # time: `replica/finish_notices.py`), and only with the scalar decode form that prices
        # each step of a shrinking batch.
        self.defer_finishes = defer_finishes and self._decode_fn(1) is not False
        # ... also for requests with prefix keys: only with vLLM's cache, which counts what each
        # late finish frees (`KVCacheManager.blocks_freed`; not SGLang's radix cache, its subclass)
        self.keyed_through = type(kv) is KVCacheManager
        # Does something read this replica's prefix cache from outside (a cache-aware router, a
        # KV store, disaggregation)? Set by the simulation. Then a stretch ends where it tells a
        # finish with prefix keys (`replica/finish_notices.py`), so the request's last blocks are
        # registered before its next turn, made now, is routed by such a read.
        self.cache_read_outside = False
        self.notice = notice
        # Does `notice` make follow-ups (a closed-loop workload's next requests)? A KV store's
        # writes are told through it too (`build_kv_store`), with or without follow-ups.
        self.follow_ups = notice is not None
        # The API server streaming each step's tokens (FrontEnd.deliver_s: (step end, tokens) -> when
        # they reach the client), set with a per-token front-end cost; None: at the step's end.
        # Only on engines that step one by one (simulation.py), so every step passes `_end_step`.
        self.deliver: Callable[[float, int], float] | None = None
        # May a request with prefix keys join a stretch in flight (`replica/keyed_join.py`)? Its
        # admission then runs before the stretch's earlier steps register and evict their
        # blocks, which only a reader of this prefix cache from outside could see (a
        # cache-aware router, a KV store): the simulation turns it on when there is none and the
        # cache and admission are vLLM's (`admits_keyed`). Then keyed stretches plan their
        # registrations up to each request's last step, which joins extend (`keys_conflict_many`).
        self.keyed_joins = False
        # Has a request with prefix keys reached this replica (`add_request`)? Until one has, no
        # waiting request has keys, and a stretch's end need not read the waiting queue to ask
        # (`keyed_join.with_keys`: a Python call or two where a policy keeps its own queues, as vtc).
        self.keys_seen = False
        self.moved: dict[int, tuple] = {}  # requests moved here without a token here yet (`moved_runs.py`)
        # The run's only replica, which nothing but the feed's stream arrivals reach (set by
        # simulation.py to the feed's arrival handler; None otherwise): a stretch priced to the
        # next arrival then gets no end event, since that arrival comes first and settles it
        # (`_settle`: one event per arrival instead of two). `_unevented`: (stretch, gen) so left.
        self.sole_arrival: Callable | None = None
        # Keys only for the hash ids another request may share (`block_keys`): set by
        # simulation.py where the blocks of a request's own ids can only be hit by itself after
        # a recompute preemption (vLLM's cache, a policy that does not order by keys, nothing
        # moving requests or KV between replicas; a policy that may swap keys a request whole
        # from its first preemption on, `key_every_id`): then they are plain blocks, and every
        # result is the same (tests/cluster/test_shared_keys_only.py).
        self.shared_keys_only = False
        self._unevented: tuple | None = None

    # ------------------------------------------------------------------ steps
    def _start_step(self, now_s: float) -> None:
        if self.on_change:
            self.on_change(now_s)
        sched = self.scheduler
        if self.ports is not None:
            self.ports.at_boundary(now_s)
        self.kv.passed = [] if self.keys_seen and not sched.reorders_running else None  # (for `_told_kv`)
        out = sched.schedule(now_s)
        self.kv.expected = None  # (what the last step told it holds for this `schedule` only)
        scheduled = out.scheduled
        swap_s = self._swap(out, now_s) if out.swapped_out or out.swapped_in else 0.0
        if not scheduled:
            self.busy = False
            if out.preempted and not swap_s:
                # The running pass preempted the very request it was making room for before any
                # other got a token (a policy whose victim is not the last running: vLLM's
                # `priority`, Continuum's latest job), and vLLM admits nothing in a step that
                # preempted: an empty step. vLLM's engine loop schedules again at once, and the
                # freed blocks let the others run (idling here left them running for ever).
                return self.interrupt(now_s)
            wake_s = now_s + swap_s if swap_s > 0 else sched.next_timer_s()
            if now_s < wake_s < float("inf"):
                self._wake_at(wake_s)
            elif ((sched.num_waiting or sched.swapped) and not sched.num_running
                  and not (self.ports is not None and self.ports.holds_blocks)):
                raise RuntimeError("scheduler is stuck: requests wait but nothing can run")
            return
        self.busy = True
        if len(scheduled) == 1 and not swap_s and self._start_lone(now_s, out, *scheduled[0]):
            return
        decodes, prefills = split_batch(out, now_s)
        decode_ctxs = [r.num_computed_tokens for r in decodes]
        ff = (sched.fast_forward(out) if self.config.fast_forward and not swap_s
              and (self.ports is None or self.ports.allows_stretch(prefills)) else NO_FAST_FORWARD)
        if prefills and self._chunk_stretch(now_s, out, decodes, decode_ctxs, prefills, swap_s, ff):
            return  # a prompt's chunks beside the same decodes fast-forwarded (`replica/chunk_stretch.py`)
        chunks = [(n, r.num_computed_tokens) for r, n in prefills]
        if self._spec_k and decodes:
            dt, decodes, prefills = speculate(self, decodes, decode_ctxs, chunks, prefills, out.rank_batches)
        else:
            # (priced before planning a stretch, whose step 0 it is: one call either way)
            dt = (self.perf.step_time_s(chunks, decode_ctxs) if out.rank_batches is None
                  else self.perf.lockstep_step_time_s(out.rank_batches))
            if (ff.repeat and not self._spec_k and (not prefills or ff.after_prefill)
                    and self._fast_forward(now_s, out, decodes, decode_ctxs, prefills, ff, dt)):
                return
        if self._spec_k:
            chunk = self._repeats_chunk(out, swap_s) if prefills else 0
            if (ff.repeat or chunk) and self._spec_ff and spec_fast_forward(self, now_s, out, dt, decodes, prefills, ff, chunk):
                return  # speculative decode steps fast-forwarded (`replica/spec_stretch.py`)
        payload = (now_s, out, decodes, prefills, sched.num_running, sched.num_waiting, self._epoch)
        self.loop.schedule(now_s + dt + swap_s, self._end_step, payload, PRIO_STEP_END)

    def _start_lone(self, now_s: float, out: SchedulerOutput, req: Request, n: int) -> bool:
        """The rest of `_start_step` when it scheduled one new prompt, alone, whose chunk
        completes it (the commonest step at many replicas: an arrival at an idle replica):
        what the general path does for it, without its passes over a batch, and without asking
        for a chunk stretch (which needs a prompt its chunks leave unfinished). False, changing
        nothing, for any other step (the general path runs)."""
        if (req.num_output_tokens or n != req.prompt_len - req.num_computed_tokens or out.num_known_decodes
                or self._spec_k or self.ports is not None or out.rank_batches is not None):
            return False
        if req.first_scheduled_s is None:
            req.first_scheduled_s = now_s
        prefills = [(req, n)]
        dt = self.perf.step_time_s([(n, req.num_computed_tokens)], [])
        if self.config.fast_forward:
            ff = self.scheduler.fast_forward(out)
            if ff.repeat and ff.after_prefill:
                lone = lone_fast_forward(self, now_s, out, prefills, ff, dt)  # (None: not its case)
                if lone or (lone is None and self._fast_forward(now_s, out, [], [], prefills, ff, dt)):
                    return True
        sched = self.scheduler
        payload = (now_s, out, [], prefills, sched.num_running, sched.num_waiting, self._epoch)
        self.loop.schedule(now_s + dt, self._end_step, payload, PRIO_STEP_END)
        return True

    def _chunk_stretch(self, now_s: float, out: SchedulerOutput, decodes: list[Request], decode_ctxs: list[int],
                       prefills: list[tuple[Request, int]], swap_s: float, ff: FastForward) -> bool:
        """The hook of chunk stretches: only plain steps (no speculation, swap or KV ports)."""
        return (self.config.fast_forward and not (self._spec_k or swap_s) and self.ports is None
                and (chunk_fast_forward(self, now_s, out, decodes, decode_ctxs, prefills, ff)
                     or shared_fast_forward(self, now_s, out, decodes, decode_ctxs, prefills, ff)))

    def _repeats_chunk(self, out: SchedulerOutput, swap_s: float) -> int:
        """A prompt's chunk in each of the next steps, if they repeat beside the same speculating
        decodes (a `SpecStretch` with it, not cut by arrivals: asked even when `fast_forward` says
        no), else 0: this one's (`repeats_chunk`: decodes, then it) or the budget left beside a
        prompt that finishes now (`shares_chunk`). Decided only here (`spec_fast_forward` is told)."""
        sched = self.scheduler  # (only for prompts whose chunks allocate nothing: `chunks_allocate`)
        if not self.config.fast_forward or swap_s or self.ports is not None or sched.chunks_allocate:
            return 0
        return out.scheduled[-1][1] if sched.repeats_chunk(out) else sched.shares_chunk(out)

    def _on_start(self, now_s: float, epoch: int) -> None:
        if epoch == self._epoch:
            if self.on_event:
                self.on_event()
            self._start_step(now_s)

    def _end_step(self, now_s: float, payload: tuple) -> None:
        start_s, out, decodes, prefills, num_running, num_waiting, epoch = payload
        if epoch != self._epoch:
            return  # the replica crashed during this step
        if self.on_event:
            self.on_event()
        if self.on_change:
            self.on_change(now_s)
        step = self.recorder.num_steps
        finished = advance_decodes_step(decodes, step, self._told_kv(decodes), self.keys_seen,
                                        not self.scheduler.reorders_running)
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
        if self.moved:
            moved_runs.split(self.moved)
        if self.deliver is not None:
            delivered_at(prefills, finished, self.deliver(now_s, emitted), now_s)
        if handoffs:
            self._finish_and_continue(out, finished, now_s, lambda: ports.hand_off(handoffs, now_s, now_s - start_s))
        else:
            self._finish_and_continue(out, finished, now_s)

    def _told_kv(self, decodes: list[Request]) -> KVCacheManager | None:
        """The KV cache a stepped step tells of its decodes (`KVCacheManager.expected`, a set if the batch is sorted
        again): one whose allocations read it (not attention DP's ranks'), no KV ports; keyed, if its pass took all."""
        kv = self.kv
        told = self.ports is None and isinstance(kv, KVCacheManager)
        return kv if told and (not self.keys_seen or kv.passed_all(decodes)) else None

    def emit(self, req: Request, step: int, time_s: float) -> None:
        """Record one token emitted at the end of `step` (at `time_s`)."""
        req.num_output_tokens += 1
        runs = req.token_steps
        if runs and runs[-1] == step - 1:  # (across a move too: `moved_runs.split` parts them)
            runs[-1] = step
        else:
            runs.append(step)
            runs.append(step)
        if req.first_token_s is None:
            req.first_token_s = time_s

    def _finish_and_continue(self, out: SchedulerOutput, finished: list[Request], now_s: float,
                             hand_off: Callable[[], None] | None = None, timers: list | None = None) -> None:
        for req in finished:
            req.state = RequestState.FINISHED
            if req.finish_s is None:  # (a stretch sets the time of a finish it processes late)
                req.finish_s = now_s
        if timers:  # (policy timers a stretch ran through: `replica/policy_stops.py`)
            self._finish_timed(finished, timers, now_s)
        else:
            self.scheduler.finish_all(finished, now_s)
        self.scheduler.end_step(out, now_s, self.num_steps)
        if hand_off is not None:  # prompts handed to decode replicas leave after the step, as finishes
            hand_off()
        for req in finished:
            if req.finish_s > now_s:  # (streamed by the API server: the client is done when it sees the last token)
                self.loop.schedule(req.finish_s, self._done_at, req, PRIO_STEP_END)
            else:
                self.on_done(req, now_s)
        if self.ports is None and self.scheduler.idle():
            self._go_idle(now_s)  # (the step after the last finish: `schedule` would find nothing)
        else:
            self._start_step(now_s)

    def _done_at(self, now_s: float, req: Request) -> None:
        if self.on_event:
            self.on_event()
        self.on_done(req, now_s)
