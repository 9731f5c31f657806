"""TensorRT-LLM's in-flight batching: a capacity scheduler, then a micro-batch scheduler.

Follows the batch manager of NVIDIA/TensorRT-LLM, `cpp/tensorrt_llm/batch_manager/
capacityScheduler.cpp` and `microBatchScheduler.cpp`; the PyTorch backend of 1.x
(`tensorrt_llm/_torch/pyexecutor/scheduler.py`, `docs/source/torch/scheduler.md`) runs the same
two schedulers through bindings. Each iteration, over the active requests in arrival order:

1. The capacity scheduler picks the requests that get resources, at most `max_batch_size`:
   - `GUARANTEED_NO_EVICT` (the default): every request already generating is kept and reserves
     the KV blocks it still needs to reach prompt + max new tokens; then requests waiting for
     their context, in order, are taken while their whole reservation fits in the free blocks
     those reservations leave; the first that does not fit stops the rest. Nothing is evicted.
   - `MAX_UTILIZATION`: requests in order each take the blocks of their next step only; when a
     started one does not fit, the last started request is paused (its KV freed, its context
     recomputed later, here a recompute preemption) and it is tried again; a waiting request
     that does not fit stops the rest. (A paused context longer than `max_num_tokens` runs in
     budget-sized pieces here; TensorRT-LLM truncates it to `max_input_len` and regenerates.)
2. The micro-batch scheduler walks the fitting requests in that order (generation requests
   first under GUARANTEED_NO_EVICT): a generation request takes 1 token, a context request its
   whole context; when the next one would pass `max_num_tokens` the walk stops (head-of-line:
   with chunked context off a prompt that does not fit waits whole). With
   `enable_chunked_context` the contexts are set aside and, if they do not all fit the tokens
   left, sized first come first served (`kFIRST_COME_FIRST_SERVED`), each cut to a multiple of
   `tokens_per_block` (the KV block size) unless it is the rest of its context.
3. Batch waiting (PyTorch executor, `PyExecutor._waiting_requests`; off by default): when the
   step has both generation requests and contexts, the contexts are held back until they have
   waited `batch_wait_timeout_iters` iterations or the step's tokens reach
   `batch_wait_max_tokens_ratio * max_num_tokens`.

Modelling choices: the active list is `running` (started requests, in admission order) then the
waiting queue (new and paused requests in arrival order; a paused request is the latest started,
so it goes to the front); a context request's KV for its whole context is allocated at its first
chunk (as `add_sequence` does); max new tokens is the request's `max_tokens`, else its output
length (benchmark clients send `max_tokens`; TensorRT-LLM would otherwise reserve up to
`max_seq_len`); prefix-cache hits shorten the context before it is sized (TensorRT-LLM sizes it
before the reuse lookup: the same when block reuse is off). Not modelled: `STATIC_BATCH`,
`PREFILL_FIRST`, the `EQUAL_PROGRESS` chunking policy, skipping a context to reuse blocks another
context is computing (`beneficialToSkip`) and beam search. With speculative decoding on (the engine's
`num_speculative_tokens`, e.g. MTP) a generation request takes 1 + its draft tokens of `max_num_tokens`
(`microBatchScheduler.cpp`: `getBeamWidthByIter() + getNumDraftTokens()`), so drafts share the budget with
the contexts (in the arrival and finish joins too).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from servesim.replica.kv_cache import cdiv
from servesim.replica.schedulers import register
from servesim.replica.schedulers.batch_passes import decoding_requests
from servesim.replica.schedulers.base import Scheduler, SchedulerOutput, SchedulerParams
from servesim.replica.schedulers.outputs import one_token_each
from servesim.replica.schedulers.trtllm_stretches import TRTLLMStretches
from servesim.workload.request import Request

class TRTLLMParams(SchedulerParams):
    capacity_scheduler_policy: Literal["GUARANTEED_NO_EVICT", "MAX_UTILIZATION"] = "GUARANTEED_NO_EVICT"
    """TensorRT-LLM `SchedulerConfig.capacity_scheduler_policy` (default GUARANTEED_NO_EVICT)."""
    enable_chunked_context: bool = False
    """Chunked context (`enable_chunked_prefill` in the LLM API / trtllm-serve, C++
    `enableChunkedContext`): off by default in TensorRT-LLM 1.x and in AIConfigurator's templates."""
    max_batch_size: int | None = Field(None, ge=1)
    """Most requests in a batch (TensorRT-LLM `max_batch_size`); None: the engine's `max_num_seqs`."""
    max_num_tokens: int | None = Field(None, ge=1)
    """Most tokens in a batch (TensorRT-LLM `max_num_tokens`); None: the engine's `max_num_batched_tokens`."""
    batch_wait_timeout_iters: int = Field(0, ge=0)
    """Batch waiting (PyTorch executor, `batch_wait_timeout_iters`; 0 = off, the default): while generation
    requests run, new contexts are held for up to this many iterations so that more share one step."""
    batch_wait_max_tokens_ratio: float = Field(0.0, ge=0.0, le=1.0)
    """Batch waiting stops early once the step's tokens (whole contexts + one per generation
    request) reach this share of `max_num_tokens` (`batch_wait_max_tokens_ratio`; 0 = off)."""
    context_admission_lag_iterations: int = Field(0, ge=0)
    """Fitted, not read in TensorRT-LLM: iterations a waiting request's context is held after the capacity
    scheduler first takes it (its slot and KV reservation granted) while other requests run; an idle engine
    (nothing started) runs it at once. 0 (the default) is TensorRT-LLM's loop as read (`py_executor.py`):
    a request taken runs its context in that iteration. A value > 0 stands for an unsourced delay between
    a request's slot and its context, fitted per (GPU, engine, release) (docs/fidelity-history.md, trthold29)."""
    attention_dp_enable_balance: bool = False
    """With attention DP only (`attention_dp_config.enable_balance`, default off): the ranks hold
    their new contexts until every rank has one (replica/attention_dp_balance.py)."""
    attention_dp_timeout_iters: int = Field(50, ge=0)
    """`attention_dp_config.timeout_iters` (default 50): iterations the balance holds contexts at most."""
    attention_dp_batching_wait_iters: int = Field(10, ge=0)
    """`attention_dp_config.batching_wait_iters` (default 10): iterations every rank's contexts wait
    for more while every rank generates."""


@register("trtllm")
class TRTLLMScheduler(TRTLLMStretches, Scheduler):
    Params = TRTLLMParams

    def __init__(self, params, config, kv, perf) -> None:
        super().__init__(params, config, kv, perf)
        self.max_batch_size = params.max_batch_size or config.max_num_seqs
        self.max_num_tokens = params.max_num_tokens or config.max_num_batched_tokens
        # (what a keyed join reads: the batch size, the token budget; no long-prefill cap)
        self.limits = (self.max_batch_size, self.max_num_tokens, 0, params.enable_chunked_context)
        # Budget tokens a generation request takes: itself and its drafts (speculative decoding)
        self.gen_tokens = 1 + config.num_speculative_tokens
        self.no_evict = params.capacity_scheduler_policy == "GUARANTEED_NO_EVICT"
        self.chunked = params.enable_chunked_context
        self.wait_iters, self.wait_ratio = params.batch_wait_timeout_iters, params.batch_wait_max_tokens_ratio
        self._waited_iters = 0  # iterations the waiting contexts have been held (PyExecutor.batch_wait_iters_count)
        # The waiting head the last `schedule` stopped at, for a reason decode-only steps cannot lift
        # (batch full, KV, or the token budget with chunking off); None if none.
        self._blocked_head: Request | None = None
        # Whether the capacity scheduler stopped it (batch size, KV): then no step before a
        # finish lets it in, even after contexts (which spend the token budget only in their step)
        self._capacity_blocked = False
        # GUARANTEED_NO_EVICT: the blocks the next `schedule`'s capacity pass has beyond the
        # reservations of the started requests (free + held - their totals; decode steps leave
        # it as it is, a started context takes its reservation, a finish returns its total):
        # what an admission stretch admits against (`finish_admits`)
        self._room = 0
        # Attention DP only: whether this iteration's contexts are held by the ranks' balance (set
        # by replica/attention_dp.py before each `schedule`); None without attention DP.
        self.adp_hold: bool | None = None
        # `total_blocks` of each request held (lengths never change), by the request (which hashes by
        # identity: a batch's sum is one C pass, `_reserved`): the no-evict pass sums them every iteration
        self._totals: dict[Request, int] = {}
        # Whether a running request may be mid-context when `_no_evict` runs: with chunked
        # context off every context runs whole (and then generates) unless one was cut into
        # budget-sized pieces or came from elsewhere (set then, for good)
        self._partial = self.chunked
        # context_admission_lag_iterations and, by request id, the iterations the capacity pass has taken
        # each waiting request in (dropped when its context starts)
        self.admission_lag = params.context_admission_lag_iterations
        self._taken_at: dict[int, int] = {}

    def transfer_tokens(self, req: Request, num_tokens: int) -> int:
        # (GUARANTEED_NO_EVICT: a request handed over or migrated here holds its whole
        # reservation, as an admission here takes it; else the running requests' growth was
        # no longer guaranteed and a decode could find no block)
        if not self.no_evict:
            return num_tokens
        return max(num_tokens, req.prompt_len + max(req.max_tokens or 0, req.output_len))

    def transfer_room(self) -> int:
        return self.kv.num_free_blocks - (self._reserved(self.running) if self.no_evict else 0)

    def total_blocks(self, req: Request) -> int:  # (for a batch: `_reserved`)
        """KV blocks `req` holds at its end: prompt + max new tokens (what the no-evict policy reserves)."""
        new = max(req.max_tokens or 0, req.output_len)
        return cdiv(req.prompt_len + new, self.kv.block_size)

    def add_request(self, req: Request, now_s: float) -> None:
        self._totals[req] = self.total_blocks(req)
        super().add_request(req, now_s)

    def add_transferred(self, req: Request, now_s: float) -> None:
        self._totals[req] = self.total_blocks(req)
        self._partial = True
        super().add_transferred(req, now_s)

    def _total_of(self, req: Request) -> int:
        """`total_blocks(req)`, kept by request (computed here for a request that reached this
        scheduler without `add_request`)."""
        total = self._totals.get(req)
        return total if total is not None else self._totals.setdefault(req, self.total_blocks(req))

    def forget(self, req: Request) -> None:
        self._totals.pop(req, None)
        self._taken_at.pop(req.id, None)

    # Its own table only: a step's finishes leave `running` in one pass (`finish_all`).
    batch_free_forget = forget

    def _reserved(self, reqs: list[Request], total: int | None = None) -> int:
        """The blocks `reqs` still reserve under GUARANTEED_NO_EVICT: their `total_blocks` less
        those they hold, the totals read from `_totals` instead of computed per request and
        iteration (`total`: their sum, where the caller has it: `_total_sum`)."""
        return (self._total_sum(reqs) if total is None else total) - sum(self.kv.num_blocks_list(reqs))

    def _total_sum(self, reqs: list[Request]) -> int:
        """`total_blocks` of `reqs`, summed (at least what they still reserve: `_reserved`)."""
        totals = self._totals
        try:
            return sum(map(totals.__getitem__, reqs))
        except KeyError:  # (a request that reached `running` without `add_request`)
            for r in reqs:
                totals.setdefault(r, self.total_blocks(r))
            return sum(map(totals.__getitem__, reqs))

    def admission_error(self, req: Request) -> str | None:
        need, have = self.total_blocks(req), self.kv.num_gpu_blocks
        if need > have:
            return f"prompt + max new tokens need {need} KV blocks; the cache has {have}"
        if not self.chunked and req.prompt_len > self.max_num_tokens:
            return (f"a prompt of {req.prompt_len} tokens exceeds max_num_tokens {self.max_num_tokens} "
                    "with chunked context off (enable_chunked_context: true would chunk it)")
        return None

    # ---- one iteration -------------------------------------------------------------
    def schedule(self, now_s: float) -> SchedulerOutput:
        out = SchedulerOutput()
        running = self.running
        self._blocked_head = None
        self._capacity_blocked = False
        if not self.waiting and running and len(running) <= min(self.max_num_tokens, self.max_batch_size) \
                and self.kv.allocate_decodes(running):
            # Same outcome as the passes below: everyone generates and every block fits.
            out.scheduled = one_token_each(running)
            out.num_known_decodes = len(running)
            out.known_decodes = running[:]
            return out
        if self.no_evict:
            started, candidates = self._no_evict()
        else:
            started, candidates = self._max_utilization(out)
        if self.admission_lag and candidates:
            candidates = self._lag_contexts(started, candidates)
        self._micro_batch(started, candidates, out)
        return out

    def _no_evict(self) -> tuple[list[Request], list[Request]]:
        """GUARANTEED_NO_EVICT: (started requests, generation first; waiting requests whose whole
        reservation fits). Running requests never pass `max_batch_size`, so all are kept."""
        kv = self.kv
        running = self.running
        gens = decoding_requests(running) if self._partial else list(running)
        started = gens + [r for r in running if not r.is_decoding] if len(gens) < len(running) else gens
        available = self._room = kv.num_free_blocks - self._reserved(started)
        candidates = []
        for req in self.waiting:
            if len(started) + len(candidates) >= self.max_batch_size:
                self._blocked_head, self._capacity_blocked = req, True
                break
            need = self.total_blocks(req) - kv.num_blocks_of(req.id)
            if need > available:  # reservations only move between free and held while requests decode
                self._blocked_head, self._capacity_blocked = req, True
                break
            available -= need
            candidates.append(req)
        return started, candidates

    def _lag_contexts(self, started: list[Request], candidates: list[Request]) -> list[Request]:
        """context_admission_lag_iterations: the candidates the capacity pass has taken in more than that
        many iterations (this one included; each keeps its slot and reservation meanwhile, counted above);
        all of them if nothing started (an idle engine runs them at once). Counted per request over the
        iterations that take it (a paused request taken again counts afresh); while any count is kept
        `fast_forward` does not repeat, so every such iteration is a `schedule` call."""
        taken = self._taken_at
        for req in candidates:
            taken[req.id] = taken.get(req.id, 0) + 1
        if not started:
            return candidates
        lag = self.admission_lag
        return [req for req in candidates if taken[req.id] > lag]

    def _max_utilization(self, out: SchedulerOutput) -> tuple[list[Request], list[Request]]:
        """MAX_UTILIZATION: each request takes its next step's blocks; a started request that
        does not fit pauses the last started one (recompute) and tries again."""
        kv = self.kv
        taken = 0  # blocks the requests taken so far will use this step
        started: list[Request] = []
        i = 0
        while i < len(self.running):
            req = self.running[i]
            need = kv.blocks_needed(req, 1 if req.is_decoding else req.num_tokens - req.num_computed_tokens)
            if taken + need <= kv.num_free_blocks:
                taken += need
                started.append(req)
                i += 1
                continue
            victim = self.running.pop()  # the last started request (maybe `req` itself); its blocks are freed
            self.preempt(victim, out)
        free = kv.num_free_blocks - taken
        if out.preempted:
            return started, []  # the walk ended at a paused request: nothing after it is looked at
        candidates = []
        for req in self.waiting:
            need = cdiv(req.num_tokens, kv.block_size)
            if len(started) + len(candidates) >= self.max_batch_size or need > free:
                # decodes only take free blocks: it stays out until a finish
                self._blocked_head, self._capacity_blocked = req, True
                break
            free -= need
            candidates.append(req)
        return started, candidates

    def _micro_batch(self, started: list[Request], candidates: list[Request], out: SchedulerOutput) -> None:
        """The micro-batch scheduler over the fitting requests, in order."""
        budget, cap = self.max_num_tokens, self.max_batch_size
        fitting = started + candidates
        # the leading generation requests in one call (the same as `allocate_slots(req, 1)` for
        # each in order while they fit; the loop goes on from the first one left)
        gen = self.gen_tokens
        count = self.kv.allocate_leading_decodes(fitting[:min(budget // gen, cap)])
        tokens = count * gen
        out.scheduled += one_token_each(fitting[:count])
        contexts: list[tuple[Request, int, object]] = []  # (request, context tokens left, hits or None)
        for i in range(count, len(fitting) if count < cap else count):
            req = fitting[i]
            if req.is_decoding:
                if tokens + gen > budget:
                    break
                if not self.kv.allocate_slots(req, 1):
                    raise AssertionError("trtllm: a scheduled generation request found no KV block")
                out.scheduled.append((req, 1))
                tokens += gen
            else:
                hits = self.kv.get_computed_blocks(req) if i >= len(started) else None  # a new context
                left = req.num_tokens - req.num_computed_tokens - (len(hits) * self.kv.block_size if hits else 0)
                if not self.chunked and tokens + left > budget:
                    if left > budget:  # a paused context longer than any batch: budget-sized pieces
                        n = (budget - tokens) // self.kv.block_size * self.kv.block_size
                        contexts += [(req, n, hits)] if n > 0 else []
                    else:  # the batch's token count stays put while it decodes; hits may not
                        self._blocked_head = req if hits is not None and self._hits_hold(req, hits) else None
                        self._capacity_blocked = False
                    break
                contexts.append((req, left, hits))
                tokens += 0 if self.chunked else left
            count += 1
            if count >= cap:
                break
        out.num_known_decodes = len(out.scheduled)
        if contexts and self.adp_hold is not None:  # attention DP: batch waiting is off (PyExecutor._schedule)
            if self.adp_hold:
                return
        elif contexts and out.scheduled and self._hold_contexts(contexts, len(out.scheduled)):
            return
        for req, n, hits in self._size_chunks(contexts, budget - tokens):
            self._run_context(req, n, hits, out)

    def _hits_hold(self, req: Request, hits) -> bool:
        """May decode-only steps leave the prefix hits of waiting `req` as they are or fewer (a
        context the token budget holds then stays held until a finish: `fast_forward`)? Evictions
        only take hits; a hit grows only if a running request registers the key of `req`'s first
        block not hit, filling that block by a decode (its prompts ran whole), which takes a
        request whose hash ids share that block's (chained: the whole prefix to it): a
        continuation of a running request, which the generated workloads never queue, but a
        trace might. So: no keys, or no running request sharing that hash id."""
        if not req.kv_block_keys:
            return True
        ids, tokens = req.hash_ids, req.hash_block_tokens
        g = ((hits.num_keyed + 1) * self.kv.block_size - 1) // tokens  # (the hash block of its first block not hit)
        if g >= len(ids):
            return True
        h = ids[g]
        return not any(len(r.hash_ids) > g and r.hash_block_tokens == tokens and r.hash_ids[g] == h
                       for r in self.running)

    def _hold_contexts(self, contexts: list, num_generation: int) -> bool:
        """Batch waiting (`PyExecutor._waiting_requests`, applied only when the step has both
        context and generation requests): hold the contexts back this iteration unless they have
        waited `batch_wait_timeout_iters` or the step's tokens (each context's whole token list,
        one per generation request) reach `batch_wait_max_tokens_ratio * max_num_tokens`."""
        if not (self.wait_iters or self.wait_ratio):
            return False
        tokens = sum(req.num_tokens for req, _, _ in contexts) + num_generation
        if self._waited_iters >= self.wait_iters or tokens >= self.wait_ratio * self.max_num_tokens:
            self._waited_iters = 0
            return False
        self._waited_iters += 1
        return True

    def _size_chunks(self, contexts: list, capacity: int) -> list:
        """Chunk sizes, first come first served, when the contexts do not all fit `capacity`."""
        if not self.chunked or sum(left for _, left, _ in contexts) <= capacity:  # off: sized above
            return contexts
        unit = self.kv.block_size
        sized = []
        for req, left, hits in contexts:
            n = min(left, capacity)
            if n != left:
                n = n // unit * unit
            capacity -= n
            if n > 0:
                sized.append((req, n, hits))
        return sized

    def _run_context(self, req: Request, n: int, hits, out: SchedulerOutput) -> None:
        """Schedule `n` context tokens of `req`, starting it (whole context's blocks) if new."""
        if hits is None:  # a started context: its blocks were allocated at its first chunk
            self.kv.allocate_slots(req, n)
            out.scheduled.append((req, n))
            return
        num_cached = len(hits) * self.kv.block_size
        self._room -= self._total_of(req) - self.kv.num_blocks_of(req.id)  # (its reservation, now started)
        self._taken_at.pop(req.id, None)
        if hits:  # the capacity pass counted its whole context: with fewer blocks taken or
            self._capacity_blocked = False  # reserved, the next step's pass may let the head in
        if not self.kv.allocate_slots(req, req.num_tokens - num_cached, hits):
            raise AssertionError("trtllm: an admitted context found no KV blocks")
        if num_cached + n < req.num_tokens:
            self._partial = True
        self.waiting.remove(req)
        self.start(req, num_cached, n, out)
