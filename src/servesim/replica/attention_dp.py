"""A replica with attention data parallelism: one scheduler and KV cache per attention rank.

With `perf.data_parallel_size` N > 1 (perf/attention_dp.py) the replica is N attention ranks in
lock-step. Each rank is what the engines run per DP rank: its own scheduler (the scenario's
policy, with the engine limits per rank) over its own KV cache (the rank's KV capacity). The
replica's API server assigns every new request to one rank for its whole life, as the engine
does (`data_parallel_balance`):

- vllm: the rank with the least `4 x waiting + running`, ties to the lowest rank (vLLM's
  `DPLBAsyncMPClient`: the coordinator's per-engine counts, which servesim reads exactly where
  vLLM reads them up to 100 ms stale plus its own increments);
- trtllm: among the ranks below the balanced request count (all active requests and this one
  spread evenly, or the busiest rank's count), the one with the fewest active prompt tokens,
  then the fewest requests, then the lowest rank (TensorRT-LLM's attention-DP
  `_balance_requests_across_ranks`, one request at a time);
- round_robin: rank after rank (SGLang's default `load_balance_method`).

Each step every rank schedules its own batch; the engine sees their union, and the step is
priced by the lock-step model with the per-rank split, which travels with the step's output
(`SchedulerOutput.rank_batches`, priced by `AttentionDPPerf.lockstep_step_time_s`). Steps are
not fast-forwarded (the time of a repeated step depends on each rank's batch, not on the sums the
fast paths price). KV hand-offs (prefill/decode pools) and live migration are not combined with
attention DP: the scenario refuses them (`Scenario._check_combinations`).
"""

from __future__ import annotations

from servesim.errors import InputError
from servesim.replica.attention_dp_balance import BalanceState, RankView, balance_step
from servesim.replica.kv_cache import KVCacheManager, cdiv
from servesim.replica.schedulers.batch_passes import decoding_requests
from servesim.replica.schedulers.base import NO_FAST_FORWARD, Scheduler, SchedulerOutput
from servesim.workload.request import Request

BALANCE_BY_ENGINE = {"vllm": "vllm", "trtllm": "trtllm", "sglang": "round_robin"}


class RanksKV:
    """The ranks' KV caches as the engine and the reports see one replica's: blocks summed."""

    through_in_order = False  # (`KVCacheManager.through_in_order`: the ranks' stretches are the engine's own)
    expected = None  # (`KVCacheManager.expected`, cleared by the engine: the ranks' caches allocate, told nothing)

    def __init__(self, caches: list[KVCacheManager], rank_of: dict[int, int]) -> None:
        self.caches = caches
        self.rank_of = rank_of  # request id -> its rank (the scheduler's map, shared)
        self.block_size = caches[0].block_size
        self.enable_prefix_caching = caches[0].enable_prefix_caching

    @property
    def num_gpu_blocks(self) -> int:
        return sum(kv.num_gpu_blocks for kv in self.caches)

    @property
    def num_free_blocks(self) -> int:
        return sum(kv.num_free_blocks for kv in self.caches)

    @property
    def num_queried_tokens(self) -> int:
        return sum(kv.num_queried_tokens for kv in self.caches)

    @property
    def num_hit_tokens(self) -> int:
        return sum(kv.num_hit_tokens for kv in self.caches)

    def num_blocks_of(self, req_id: int) -> int:
        return sum(kv.num_blocks_of(req_id) for kv in self.caches)

    def num_blocks_list(self, reqs: list[Request]) -> list[int]:
        return [self.num_blocks_of(r.id) for r in reqs]

    def num_cached_prefix_tokens(self, req: Request) -> int:
        return max(kv.num_cached_prefix_tokens(req) for kv in self.caches)

    def allocate_slots(self, req: Request, num_new_tokens: int) -> bool:
        """Slots in the request's own rank's cache (speculative decoding's lookahead slots)."""
        return self.caches[self.rank_of[req.id]].allocate_slots(req, num_new_tokens)

    def check_all_free(self) -> None:
        for kv in self.caches:
            kv.check_all_free()


def rank_batch(out: SchedulerOutput) -> tuple[list[tuple[int, int]], list[int]]:
    """(prefill chunks, decode contexts) of one rank's output, classified as the engine does
    (the rank's known decodes, a prefix of its batch, without the test)."""
    known = out.num_known_decodes
    scheduled = out.scheduled
    if known == len(scheduled):  # (a decode-only step: every step of a stretch of decodes)
        return [], [r.num_computed_tokens for r, _ in scheduled]
    prefills, ctxs = [], [r.num_computed_tokens for r, _ in scheduled[:known]]
    for r, n in scheduled[known:]:
        if n == 1 and r.num_output_tokens and r.prompt_len + r.num_output_tokens - r.num_computed_tokens == 1:
            ctxs.append(r.num_computed_tokens)
        else:
            prefills.append((n, r.num_computed_tokens))
    return prefills, ctxs


class AttentionDPScheduler(Scheduler):
    """The replica's scheduler seen by the engine: N rank schedulers behind one front (module doc)."""

    name = "attention_dp"

    def __init__(self, ranks: list[Scheduler], perf, balance: str) -> None:
        if balance not in ("vllm", "trtllm", "round_robin"):
            raise InputError(f"data_parallel_balance {balance!r}; allowed: vllm, trtllm, round_robin")
        self.ranks = ranks
        self.name = ranks[0].name  # the policy every rank runs (reports name it)
        self.perf = perf
        self.balance = balance
        self.params, self.config = ranks[0].params, ranks[0].config
        self.swap_mechanics = ranks[0].swap_mechanics
        self.swap_ready_s: dict[int, float] = {}
        self.num_engine_steps = 0
        self.rank_of: dict[int, int] = {}  # request id -> its rank, for its whole life here
        self.kv = RanksKV([r.kv for r in ranks], self.rank_of)
        self._tokens = [0] * len(ranks)  # active prompt tokens per rank (trtllm balance)
        self._next_rank = 0  # round_robin
        self._outs: list[SchedulerOutput] = []
        # TensorRT-LLM's context balance across the ranks (replica/attention_dp_balance.py), when
        # the rank policy has it switched on (TRTLLMParams.attention_dp_enable_balance)
        self._balance = BalanceState() if getattr(self.params, "attention_dp_enable_balance", False) else None
        for r in ranks:  # TensorRT-LLM's batch waiting is off with attention DP (PyExecutor._schedule)
            if hasattr(r, "adp_hold"):
                r.adp_hold = False

    # ---- views the engine, replica and reports read ------------------------------------
    @property
    def running(self) -> list[Request]:
        return [req for r in self.ranks for req in r.running]

    @property
    def waiting(self) -> list[Request]:
        return [req for r in self.ranks for req in r.waiting]

    @property
    def swapped(self) -> list[Request]:
        return [req for r in self.ranks for req in r.swapped]

    @property
    def num_waiting(self) -> int:
        return sum(r.num_waiting for r in self.ranks)

    @property
    def num_running(self) -> int:
        return sum(r.num_running for r in self.ranks)

    def unfinished(self) -> list[Request]:
        return [req for r in self.ranks for req in r.unfinished()]

    # ---- requests ------------------------------------------------------------------------
    def pick_rank(self, req: Request) -> int:
        """The rank a new request goes to (`balance`, module docstring)."""
        n = len(self.ranks)
        if self.balance == "round_robin":
            rank, self._next_rank = self._next_rank, (self._next_rank + 1) % n
            return rank
        active = [r.num_waiting + r.num_running for r in self.ranks]
        if self.balance == "vllm":
            return min(range(n), key=lambda i: (4 * self.ranks[i].num_waiting + self.ranks[i].num_running, i))
        cap = max(cdiv(sum(active) + 1, n), max(active))
        open_ranks = [i for i in range(n) if active[i] < cap]
        return min(open_ranks, key=lambda i: (self._tokens[i], active[i], i))

    def add_request(self, req: Request, now_s: float) -> None:
        rank = self.rank_of[req.id] = self.pick_rank(req)
        self._tokens[rank] += req.prompt_len
        self.ranks[rank].add_request(req, now_s)

    def add_transferred(self, req: Request, now_s: float) -> None:
        raise InputError("attention data parallelism does not take KV hand-offs (disaggregation)")

    def admission_error(self, req: Request) -> str | None:
        blocks = min(kv.num_gpu_blocks for kv in self.kv.caches)
        if cdiv(req.prompt_len + req.output_len, self.kv.block_size) > blocks:
            return f"needs more KV blocks than one attention-DP rank has ({blocks})"
        return self.ranks[0].admission_error(req)

    def _leave(self, req: Request) -> int:
        rank = self.rank_of.pop(req.id)
        self._tokens[rank] -= req.prompt_len
        return rank

    def finish(self, req: Request, now_s: float) -> None:
        self.ranks[self._leave(req)].finish(req, now_s)

    def forget(self, req: Request) -> None:
        self.ranks[self._leave(req)].forget(req)

    def remove(self, req: Request, now_s: float) -> bool:
        rank = self.rank_of.get(req.id)
        if rank is None or not self.ranks[rank].remove(req, now_s):
            return False
        self._leave(req)
        return True

    def drain(self, now_s: float) -> list[Request]:
        held = [req for r in self.ranks for req in r.drain(now_s)]
        self.rank_of.clear()
        self._tokens = [0] * len(self.ranks)
        return held

    def swap_done(self, req: Request, ready_s: float) -> None:
        self.ranks[self.rank_of[req.id]].swap_done(req, ready_s)

    def next_timer_s(self) -> float:
        return min(r.next_timer_s() for r in self.ranks)

    # ---- steps ---------------------------------------------------------------------------
    def schedule(self, now_s: float) -> SchedulerOutput:
        if self._balance is not None:
            hold = self._hold_contexts()
            for r in self.ranks:
                r.adp_hold = hold
        self._outs = [r.schedule(now_s) for r in self.ranks]
        merged = SchedulerOutput()
        # the engine's hint (its known decodes, a prefix of the batch): the ranks' outputs are
        # concatenated, so the leading ranks' all-decode batches plus the next rank's known prefix
        known, leading = 0, True
        for o in self._outs:
            if leading:
                known += o.num_known_decodes
                leading = o.num_known_decodes == len(o.scheduled)
            merged.scheduled += o.scheduled
            merged.preempted += o.preempted
            merged.swapped_out += o.swapped_out
            merged.swapped_in += o.swapped_in
            merged.swap_out_blocks += o.swap_out_blocks
            merged.swap_in_blocks += o.swap_in_blocks
        merged.num_known_decodes = known
        if merged.scheduled:
            merged.rank_batches = [rank_batch(o) for o in self._outs]
        return merged

    def _hold_contexts(self) -> bool:
        """Whether the ranks hold their contexts this iteration (TensorRT-LLM's balance)."""
        views = []
        for r in self.ranks:
            gens = len(decoding_requests(r.running))
            idle = not r.running and not r.num_waiting  # runs the dummy generation request
            views.append(RankView(has_context=bool(r.num_waiting) or gens < len(r.running),
                                  num_generation=1 if idle else gens,
                                  max_batch_size=getattr(r, "max_batch_size", r.config.max_num_seqs)))
        hold, self._balance = balance_step(self._balance, views, self.params.attention_dp_timeout_iters,
                                           self.params.attention_dp_batching_wait_iters)
        return hold

    def fast_forward(self, output: SchedulerOutput):
        return NO_FAST_FORWARD

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        return False

    def resume_at(self, num_engine_steps: int) -> None:
        self.num_engine_steps = num_engine_steps
        for r in self.ranks:
            r.resume_at(num_engine_steps)

    def end_step(self, output: SchedulerOutput, now_s: float, num_engine_steps: int) -> None:
        self.num_engine_steps = num_engine_steps
        for r, o in zip(self.ranks, self._outs):
            r.end_step(o, now_s, num_engine_steps)


def make_attention_dp_parts(cls: type[Scheduler], params, config, perf, num_gpu_blocks: int, num_cpu_blocks: int,
                            recent_keys=None) -> tuple[AttentionDPScheduler, RanksKV]:
    """One replica's parts: `perf.data_parallel_size` rank schedulers of policy `cls`, each on its
    own KV cache of `num_gpu_blocks` (the rank's capacity), behind one AttentionDPScheduler."""
    ranks = []
    for _ in range(perf.data_parallel_size):
        kv = cls.make_kv_cache(num_gpu_blocks, config.block_size, config.enable_prefix_caching, num_cpu_blocks)
        if recent_keys is not None and isinstance(kv, KVCacheManager):
            kv.share_recent_keys(recent_keys)
        ranks.append(cls(params, config, kv, perf))
    balance = perf.data_parallel_balance
    sched = AttentionDPScheduler(ranks, perf, BALANCE_BY_ENGINE.get(perf.engine, "vllm") if balance == "auto" else balance)
    return sched, sched.kv
