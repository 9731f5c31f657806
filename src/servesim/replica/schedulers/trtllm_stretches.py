"""TensorRT-LLM's fast-forward answers (`trtllm.py`): decode steps behind a head that only a
finish lets in, arrivals joining whole, and admission stretches under GUARANTEED_NO_EVICT.

Decode-only steps keep the no-evict reservations and the batch's token count constant and only
take free blocks, so a waiting head held by the batch size, its KV blocks or (chunked context
off) the token budget stays held until a finish. A finish gives the reservation room its total
blocks back; the next `schedule` admits in arrival order while the batch size, the room and
(whole) the token budget allow, which `finish_admits` runs on the stretch's counts. With
speculative decoding each decode takes itself and its drafts of the budget.
"""

from __future__ import annotations

from servesim.replica.schedulers.arrival_joins import whole_prompts
from servesim.replica.schedulers.finish_admits import admits_until_blocked
from servesim.replica.schedulers.outputs import (
    NO_FAST_FORWARD, REPEAT_AFTER_PREFILL, REPEAT_DECODES, REPEAT_THROUGH, FastForward, SchedulerOutput,
)
from servesim.workload.request import Request


class TRTLLMStretches:
    """The fast-forward methods of `TRTLLMScheduler` (which holds the state they use)."""

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        # FCFS: a newcomer queues behind a head that only a finish can let in.
        return bool(self.waiting) and self.waiting.peek() is self._blocked_head

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        # Candidates FCFS while the batch size and (no-evict) reservations allow, then contexts whole in
        # the tokens the generations leave. Decodes move reserved blocks from free to held and finishes
        # add theirs: the room on the stretch's stale state is at most stepping's.
        if self.wait_iters or self.wait_ratio or self.adp_hold is not None or self.admission_lag:
            return None  # (batch waiting, attention DP, the admission lag: contexts may be held)
        if self.no_evict:
            # (their totals, and the room the running requests' reservations leave: a C sum of their
            # totals first, which bounds what they still reserve, then what they hold only if needed)
            room = self.kv.num_free_blocks - sum(map(self._total_of, self.waiting))
            total = self._total_sum(self.running)
            if room < total and room < self._reserved(self.running, total):
                return None
        # (each decode of the next step takes itself and its drafts of the budget)
        return whole_prompts(self.waiting, len(self.running), num_running * self.gen_tokens, self.max_batch_size,
                             self.max_num_tokens,
                             lambda req, budget: req.num_tokens if req.num_tokens <= budget else 0)

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self._blocked_head = None
        for req, n in joins:
            self._run_context(req, n, self.kv.get_computed_blocks(req), out)

    # ---- a next turn joining a keyed stretch (`replica/keyed_join.py`) ----------------------
    # (its context whole or not at all: a first chunk would be `_size_chunks`' block multiple,
    # and with chunked context off a context the tokens cannot take waits: stepping's)
    max_join_chunks = 0

    def first_chunk(self, req: Request, num_cached: int, budget: int) -> int:
        # `_micro_batch`'s context, its hits taken off: whole within the tokens the generation
        # requests leave (`keyed_join` joins only then), else less (stepped)
        return min(req.num_tokens - num_cached, budget)

    def joins_last(self, req: Request, now_s: float) -> bool:
        """Would the next `schedule`, at the step a keyed stretch is cut at (`req` the only
        waiting request: `replica/keyed_join.py`), start its context whole with the hits it
        finds, after every generation request, and every later one run it last?

        Under GUARANTEED_NO_EVICT with every running request generating (no context in pieces:
        `_partial`), `_no_evict` keeps them all and takes `req` if its whole reservation fits the
        room they leave: the free blocks less what they still reserve. Decode steps move blocks
        from free to held (the room stays), and a finish returns its total and releases at most
        what it holds (the room grows): the room on the stretch's unapplied state, its start's,
        is at most step s's. Then `_micro_batch` gives each generation request its token and the
        context its tokens past the hits if they fit the budget left (`keyed_join` checks that
        with `first_chunk` and `limits`) and `_run_context` starts it as `keyed_join` does (the
        lookup, `allocate_slots` of the whole context, `start`), appended to `running`: each
        later step schedules `running` in order, it last. Not with batch waiting, attention
        DP, the admission lag or drafts (their contexts may be held, or their tokens differ)."""
        if not (self.no_evict and not self._partial and self.gen_tokens == 1 and not (self.wait_iters or self.wait_ratio)
                and self.adp_hold is None and not self.admission_lag):
            return False
        return self._total_of(req) <= self.kv.num_free_blocks - self._reserved(self.running)

    def before_join(self) -> None:
        # (what `schedule` resets before its passes; the context started: `_run_context` clears
        # `_capacity_blocked` for a context with hits, and the queue is empty after it)
        self._blocked_head = None
        self._capacity_blocked = False

    def keyed_joined(self, req: Request) -> None:
        # `_run_context`'s note of a started context: its reservation taken from the room (no
        # admission lag counts it: `joins_last` requires none)
        self._room -= self._total_of(req)

    def finish_admission(self) -> bool:
        # GUARANTEED_NO_EVICT with whole contexts and no held contexts: a finish gives the
        # reservation room its total blocks back, and the next `schedule` admits in arrival
        # order while the batch size, the room and (whole) the token budget allow (with the
        # admission lag a context taken there waits its iterations: stepping plays it)
        return (self.no_evict and not self._partial and not (self.wait_iters or self.wait_ratio)
                and self.adp_hold is None and not self.admission_lag)

    def finish_departs(self, reqs: list[Request]) -> None:
        self._room += sum(map(self._total_of, reqs))

    def finish_admits(self, num_running: int, free_blocks: int) -> list[tuple[Request, int]] | None:
        # `_no_evict` then `_micro_batch` after the finishes, in arrival order: the batch size
        # (the `num_running` started) and the room stop a request until the next finish (each
        # fresh one holds no block and reserves its total); a context the tokens left cannot
        # take whole is left to stepping
        if not self.finish_admission():
            return None
        room, seats = self._room, self.max_batch_size - num_running

        def over_capacity(req: Request) -> bool:
            nonlocal room, seats
            room -= self._total_of(req)
            seats -= 1
            return seats < 0 or room < 0

        found = admits_until_blocked(self.waiting, 0, num_running * self.gen_tokens, 1 << 62, self.max_num_tokens,
                                     free_blocks, self.kv.block_size,
                                     lambda req, budget: req.num_tokens if req.num_tokens <= budget else 0,
                                     over_capacity)
        return None if found is None else found[0]

    def admit_at_finish(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        self.join(joins, out)
        if self.waiting:  # (`finish_admits` stopped at a head the room or the free blocks keep out)
            self._blocked_head, self._capacity_blocked = self.waiting.peek(), True

    def repeat_order(self, output: SchedulerOutput) -> list[Request]:
        # Decode-only steps list `running` in its order (a step that started contexts listed
        # its generation requests first).
        return list(self.running)

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        # Repeat while everyone running got a token, nothing was paused and whatever waits is
        # held back by the batch size, its KV blocks or (chunked context off) the token budget:
        # decode-only steps keep the no-evict reservations and the token count of the batch
        # constant and only take free blocks, so nothing waiting gets in before a finish.
        if output.preempted or len(output.scheduled) != len(self.running):
            return NO_FAST_FORWARD
        if self.admission_lag and (self._taken_at or (self.waiting and not self.no_evict)):
            # The admission lag counts, one by one, the iterations whose capacity pass takes a waiting
            # request. A taken one waits out its count stepping; under MAX_UTILIZATION a head blocked by
            # free blocks may pass the pass in some decode steps (each running request takes a block only
            # when its last one fills) and be counted there without running, so nothing waits in a stretch.
            return NO_FAST_FORWARD
        if not self.waiting:
            return REPEAT_THROUGH
        if self.waiting.peek() is self._blocked_head:
            # a context this step started decodes with the rest; a head the tokens kept out
            # may fit once contexts no longer spend them
            return REPEAT_AFTER_PREFILL if self._capacity_blocked else REPEAT_DECODES
        return NO_FAST_FORWARD
