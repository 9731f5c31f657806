"""SGLang's scheduler on its radix-tree prefix cache (`replica/radix_cache.py`).

Follows `python/sglang/srt/managers/{scheduler,schedule_policy,schedule_batch}.py`:
- prefill first: each step first tries to build a prefill batch; if it gets any request the
  step is that prefill batch alone (decodes wait), otherwise every running request decodes;
  with `enable_mixed_chunk` the running decodes join the prefill batch instead (SGLang's
  `mix_with_running`), their tokens taken off the prefill and chunk budgets first;
- waiting order (`schedule_policy`): `fcfs`; `lpm`, longest cached prefix first (FCFS when
  more than 128 requests wait, SGLang's cost guard; a request with at most 32 cached tokens
  that shares 32+ tokens with an earlier waiting request goes last, SGLang's in-batch prefix
  caching); `dfs-weight`, a depth-first walk of the
  radix tree visiting heavier subtrees (more waiting requests) first;
- admission (PrefillAdder): with `rem = free + evictable tokens - sum over running of
  min(max_new - generated, 4096) * new_token_ratio`, requests are added in order while their
  new tokens plus `min(max_new, 4096)` stay below `rem`, their new tokens stay below what is
  left of `max_prefill_tokens` (unless first; SGLang stops at equality too) and fit the chunk
  budget; a request longer than the chunk budget left is truncated to whole pages and becomes
  the one chunked request, continued first in the next steps;
- `new_token_ratio` starts at 0.7 x `schedule_conservativeness`, decays linearly to 0.14 of
  that over 600 decode steps; after a retraction it is reset to
  `(sum generated + 20 x running) / sum max_new`;
- `scheduler_recv_interval` N > 1 (SGLang's `SchedulerRecvSkipper`): arrivals wait in an inbox,
  taken into the waiting queue when N decode steps have run since the last take (a prefill or
  mixed step weighs 1,000, i.e. the next step takes them; an idle loop spins its N at once);
- `overlap_loop_take` (SGLang's overlap loop): the take a prompt step triggers runs as that step
  starts: what arrives during it waits N decode steps after it;
- `consecutive_prefill_launch_share` s > 0 (SGLang's overlap loop, `event_loop_overlap`): a
  prefill batch's first tokens are handed out only once the next batch is launched; when that
  batch has prompt tokens too (an eager forward, slow to launch) they reach the client s x its
  step time after their own batch's end (a decode, replayed from a CUDA graph, adds nothing);
  a reporting delay only, the decodes run as before;
- decode out of memory: retract running requests with the fewest generated tokens (then the
  longest prompt) until every remaining one has room for `retract_decode_steps` more tokens;
  retracted requests free their private KV, keep their tree prefix, and re-queue at the end.
`max_new` is the request's `max_tokens`, else `max_model_len - prompt` (SGLang's OpenAI
server default). After each prefill chunk the request's computed blocks are inserted into the
radix tree (locked by it); when it finishes the rest is inserted and the path unlocked.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from servesim.replica.radix_cache import RadixKVCache
from servesim.replica.schedulers import register
from servesim.replica.schedulers.base import Scheduler, SchedulerOutput, SchedulerParams
from servesim.replica.schedulers.batch_passes import CLIP_MAX_NEW_TOKENS, decoding_requests
from servesim.replica.schedulers.outputs import one_token_each
from servesim.replica.schedulers.queues import SortedWaiting
from servesim.replica.schedulers.sglang_admits import SGLangFinishAdmits
from servesim.replica.schedulers.sglang_policy import ordered_waiting
from servesim.replica.schedulers.sglang_reserve import SGLangReserve
from servesim.replica.schedulers.sglang_stretches import SGLangStretches
from servesim.workload.request import Request


class SGLangParams(SchedulerParams):
    schedule_policy: Literal["fcfs", "lpm", "dfs-weight"] = "fcfs"
    """Waiting-queue order (SGLang's current default `fcfs`; older releases used `lpm`)."""
    schedule_conservativeness: float = Field(1.0, gt=0)
    """Scales the initial new-token ratio (larger = more memory reserved for decodes)."""
    max_prefill_tokens: int = Field(16384, ge=1)
    """New prompt tokens of one prefill batch (the first request may exceed it)."""
    chunked_prefill_size: int | None = Field(None, ge=1)
    """Chunk budget of one prefill batch (None: the engine's `max_num_batched_tokens`)."""
    max_running_requests: int | None = Field(None, ge=1)
    """Most running requests (None: the engine's `max_num_seqs`)."""
    init_new_token_ratio: float = Field(0.7, gt=0, le=1)
    """SGLANG_INIT_NEW_TOKEN_RATIO."""
    min_new_token_ratio_factor: float = Field(0.14, gt=0, le=1)
    """The ratio's floor as a fraction of its initial value."""
    new_token_ratio_decay_steps: int = Field(600, ge=1)
    """Decode steps over which the ratio decays from its initial value to its floor."""
    retract_decode_steps: int = Field(20, ge=1)
    """Decode steps of headroom every remaining request gets after a retraction."""
    enable_mixed_chunk: bool = False
    """Run the running decodes in the same step as a prefill batch (`--enable-mixed-chunk`);
    off, a prefill batch stalls every decode for its step."""
    scheduler_recv_interval: int = Field(1, ge=1)
    """`--scheduler-recv-interval`: new requests are taken in only after this many decode steps
    since the last take (a step with prompt tokens counts as the whole interval; an engine with
    nothing running takes them at once); 1 = every step, SGLang's default."""
    overlap_loop_take: bool = False
    """When `scheduler_recv_interval` takes arrivals in after a prompt batch, as SGLang's overlap loop
    (`event_loop_overlap`, on unless `--disable-overlap-schedule`) does: it composes and launches a batch
    before it waits for the one before, so the take a prompt batch triggers (the skipper weighs the last
    launched batch) runs as that batch starts on the GPU, and what arrives during its prompt step waits
    for the next take, `scheduler_recv_interval` decode steps after it. False (SGLang's normal loop, and
    this simulator's default so that results stay as they were): taken at its end. Named after what it
    plays, not after SGLang's flag: the overlap loop's other effect, its first-token hold, is
    `consecutive_prefill_launch_share`, set apart."""
    consecutive_prefill_launch_share: float = Field(0.0, ge=0, le=1)
    """SGLang's overlap loop hands out a prefill batch's first tokens only once the next batch is
    launched (`resolve_last_batch_result` waits for its `launch_done`); when that batch also has
    prompt tokens its eager launch takes long: this share of its GPU time passes before the
    first tokens of the batch before it reach the client. 0: at their batch's end (SGLang with
    `SGLANG_DISABLE_CONSECUTIVE_PREFILL_OVERLAP`, or without the overlap loop)."""


@register("sglang")
class SGLangScheduler(SGLangStretches, SGLangFinishAdmits, SGLangReserve, Scheduler):
    Params = SGLangParams
    kv: RadixKVCache

    @classmethod
    def make_kv_cache(cls, num_gpu_blocks: int, block_size: int, enable_prefix_caching: bool,
                      num_cpu_blocks: int) -> RadixKVCache:
        return RadixKVCache(num_gpu_blocks, block_size, enable_prefix_caching, num_cpu_blocks)

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self.waiting = SortedWaiting()
        self.chunked: Request | None = None
        self.init_ratio = min(params.init_new_token_ratio * params.schedule_conservativeness, 1.0)
        self.min_ratio = self.init_ratio * params.min_new_token_ratio_factor
        self.new_token_ratio = self.init_ratio
        self._decay = (self.init_ratio - self.min_ratio) / params.new_token_ratio_decay_steps
        # the ratio after 0, 1, 2, ... decode steps from `new_token_ratio` (its first entry),
        # each one subtraction as stepping's `on_step_end` makes it (`_ratio_after`)
        self._ratios = [self.new_token_ratio]
        self.chunk_size = params.chunked_prefill_size or config.max_num_batched_tokens
        self.max_running = params.max_running_requests or config.max_num_seqs
        # engine steps before this decision's first decode step (None: no decode to count):
        # SGLang decays the ratio once per decode batch, not per token (a speculative step
        # emits several)
        self._mark: int | None = None
        # ids of admitted requests whose decode reserve may fall below the clip while they run
        # (`_reserve`); one that left running may stay listed (that only costs the full pass)
        self._unclipped: set[int] = set()
        # `_reserve`'s sums by batch size, for the ratio they were made at
        self._reserve_ratio: float | None = None
        self._reserves: dict[int, float] = {}
        self._transferred = False  # a request joined running with KV computed elsewhere (`_decoding`)
        # arrivals not yet taken in (`scheduler_recv_interval`) and the engine step count at
        # which the next take happens
        self._inbox: list[Request] = []
        self._recv_at = 0
        # the last `schedule` left the queue head waiting: the batch at `max_running`, or its
        # blocks short (over decode steps the free blocks only fall) until a finish; or its
        # tokens short, until a finish or, above the ratio's floor, the step whose smaller
        # reserve lets it in (`admit_step`); admission stretches keep it so
        self._held = False
        self._stretch = None  # the admission stretch in flight (`admit_step`), whose step sets the ratio
        # the prompts the last prefill step completes, whose first tokens wait for the next step's
        # launch (`consecutive_prefill_launch_share`); emptied by a decode step
        self._prompts_done: list[Request] = []

    def max_new(self, req: Request) -> int:
        return req.max_tokens or self.config.max_model_len - req.prompt_len

    def start(self, req: Request, num_cached: int, num_tokens: int, out: SchedulerOutput) -> None:
        super().start(req, num_cached, num_tokens, out)
        self._note_reserve(req)

    def add_transferred(self, req: Request, now_s: float) -> None:
        super().add_transferred(req, now_s)
        self._note_reserve(req)
        self._transferred = True

    def add_request(self, req: Request, now_s: float) -> None:
        if self.params.scheduler_recv_interval > 1:
            self._inbox.append(req)
        else:
            self.waiting.append(req)

    def queues(self) -> tuple:
        return (self.running, self.waiting, self.swapped, self._inbox)

    def _receive(self) -> None:
        """SGLang's recv skipper: takes fall due every `scheduler_recv_interval` decode steps
        (the counter restarts at each, inbox empty or not; a stretch of steps runs only with an
        empty inbox, so one it skipped only moved the phase), and at once when nothing runs."""
        n, t = self.params.scheduler_recv_interval, self.num_engine_steps
        if self.running or self.chunked:
            if t < self._recv_at:
                return
            last = t - (t - self._recv_at) % n  # the last take due at or before now
            self._recv_at = last + n
            if last < t:  # (it passed inside a stretch, before these arrivals)
                return
        else:
            self._recv_at = t + n
        self._take_inbox()

    def _take_inbox(self) -> None:
        for req in self._inbox:
            self.waiting.append(req)
        self._inbox.clear()

    # ------------------------------------------------------------------ the decision
    def schedule(self, now_s: float) -> SchedulerOutput:
        out = SchedulerOutput()
        self._mark = None
        self._held = False
        if self.params.scheduler_recv_interval > 1:
            self._receive()
        self._prefill_batch(out)
        if out.scheduled:
            if not self.params.overlap_loop_take or self.params.scheduler_recv_interval == 1:
                self._recv_at = self.num_engine_steps + 1  # (a step with prompt tokens: the next step takes)
            else:  # (the overlap loop takes as this step starts, after composing it: the next take is due
                self._take_inbox()  # N decode steps after it)
                self._recv_at = self.num_engine_steps + 1 + self.params.scheduler_recv_interval
            if self.params.enable_mixed_chunk:
                self._mix_decodes(out)
            if self.chunked is None:  # every prompt of the batch is done: its first request
                self._mark = self.num_engine_steps + 1  # (this step prefills: decodes follow)
            if self.params.consecutive_prefill_launch_share:
                self._hold_first_tokens(out, now_s)
            return out
        if self._prompts_done:  # (a decode step: no prefill before the next one is consecutive;
            self._prompts_done = []  # the list stays empty without the share: no list made per step)
        decoding = self._decoding()
        # a decode needs a block when its context fills the ones it holds (`_decode_blocks`)
        bs = self.kv.block_size
        grants = [(r, 1) for r, held in zip(decoding, self.kv.num_blocks_list(decoding))
                  if r.num_computed_tokens >= held * bs]
        if len(grants) > self.kv.num_free_blocks:
            for req in self._retract(decoding, out):
                if self.kv.allocate_slots(req, 1):
                    out.scheduled.append((req, 1))
        else:  # everyone fits: the same blocks, taken in the same order, as one by one
            self.kv.allocate_plain_many(grants)
            out.scheduled = one_token_each(decoding)
            out.num_known_decodes = len(decoding)
            out.known_decodes = decoding[:]
        if out.scheduled and not out.preempted:
            self._mark = self.num_engine_steps
        return out

    def _hold_first_tokens(self, out: SchedulerOutput, now_s: float) -> None:
        """This step has prompt tokens: the first tokens of the prefill step before it, made at
        its end (now), reach the client `consecutive_prefill_launch_share` of this step's GPU
        time later, or when a streaming front end hands them out if that is later still (its
        `deliver_s` already put them at or after now). Remembers the prompts this step completes
        for the next step's call."""
        held = [r for r in self._prompts_done if r.first_token_s >= now_s and r.num_output_tokens == 1]
        self._prompts_done = [r for r, n in out.scheduled if r.num_computed_tokens + n >= r.num_tokens and not r.num_output_tokens]
        if not held:
            return
        chunks = [(n, r.num_computed_tokens) for r, n in out.scheduled if not r.num_output_tokens or n > 1]
        ctxs = [r.num_computed_tokens for r, n in out.scheduled if r.num_output_tokens and n == 1]
        lag_s = self.params.consecutive_prefill_launch_share * self.perf.step_time_s(chunks, ctxs)
        for r in held:
            r.first_token_s = max(r.first_token_s, now_s + lag_s)

    def _decoding(self) -> list[Request]:
        """The running requests that decode (`decoding_requests`), asked when this step
        prefills nothing. A request admitted here is scheduled its whole prompt unless it is
        the one `chunked` request, so once its step ends it decodes: with no chunked request
        that is every running one (a request transferred in, whose state this policy did not
        set, keeps the pass)."""
        if self.chunked is None and not self._transferred:
            return list(self.running)
        return decoding_requests(self.running)

    def _mix_decodes(self, out: SchedulerOutput) -> None:
        """Add one token for every running decode to this prefill step (SGLang mixes the whole
        running batch; a decode whose next block cannot be allocated sits this step out)."""
        prefilling = {id(req) for req, _ in out.scheduled}
        for req in self.running:
            if req.is_decoding and id(req) not in prefilling and self.kv.allocate_slots(req, 1):
                out.scheduled.append((req, 1))

    def _num_mixed_decodes(self) -> int:
        if not self.params.enable_mixed_chunk:
            return 0
        return len(decoding_requests(self.running))

    def _decode_blocks(self, reqs: list[Request], steps: int = 1) -> int:
        return sum(self.kv.blocks_needed(r, steps) for r in reqs)

    def _retract(self, decoding: list[Request], out: SchedulerOutput) -> list[Request]:
        order = sorted(decoding, key=lambda r: (r.num_output_tokens, -r.prompt_len), reverse=True)
        steps = self.params.retract_decode_steps
        while len(order) > 1 and self._decode_blocks(order, steps) > self.kv.num_free_blocks:
            victim = order.pop()  # fewest generated tokens, then longest prompt
            self.running.remove(victim)
            self.preempt(victim, out)  # frees its private blocks, keeps its tree prefix; re-queued last
        generated = sum(r.num_output_tokens for r in order)
        self.new_token_ratio = min(1.0, (generated + steps * len(order)) / max(sum(self.max_new(r) for r in order), 1))
        return [r for r in decoding if r in order]

    def _prefill_batch(self, out: SchedulerOutput) -> None:
        if self.chunked is None and (not self.waiting or len(self.running) >= self.max_running):
            self._held = bool(self.waiting)  # (at the cap until a finish)
            return  # nothing to continue or admit (the test below, before any pass over the batch)
        kv = self.kv
        bs = kv.block_size
        mixed = self._num_mixed_decodes()  # decode tokens that will share this step
        free_blocks = kv.num_free_blocks  # (before the chunked request's next chunk)
        rem_input = self.params.max_prefill_tokens - mixed
        rem_chunk = self.chunk_size - mixed
        if self.chunked is not None:  # continue the chunked request first
            req = self.chunked
            n = min(req.num_tokens - req.num_computed_tokens, rem_chunk)
            if n < req.num_tokens - req.num_computed_tokens:
                n = n // bs * bs or n
            if n > 0 and kv.allocate_slots(req, n):
                out.scheduled.append((req, n))
                rem_chunk -= n
                rem_input -= n
                if req.num_computed_tokens + n >= req.num_tokens:
                    self.chunked = None
                else:
                    return
        if not self.waiting or len(self.running) >= self.max_running:
            return
        rem_total = free_blocks * bs - mixed - self._reserve()
        admitted = False
        for req in self._candidates():
            if len(self.running) >= self.max_running:
                break
            hits = kv.match(req)
            ext = req.num_tokens - len(hits) * bs
            total = ext + min(max(self.max_new(req) - req.num_output_tokens, 0), CLIP_MAX_NEW_TOKENS)
            if total >= rem_total and (admitted or self.running):
                self._held = not admitted  # (until a finish, or above the floor a step the ratio lets it in)
                break  # (an idle engine still takes the head if its prompt fits, or it would stall)
            if ext >= rem_input and admitted:  # (SGLang: `real_input_tokens >= rem_input_tokens`)
                break
            n = ext if ext <= rem_chunk else rem_chunk // bs * bs
            if n <= 0 or not kv.allocate_slots(req, n, hits):
                self._held = not admitted and n > 0  # (its blocks only fall until a finish)
                break
            self.waiting.remove(req)
            self.start(req, len(hits) * bs, n, out)
            admitted = True
            rem_total -= total
            rem_input -= ext
            rem_chunk -= n
            if n < ext:
                self.chunked = req
                break

    def _candidates(self):
        """The waiting requests in admission order, for the loop above, which takes each it
        admits out of `waiting` and stops at the first it does not. FCFS takes the queue's head
        again and again: no copy of the queue at every step (under overload thousands wait)."""
        if self.params.schedule_policy == "fcfs":
            waiting = self.waiting
            return iter(lambda: waiting[0] if waiting else None, None)
        return ordered_waiting(self.params.schedule_policy, list(self.waiting), self.kv)

    # ------------------------------------------------------------------ bookkeeping
    def finish(self, req: Request, now_s: float) -> None:
        self.running.remove(req)
        self.kv.cache_finished(req)
        self._unclipped.discard(req.id)

    def forget(self, req: Request) -> None:
        self._unclipped.discard(req.id)
        if self.chunked is req:  # (removed mid-prompt)
            self.chunked = None

    def on_step_end(self, output: SchedulerOutput, now_s: float) -> None:
        if output.num_known_decodes != len(output.scheduled):  # (a decode step has no prompt chunk)
            for req, n in output.scheduled:
                if n > 1 or req.num_output_tokens <= 1:  # a prefill chunk: its blocks join the tree
                    if req.state == req.state.RUNNING:
                        self.kv.cache_unfinished(req)
        if self._mark is not None:  # decode steps (several when fast-forwarded; none: a prefill step)
            steps = self.num_engine_steps - self._mark
            if steps <= 0:
                return
            if steps == 1:  # (a stepped decode step: `_ratio_after(1)` without its list)
                self.new_token_ratio = max(self.new_token_ratio - self._decay, self.min_ratio)
            else:
                self.new_token_ratio = self._ratio_after(steps)
