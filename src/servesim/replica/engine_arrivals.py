"""The engine's arrivals: a request reaching the replica is checked against its limits (one
clear rejection reason), given its prefix keys, and either queued with the stretch in flight
going on (`arrival_keeps`: the one rule for that) or made to cut it so the next step boundary
sees it; an idle engine starts a step once every arrival of the instant is queued.
"""

from __future__ import annotations

from servesim.core.loop import PRIO_STEP_START
from servesim.replica.chunk_join import keeps_in_chunks
from servesim.replica.chunk_rest import end_at_rest, rest_keeps_arrival
from servesim.replica.kv_cache import block_keys
from servesim.replica.schedulers.base import Scheduler
from servesim.replica.stretch import Stretch
from servesim.workload.request import Request, RequestState


class EngineArrivals:
    """`Engine`'s arrival path (`replica/engine.py`)."""

    __slots__ = ()  # (`Engine` holds the state in its slots)

    def add_request(self, req: Request, now_s: float) -> None:
        """A request reaches this replica at `now_s` (the caller records it)."""
        if self.on_event:
            self.on_event()
        if self.on_change:
            self.on_change(now_s)
        reason = self._reject_reason(req)
        if reason:
            req.state = RequestState.REJECTED
            req.finish_s = now_s
            req.extra["reject_reason"] = reason
            self.on_done(req, now_s)
        else:
            if req.hash_ids and self.kv.enable_prefix_caching:
                req.kv_block_keys = block_keys(req, self.kv.block_size, self.shared_keys_only)
                self.keys_seen = True
            st = self.stretch
            settled = False
            if st is not None and self.scheduler.head_read_outside:  # (no call per arrival for the others)
                settled = self.settles_for(req, now_s)  # (its lift then reads stepping's counters, at once)
                st = self.stretch
            # A request the stretch's steps would not look at changes nothing they repeat: it
            # goes on, logging one more waiting request from the step after the one in flight
            # (the first step whose `schedule` would see it when stepping).
            keep = st is not None and self.arrival_keeps(st.spends_budget, req)
            # Inside the chunk steps of a prompt that joined a stretch with its chunks, the
            # budget is that prompt's up to its join step L: kept waiting as a chunk stretch
            # keeps it, the stretch ending at L, where the newcomer may join beside the prompt's
            # rest (`chunk_join.chain_join`), rather than cut at the step in flight
            # (a stretch of `chunk_rest.py` holds it to its own prompt's rest by `held` below,
            # which also extends it there; it may join there all the same: `chain_at`)
            chain = (not keep and type(st) is Stretch and st.chain_at is not None and st.chain_at[0] != st.spent_to
                     and keeps_in_chunks(st, now_s) and self.arrival_keeps(True, req))
            # (inside a prompt's full chunks planned with its rest: it waits to the rest's step)
            held = (not keep and not chain and type(st) is Stretch and st.spent_to
                    and rest_keeps_arrival(self, st, req, now_s))
            if st is not None and not settled:
                self.scheduler.arriving_in_stretch(req)
            self.scheduler.add_request(req, now_s)
            if keep:
                st.add_waiting(now_s)
            elif chain:
                st.add_waiting(now_s)
                st.final = True  # (never extended: it ends at L at the latest)
                if st.k > st.chain_at[0]:
                    st.truncate(st.chain_at[0])
                    self._schedule_stretch_end(st)
            elif held:
                end_at_rest(self, st, now_s)
            else:
                self.interrupt(now_s)
        if self._unevented is not None:  # (a sole replica's stretch left without an end event)
            self._settle()

    def settles_for(self, req: Request, now_s: float) -> bool:
        """Before `req` comes in at `now_s` (an arrival, a migrated request): settle the stretch
        in flight if the policy asks (`Scheduler.settles_before`); True if it did. Every change
        here while a stretch runs comes through this, so the boundary a settle runs again has
        nothing in its queues that came after it."""
        sched = self.scheduler
        if self.stretch is None or not sched.head_read_outside or not sched.settles_before(req):
            return False
        self.settle_before(now_s)
        return True

    def settle(self) -> None:
        """After an arrival that may not have reached this engine (the cluster ended it):
        the stretch left without an end event is settled as `add_request` settles it."""
        if self._unevented is not None:
            self._settle()

    def arrival_keeps(self, spends_budget: bool, req: Request | None) -> bool:
        """The one rule for an arrival while a stretch runs (`req`; None: the next one, whatever
        it is, a guess for pricing: `arrival_keeps_batch`): is it queued with the stretch going
        on, rather than cutting it? Never with KV ports. A stretch whose steps spend the whole
        token budget on one prompt's chunks (`spends_budget`: a `ChunkStretch`, a `SpecStretch`
        with a prompt; `repeats_chunk` holds whatever arrives) keeps any request but one naming
        a LoRA adapter (its arrival may start a load, a timer: cut when it comes) or one the
        policy acts on at once (`chunk_keeps_arrival`); any other, as the scheduler answers
        (`arrival_keeps_batch`)."""
        sched = self.scheduler
        return self.ports is None and (
            (spends_budget and (req is None or req.lora is None) and sched.chunk_keeps_arrival(req))
            or sched.arrival_keeps_batch(req))

    def interrupt(self, now_s: float) -> None:
        """Something changed here at `now_s`: cut the stretch in flight so the next step
        boundary sees it, or start a step if idle."""
        self._cut(now_s)
        if not self.busy:  # start after every arrival of this instant is queued, as a batch
            self.busy = True
            self.loop.schedule_soon(now_s, self._on_start, self._epoch, PRIO_STEP_START)

    def _reject_reason(self, req: Request) -> str | None:
        total = req.prompt_len + req.output_len
        if req.prompt_len < 1 or req.output_len < 1:
            return "empty prompt or output"
        max_model_len, max_prompt = self._arrival_caps
        if total > max_model_len:
            return f"prompt + output = {total} tokens > max_model_len {max_model_len}"
        if max_prompt is not None and req.prompt_len > max_prompt:
            return f"prompt of {req.prompt_len} tokens > max_num_batched_tokens without chunked prefill"
        if req.lora is not None and not self.scheduler.supports_lora:
            return f"LoRA adapters are not served by the {self.scheduler.name} scheduler"
        if total > self.kv.num_gpu_blocks * self.kv.block_size:  # (`cdiv(total, block_size)` blocks: once per arrival)
            return f"needs more KV blocks than the GPU has ({self.kv.num_gpu_blocks})"
        admission_error = self._admission_error
        return admission_error(req) if admission_error is not None else None

    def _policy_checks(self) -> None:
        """Bind the scheduler's own arrival check (None when it keeps the base policy's, which
        refuses nothing: no call per arrival for it). Whenever the scheduler is set."""
        # (read through the bound method, never `vars(sched)`: on CPython 3.11 reading an object's
        # `__dict__` moves its attributes from the inline values to a dict of their own for good,
        # and every later `sched.x` read and `sched.f()` call then misses its specialised form:
        # +4.5 k instructions a vllm azure-conv request at one replica, reg32)
        check = self.scheduler.admission_error
        own = getattr(check, "__func__", None) is not Scheduler.admission_error  # (an instance's own check has none)
        self._admission_error = check if own else None
