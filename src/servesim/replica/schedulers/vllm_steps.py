"""vLLM's scheduling steps, written once for the policies built on them.

`vllm`, `priority` (and `edf`, `autellix`, `batchllm`), `andes`, `fastswitch`, `hygen` and
`vllm-v0` differ in *order* (which request first, which victim) but share vLLM's mechanics:
- the running pass: each running request, in the policy's order, gets `min(remaining,
  budget)` tokens (capped by `long_prefill_token_threshold` and `max_model_len`); when its
  blocks cannot be allocated a victim chosen by the policy is evicted, until it fits or is
  itself the victim (`schedule_running`);
- eviction: the victim leaves `running`, its tokens already given this step are refunded to
  the budget, and it is swapped to the CPU tier (if the policy swaps and the tier has room)
  or preempted by recompute (`evict`, `swap_or_recompute`);
- admission: a waiting request gets its prefix-cache hits and a first chunk; if its blocks
  (or a sequence slot) are missing the policy may make room, else the head blocks (`admit`);
- swap-in: a swapped request comes back to the GPU with one block of room for its next token,
  joins `running` and is scheduled (`swap_in_room`, `resume`).
"""

from __future__ import annotations

from operator import indexOf, itemgetter
from typing import Callable

from servesim.replica.schedulers.base import Scheduler, SchedulerOutput
from servesim.replica.schedulers.outputs import append_decodes, one_token_each
from servesim.workload.request import Request

# Frees room for a request that cannot get its blocks or a sequence slot: returns the tokens
# it took back from this step's batch, or None when no room can be made.
MakeRoom = Callable[[Request, SchedulerOutput], "int | None"]


class VLLMSteps(Scheduler):
    """A `Scheduler` with vLLM's running pass, eviction, admission and swap-in."""

    def pick_victim(self) -> Request:
        """The running request to evict when the running pass runs out of blocks (vLLM v1
        FCFS: the last admitted)."""
        return self.running[-1]

    def reclaim(self, req: Request) -> bool:
        """Free KV without evicting a running request (a policy's pins); True if it did."""
        return False

    def tokens_for(self, req: Request, budget: int) -> int:
        """Tokens running `req` gets this step: the rest of its prompt (or 1 when decoding),
        capped by `long_prefill_token_threshold`, the budget and `max_model_len` (<= 0: none)."""
        computed = req.num_computed_tokens
        n = req.prompt_len + req.num_output_tokens - computed
        threshold = self.config.long_prefill_token_threshold
        if 0 < threshold < n:
            n = threshold
        return min(n, budget, self.config.max_model_len - 1 - computed)

    def schedule_running(self, out: SchedulerOutput, budget: int, swap: bool = False) -> int:
        """vLLM's running pass over `self.running` in its current order; returns the budget left.

        Stops at the first request that is itself evicted (nothing after it runs this step).
        """
        running = self.running
        i = 0
        if not out.scheduled and running:
            # Fast path, same outcome as the loop's first passes: the leading requests that
            # decode and fit get their one token each, in order (no eviction); the loop goes on
            # from the first one left (a prompt chunk, or one without a free block).
            i = self.kv.allocate_leading_decodes(running if len(running) <= budget else running[:budget])
            if i:
                out.known_decodes = known = running[:i]
                out.scheduled = one_token_each(known)
                out.num_known_decodes = i
                budget -= i
                if i == len(running):
                    return budget
        scheduled = out.scheduled
        cfg = self.config
        threshold = cfg.long_prefill_token_threshold
        max_len = cfg.max_model_len
        allocate = self.kv.allocate_slots
        while i < len(running) and budget > 0:
            req = running[i]
            computed = req.num_computed_tokens
            n = req.prompt_len + req.num_output_tokens - computed  # `tokens_for`, inlined (hot loop)
            if 0 < threshold < n:
                n = threshold
            if n > budget:
                n = budget
            if n > max_len - 1 - computed:
                n = max_len - 1 - computed
            if n <= 0:
                i += 1
                continue
            bulk = n != 1  # a prompt chunk: the decodes after it may go in bulk
            while not allocate(req, n):
                if self.reclaim(req):
                    continue
                victim = self.pick_victim()
                refund = self.evict(victim, out, swap)
                bulk = True
                if refund:  # it ran earlier in this pass: the requests after it moved up by one
                    budget += refund
                    i -= 1
                if victim is req:
                    return budget
            scheduled.append((req, n))
            budget -= n
            i += 1
            if bulk and i < len(running) and budget > 0:
                # After a prompt chunk or an eviction (the victim's blocks usually cover many of
                # the decodes after `req` under overload) take the decodes that follow in one
                # call, as the fast path above: the same outcome as allocating each in order up
                # to the first that is not a decode or does not fit.
                k = self.kv.allocate_leading_decodes(running[i:i + budget])
                if k:
                    append_decodes(out, running[i:i + k])
                    budget -= k
                    i += k
        return budget

    # The running pass allocates each prompt chunk's blocks and registers the keyed blocks it
    # completes (`allocate_slots`, vLLM v1): a chunk stretch grows the prompt as it goes.
    chunks_allocate = True

    def repeats_running_chunk(self, output: SchedulerOutput, num_decodes: int) -> bool:
        """The shape of a step `repeats_chunk` may repeat, for a policy whose `schedule` is this
        class's running pass in a fixed order and then an admission that a spent budget skips:
        nothing preempted or swapped, every running request scheduled, the first `num_decodes`
        with one token each and the last running request's chunk taking the whole budget they
        leave and leaving its prompt unfinished (then no budget is left for anything else, and
        the next passes give the same tokens, blocks permitting: the engine checks them)."""
        if output.preempted or output.swapped_out or output.swapped_in:
            return False
        scheduled, running = output.scheduled, self.running
        if len(scheduled) != num_decodes + 1 or len(running) != num_decodes + 1:
            return False
        req, chunk = scheduled[-1]
        return (req is running[-1] and chunk == self.config.max_num_batched_tokens - num_decodes
                and req.num_computed_tokens + chunk < req.num_tokens)

    def evict(self, victim: Request, out: SchedulerOutput, swap: bool = False, reuse_key=None) -> int:
        """Take running `victim` off the GPU (`swap_or_recompute`); return the tokens it had
        been given this step, now removed from the batch (the caller refunds them)."""
        refund = 0
        scheduled = out.scheduled
        # its entry (a request has at most one). An admission's victim (`_make_room`: the
        # running request with the largest key, or one admitted since) sits among the last
        # few entries, so those are looked at first; else it is found in C (`Request` compares
        # by identity): a Python scan, or a list of the whole batch built per eviction, was
        # most of this under overload
        j = _tail_index(scheduled, victim)
        if j < 0:
            try:
                j = indexOf(list(map(itemgetter(0), scheduled[:-_TAIL])), victim)  # (empty when all were looked at)
            except ValueError:
                pass
        if j >= 0:
            if victim.num_shared_hash_ids is not None and self.may_swap:
                self.key_every_id(victim, out)  # (while its tokens of this step are in the output)
            refund = scheduled[j][1]
            del scheduled[j]
            if j < out.num_known_decodes:  # the known decodes stay a prefix of `scheduled`
                out.num_known_decodes -= 1
                out.known_decodes = None  # (the engine reads them from `scheduled`)
            if out.decode_runs:  # the runs' entries after it move up by one
                for run in out.decode_runs:
                    if run[1] > j:
                        run[1] -= 1
                        if run[0] > j:
                            run[0] -= 1
        # It is in `running` once, near its end too: there a scan from the front (`list.remove`)
        # compared every request before it
        running = self.running
        i = _tail_position(running, victim)
        if i < 0:
            running.remove(victim)
        else:
            del running[i]
        self.swap_ready_s.pop(victim.id, None)
        self.swap_or_recompute(victim, out, swap, reuse_key)
        return refund

    def swap_or_recompute(self, req: Request, out: SchedulerOutput, swap: bool, reuse_key=None) -> None:
        """Preempt `req` (already out of `running`): swap it to the CPU tier if `swap` and the
        tier has room (vLLM v0 would fail instead when it has none), else by recompute."""
        if swap and self.swap_out(req, out, reuse_key):
            self.swapped.append(req)
        else:
            self.preempt(req, out)

    def first_chunk(self, req: Request, num_cached: int, budget: int) -> int:
        """Tokens a waiting request gets when admitted with `num_cached` prompt tokens hit:
        the rest of its prompt, capped by `long_prefill_token_threshold` and `budget`; 0 if it
        does not fit the budget and chunked prefill is off."""
        _, _, threshold, chunked = self.limits
        n = req.prompt_len + req.num_output_tokens - num_cached  # (`num_tokens`, without its property call)
        if 0 < threshold < n:
            n = threshold
        if not chunked and n > budget:
            return 0
        return budget if budget < n else n

    def admit(self, req: Request, budget: int, out: SchedulerOutput, make_room: MakeRoom | None = None) -> int | None:
        """Admit waiting `req` with its prefix-cache hits and first chunk; the budget left, or
        None (nothing admitted) if it does not fit. While its blocks or a sequence slot are
        missing, `make_room` may free some (the hits are looked up again after each)."""
        kv = self.kv
        max_num_seqs = self.config.max_num_seqs
        hits = kv.get_computed_blocks(req)
        num_cached = len(hits) * kv.block_size
        ext = external_tokens(req, num_cached, kv.block_size)
        n = self.first_chunk(req, num_cached + ext, budget)
        if n <= 0:
            return None
        while len(self.running) >= max_num_seqs or not kv.allocate_slots(req, ext + n, hits):
            refund = make_room(req, out) if make_room is not None else None
            if refund is None:
                return None
            budget += refund
            hits = kv.get_computed_blocks(req)  # a victim's freed blocks may now be hits
            num_cached = len(hits) * kv.block_size
            ext = external_tokens(req, num_cached, kv.block_size)
            n = self.first_chunk(req, num_cached + ext, budget)  # > 0: the budget grew, the hits too
        self.waiting.remove(req)
        req.extra.pop("kv_store_tokens", None)  # loaded once: a recompute after preemption starts over
        self.start(req, num_cached + ext, n, out)
        return budget - n

    def swap_in_room(self, req: Request) -> int:
        """GPU blocks left free if swapped `req` came back with a block for its next token."""
        kv = self.kv
        return kv.num_free_blocks - kv.num_cpu_blocks_of(req.id) - 1

    def resume(self, req: Request, out: SchedulerOutput, num_tokens: int, keep_cpu_copy: bool = False) -> int:
        """Swap `req` back in (the caller checked `swap_in_room`), make it running and schedule
        it with `num_tokens` tokens if they get blocks (0: not this step); the tokens scheduled."""
        self.swapped.remove(req)
        self.swap_in(req, out, keep_cpu_copy)
        self.running.append(req)
        if num_tokens > 0 and self.kv.allocate_slots(req, num_tokens):
            out.scheduled.append((req, num_tokens))
            return num_tokens
        return 0


def external_tokens(req: Request, num_cached: int, block_size: int) -> int:
    """Prompt tokens beyond the GPU prefix hits whose KV a cluster KV store has loaded for
    this request (`req.extra["kv_store_tokens"]`, set by the cluster before the request
    reaches the engine), in whole blocks, the last prompt token excluded: vLLM v1's
    `num_external_computed_tokens` from a KV connector (LMCache, Mooncake store). Their blocks
    are allocated with the new tokens' and enter the prefix cache like computed ones."""
    stored = req.extra.get("kv_store_tokens", 0)
    if stored <= num_cached:
        return 0
    top = min(stored, req.num_tokens - 1) // block_size * block_size
    return max(top - num_cached, 0)


_TAIL = 8  # entries of a step's output `evict` looks at first, from the end
# Requests are looked for with `operator.indexOf`, not `list.index`: a miss of the latter raises a
# ValueError whose message holds the missing item's repr, and a `Request`'s (every field, its
# hash ids among them) was 1.3 % of autellix azure-conv-10x 1.


def _tail_index(scheduled: list, req: Request) -> int:
    """The index of `req`'s entry among the last `_TAIL` of `scheduled`, or -1."""
    n = len(scheduled)
    for j in range(n - 1, max(n - 1 - _TAIL, -1), -1):
        if scheduled[j][0] is req:
            return j
    return -1


def _tail_position(reqs: list, req: Request) -> int:
    """The index of `req` among the last `_TAIL` of `reqs`, or -1. (Found in C: a loop from
    the end costs more in bytecode than the few compares before the victim.)"""
    tail = reqs[-_TAIL:]
    try:
        return len(reqs) - len(tail) + indexOf(tail, req)
    except ValueError:
        return -1
