"""SGLang's fast-forward answers (`sglang.py`): arrivals joining a stretch as a prefill batch
(`Stretch.stall`: the decodes wait one step), the order and kind of the decode steps that
repeat, and decodes behind a held queue head (admitted inside admission stretches at a finish,
or above the ratio's floor at the step its reserve lets it in: `sglang_admits.py`).
"""

from __future__ import annotations

from servesim.replica.schedulers.arrival_joins import whole_prompts
from servesim.replica.schedulers.batch_passes import CLIP_MAX_NEW_TOKENS
from servesim.replica.schedulers.outputs import (
    NO_FAST_FORWARD, REPEAT_AFTER_PREFILL, REPEAT_DECODES, REPEAT_THROUGH, FastForward, SchedulerOutput,
)
from servesim.workload.request import Request

_REPEAT_ADMITTING = FastForward(repeat=True, after_prefill=True, admissions_only=True)


class SGLangStretches:
    """The fast-forward methods of `SGLangScheduler` (which holds the state they use)."""

    stalls_decodes = True  # (a prefill batch runs alone; `arrivals_join` declines mixed chunks)

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        # `_prefill_batch` on a queue of newcomers in FCFS order, nothing chunked, transferred
        # or in an inbox: each whole within the chunk budget and `max_running` (on `running`,
        # which still lists the stretch's departed requests), and after the first within what
        # `max_prefill_tokens` leaves; the token rule (`rem_total`) is `join_blocks`'.
        # (not with `consecutive_prefill_launch_share`: a prompt step's first tokens then wait for
        # the next step's kind, which `schedule` decides step by step)
        # (nor with the recv skipper, `scheduler_recv_interval` > 1: `schedule` restarts its count
        # at a prompt step, which a join inside a stretch would leave as it was)
        if (self.params.enable_mixed_chunk or self.params.schedule_policy != "fcfs" or self.chunked is not None
                or self._transferred or self._inbox or self.params.consecutive_prefill_launch_share
                or self.params.scheduler_recv_interval > 1):
            return None
        joins = whole_prompts(self.waiting, len(self.running), 0, self.max_running, self.chunk_size,
                              lambda req, budget: req.num_tokens if req.num_tokens <= budget else 0)
        rem_input = self.params.max_prefill_tokens
        for j, (_, n) in enumerate(joins or ()):
            if j and n >= rem_input:
                return None
            rem_input -= n
        return joins

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        for req, n in joins:
            self.kv.allocate_slots(req, n)  # (no tree hit: `whole_prompts` took requests without keys)
            self.waiting.remove(req)
            self.start(req, 0, n, out)
        if self._mark is not None:
            self._mark += 1  # (the ratio decays per decode step: not for the prompt-only step)

    def join_blocks(self, joins: list[tuple[Request, int]]) -> tuple[int, int]:
        # Admission needs each request's new tokens plus its clipped `max_new` below `rem_total`
        # (free tokens less the running requests' reserve). The reserve over `running` (which
        # still lists departed requests, their generated tokens as at the stretch's start) at the
        # ratio of the stretch's start (it only decays) is at least stepping's, so blocks left
        # free above the prompts' for it and the totals, with a block to spare for the floats'
        # rounding, admit the requests there too.
        blocks, _ = super().join_blocks(joins)
        total = sum([n + min(max(self.max_new(req) - req.num_output_tokens, 0), CLIP_MAX_NEW_TOKENS) for req, n in joins])
        return blocks, max(int((total + self._reserve()) // self.kv.block_size) + 2 - blocks, 0)

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        # A newcomer joins the FCFS queue behind a head held until the next finish (where the
        # stretch asks `finish_admits`, which reads the whole queue).
        return self._held and self.params.scheduler_recv_interval == 1

    def repeat_order(self, output: SchedulerOutput) -> list[Request] | None:
        # Decode steps list `running` in its order. A mixed step (`enable_mixed_chunk`) lists
        # its prompt chunks first, another order than the decode steps after it: those
        # speculative steps are not repeated.
        running = self.running
        return list(running) if running and output.scheduled[0][0] is running[0] else None

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        # Nothing to prefill: decode steps repeat (the ratio only matters for admission). After
        # a prefill batch too, unless a prompt has prefix keys: its blocks join the tree at the
        # step's end (`on_step_end`), which must not wait for the stretch's end.
        if self._held and not output.preempted and output.num_known_decodes == len(self.running):
            # decodes behind a held head, which finishes admit inside the stretch; above the
            # ratio's floor also the steps whose smaller reserve lets it in (`admit_step`): only
            # an admission stretch takes those (speculative steps plan none)
            if not self._admits_at_finishes():
                return NO_FAST_FORWARD
            if self.new_token_ratio == self.min_ratio:
                return REPEAT_AFTER_PREFILL
            return NO_FAST_FORWARD if self.config.num_speculative_tokens else _REPEAT_ADMITTING
        if not (self.nothing_pending(output) and self.chunked is None) or self._inbox:
            return NO_FAST_FORWARD  # (an inbox is taken in at a step count: stepped to it)
        # (the known decodes, a prefix of `scheduled`, decode: only the prompts after them are
        # read, where a decode step's whole batch was, each request's keys and state, every step)
        if any(req.kv_block_keys and not req.is_decoding for req, _ in output.scheduled[output.num_known_decodes:]):
            return REPEAT_DECODES
        # Through finishes: a finish inserts its blocks into the tree and frees the rest, and
        # stepping's growth after it takes those before evicting any; the engine applies such a
        # stretch's growth and finishes in step order (`replica/ordered_frees.py`) where the
        # tree holds evictable blocks or a request has keys (no arrival joins it then). A
        # speculative stretch does not (it stops at finishes while blocks are evictable).
        return REPEAT_THROUGH
