"""The fast-forward side of the scheduler contract: the hooks the engine asks before it runs
many steps as one stretch (`replica/fast_forward.py`, `chunk_stretch.py`, `stretch_join.py`,
`admission_stretch.py`). Every default says no (the engine steps one by one); a policy answers
yes only where its paper's semantics make the decisions over the stretch certain. A hook never
changes state unless it admits (`join`, `admit_at_finish`) or is told (`finish_departs`).
`Scheduler` (base.py) inherits them.
"""

from __future__ import annotations

import math
from typing import ClassVar

from servesim.replica.schedulers.outputs import NO_FAST_FORWARD, UNLIMITED_STEPS, FastForward, SchedulerOutput
from servesim.workload.request import Request


class FastForwardHooks:
    """Defaults of the fast-forward hooks (mixed into `Scheduler`, whose queues they read)."""

    # Whether repeated steps list the requests in the order of the step they repeat. Speculative
    # decoding draws acceptances in batch order, so its steps fast-forward only when the order is
    # known (`repeat_order` reads this flag; a policy that re-sorts its batch overrides that).
    stable_decode_order: ClassVar[bool] = False
    # Whether taking a request in (`add_request`) reads what a finish changed (a program's
    # attained service, a tenant's held count). A closed-loop workload's follow-up may then
    # arrive before a finish inside a stretch is processed, so stretches stop at finishes.
    arrival_reads_finishes: ClassVar[bool] = False
    # Whether the running requests' order may change from one step to the next with no event (a
    # key that progress moves: autellix's levels). A stretch through finishes told one by one
    # then ends before a step that two of its requests leave together (`Engine._limit`): their
    # finishes, follow-ups and frees come in that step's order, which the next `schedule` gives.
    reorders_running: ClassVar[bool] = False
    # Whether something outside the replica reads `waiting_head` at any time (the migrator's
    # load, at each poll): a policy whose head follows state a stretch settles only at its end
    # (VTC's counters) then steps while that head is in question. Set on the instance by its pool.
    head_read_outside = False
    # How many chunk steps before its rest (the first chunk's step s included) a next turn whose
    # prompt the token budget chunks may take to join a keyed stretch (`replica/keyed_chunk_join.py`):
    # its middle chunks get the budget the decodes leave, as the running pass gives it to a prompt
    # run after them (any number, where a policy runs it last). Autellix sorts it by level, maybe
    # before a decode, where a middle chunk would take the whole budget: only its rest, whole in
    # what the decodes leave, gets the same tokens in any place of the pass (1).
    max_join_chunks: ClassVar[float] = math.inf

    def timers_only_free(self) -> bool:
        """Does every timer of the policy that falls due while nothing waits only free KV
        blocks (continuum's pins), so that a next turn's chunk steps, which admit nothing, run
        the same whether it fires among them or not (`replica/keyed_join.py`, which still cuts
        them at the first timer the stretch stops at)? Changes no state. The default: no
        (vLLM's swap-ins and adapter loads change the batch)."""
        return False

    def fast_forward(self, output: SchedulerOutput) -> FastForward:
        """May the engine repeat the step `schedule` just returned, and how far (see
        `FastForward`)? Must not change any state."""
        return NO_FAST_FORWARD

    def repeat_order(self, output: SchedulerOutput) -> list[Request] | None:
        """The requests of `output.scheduled` in the order the steps that repeat it
        (`fast_forward`) list them, or None if that order may change from step to step.
        Speculative decoding draws acceptances in batch order, so the engine fast-forwards
        speculative steps only when this is known. The default: `scheduled`'s own order for a
        policy with `stable_decode_order`, else None; a policy that re-sorts its running
        requests by a key that decode steps cannot change returns them sorted by it."""
        return [r for r, _ in output.scheduled] if self.stable_decode_order else None

    def repeat_order_limit(self, output: SchedulerOutput) -> tuple[float, int]:
        """How long `repeat_order`'s answer holds, for a policy whose order follows progress at
        points it foresees: (time, steps) such that repeated steps starting before that time, at
        most that many (step 0 included), keep the order. Default: for good. Changes no state."""
        return math.inf, UNLIMITED_STEPS

    def join_order_limit(self, joins: list[tuple[Request, int]], now_s: float) -> float:
        """For a policy whose `repeat_order` holds only so far (`repeat_order_limit`): if the
        requests of `joins` (`arrivals_join`'s answer) joined a speculative stretch at `now_s`,
        the time before which the repeated steps after that keep the order `repeat_order` gives
        the grown batch, as far as the newcomers are concerned (the running requests' limit
        holds as it was). Changes no state. The default, -inf, keeps them out of such a stretch."""
        return -math.inf

    def repeats_chunk(self, output: SchedulerOutput) -> bool:
        """Is `output` decodes (one token each) plus one prompt chunk taking the whole token
        budget they leave, such that, whatever arrives, the next `schedule` calls would run the
        same decodes and that prompt's next chunks of the same size (every other request
        untouched) until the prompt's last chunk, a decode's finish or the step whose decode
        blocks do not fit? The prompt's chunks allocate and register no KV block (taken at
        admission) unless `chunks_allocate`. Then the engine fast-forwards those steps
        (`replica/chunk_stretch.py`). Must not change any state. The default, False, steps
        them one by one."""
        return False

    def shares_chunk(self, output: SchedulerOutput) -> int:
        """Is `output` decodes (one token each), one prompt's last chunk and the next prompt's
        first chunk, spending the whole token budget, such that the next `schedule` calls would
        run the decodes and the first prompt (decoding from its first token) beside the second
        prompt's next chunks, each taking the whole budget they leave, as `repeats_chunk`
        holds? Then the chunk size of those steps (> 0), else 0. Chunks allocate nothing
        there (not `chunks_allocate`). The engine runs them as a chunk stretch from this step
        (`replica/shared_chunk.py`; with speculative decoding a `SpecStretch` with the second
        prompt, `Engine._repeats_chunk`). Must not change any state. The default, 0: stepped."""
        return 0

    def chunk_keeps_arrival(self, req: Request | None) -> bool:
        """Asked while a stretch whose steps spend the whole token budget on one prompt's chunks
        runs (a `ChunkStretch`, `Engine.arrival_keeps`), before `add_request` takes `req` in
        (None: any request): may it be queued with the stretch going on? Its steps admit
        nothing, but a policy whose `add_request` or next `schedule` acts on such an arrival
        (FastSwitch's count and lift for a tenant not held) says no: the stretch is cut at it.
        Changes no state. The default: yes."""
        return True

    def keeps_blocks(self, req: Request) -> bool:
        """Does `req`'s finish keep its KV blocks allocated (continuum's pins) rather than free
        them? Read only for a stretch whose answer has a finite `finish_timer_s`."""
        return False

    def finish_timer_key(self, req: Request) -> object:
        """The key of the timer `req`'s finish sets when it keeps its blocks (`keeps_blocks`),
        which `fire_timers` takes: a stretch through that finish may fire it among its finishes
        (`replica/policy_stops.py`). Read only where `keeps_blocks` is."""
        raise NotImplementedError

    def stretch_timers(self) -> list | None:
        """For a stretch whose answer has `through_timers` (nothing waits): [the first timer
        it must stop before, [(time, key, blocks)] of the timers it may run through, [], None]
        (the engine's bookkeeping: `replica/policy_stops.py`), or None: every timer bounds it
        (`next_timer_s`). A timer run through is one the next `schedule` starting at or after
        its time fires whatever else happens in the stretch, freeing `blocks` KV blocks that
        nothing else holds (`fire_timers(key)`). Changes no state. The default: None."""
        return None

    def fire_timers(self, keys) -> None:
        """Fire the timers `stretch_timers` listed by these keys, in order, as the `schedule`
        of the step they fell in would (the engine calls it in stepping's order of frees)."""
        raise NotImplementedError

    # Does each of those steps allocate the prompt's blocks for its chunk and register its
    # completed keyed blocks, as `allocate_slots` (vLLM v1), rather than none (sarathi)?
    chunks_allocate = False
    # May the steps `repeats_chunk` or `shares_chunk` repeats go on through a decode's finish
    # processed late, at the stretch's end (its budget to the prompt's chunk, nobody admitted,
    # no decision of the policy reading a finish before the next `schedule`)?
    # `replica/chunk_through.py`
    chunk_finishes_late = False
    # With nothing waiting, do the steps after a `repeats_chunk` step run the decodes still
    # running and a chunk of the budget they leave up to the step that computes the prompt's
    # rest (admitting only what waits by then), and from the next one on repeat as decodes
    # through finishes (`fast_forward`'s `REPEAT_THROUGH`)? Then the engine plans the prompt's
    # chunks, its rest and those decode steps as one stretch (`replica/chunk_rest.py`).
    rest_joins_decodes = False
    # Does a step that admits prompts run them alone, every running request stalled for it
    # (prefill-first: vLLM V0, SGLang without mixed chunks)? Then `arrivals_join`'s requests
    # join a stretch as a prompt-only step (`Stretch.stall`), not beside the decodes.
    stalls_decodes = False

    def stall_admits(self, joins: list[tuple[Request, int]], s: int, last_stall: int | None, running_at) -> bool:
        """For a prefill-first policy whose admission also reads the running requests' state:
        would the `schedule` of a stretch's step s (`last_stall`: the step of its last
        prompt-only step, None if none), `stall_wait` saying it admits there, admit `joins`
        (`arrivals_join`'s answer) as a prompt-only step? `running_at()`: the (request, tokens)
        of those running at s. Changes no state. The default, yes: `arrivals_join` decided it
        (vLLM V0, SGLang)."""
        return True

    def stall_wait(self, s: int, last_stall: int | None) -> int:
        """For a prefill-first policy that looks at admission only every so many decode steps
        (vtc's `max_wait_tokens`): how many decode steps of the running requests the `schedule`
        calls from a stretch's step s run, whatever waits, before the one that may admit
        (`last_stall` as for `stall_admits`). Then the waiting requests are held in the stretch
        to that step (`replica/stretch_join.py`). Changes no state. The default, 0: step s's."""
        return 0

    def settles_before(self, req: Request) -> bool:
        """Asked (only where `head_read_outside`) when `req` reaches this replica while a stretch
        is in flight: would taking it in read the policy's own state that the stretch settles
        only at its end, where a read of `waiting_head` from outside could see the difference
        before then (VTC's counter lift)? Then the engine first applies the steps that ended
        before the arrival (`Engine.settle_before`) and the policy reads its state at once. Must
        not change any state. The default: no."""
        return False

    def arriving_in_stretch(self, req: Request) -> None:
        """`req` reaches this replica while a stretch is in flight, kept or cutting it (told just
        before `add_request`): a policy that reads its own state at an arrival (VTC's counter
        lift) defers that read to the stretch's end, where the steps before the arrival are
        charged. The default does nothing."""

    def arrival_keeps_batch(self, req: Request | None) -> bool:
        """Asked while a fast-forwarded stretch planned from this policy's last `schedule`
        runs (repeat held, nothing changed here since): would every `schedule` call until
        the stretch's next stop choose the same batch with `req` in the waiting queue? Then
        the engine queues `req` and the stretch goes on (its waiting count grows from the next
        step). `req=None`: is the next arrival, whatever it is, expected to be kept? Then a lone
        replica's stretch is priced past it and may start even if it comes in step 0; a guess
        (a policy whose answer depends on the newcomer's key or tenant guesses a later arrival
        of the head's kind), since that arrival is asked about itself when it comes and cuts
        the stretch back to the step in flight if not kept: a wrong guess costs a stretch, not
        exactness. Changes no state. The default, False, cuts the stretch."""
        return False

    def arrivals_join(self, num_running: int) -> list[tuple[Request, int]] | None:
        """At a step boundary of a stretch through finishes where arrivals cut it, `num_running`
        still decoding: if the next `schedule` would run each for one token and admit every
        waiting request whole with no prefix hit (the engine checks the KV blocks), the
        (request, prompt tokens) that `join` admits, and the stretch goes on with them. Changes
        no state. The default, None, ends the stretch there."""
        return None

    def join(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        """Admit the requests `arrivals_join` listed, as `schedule` would have."""
        raise NotImplementedError

    def arrival_chunk(self, num_running: int, spent: int = 0) -> tuple[Request, int] | None:
        """At such a boundary where `arrivals_join` answered None: if the next `schedule` would
        run each of the `num_running` for one token and admit the one waiting request (fresh,
        no prefix keys) with a first chunk of its prompt that
        spends the rest of the token budget, and every later one give it the same chunk beside
        the same decodes until its last (Sarathi-Serve's stall-free batching, nothing else
        waiting), (that request, the chunk); `join` admits it with its whole prompt's blocks (`replica/chunk_join.py`).
        `spent`: tokens of the budget a prompt in progress takes first (its rest, computed in
        that step: `chain_join`). Changes no state. The default, None, ends the stretch there."""
        return None

    def finish_admission(self) -> bool:
        """May a stretch planned from this policy's last `schedule` (which repeats only up to
        the first finish, requests waiting) run through finishes, asking `finish_admits` at
        the step boundary after each (`replica/admission_stretch.py`)? Changes no state. The
        default, False, ends the stretch at the first finish."""
        return False

    def finish_admits(self, num_running: int, free_blocks: int) -> list[tuple[Request, int]] | None:
        """At a step boundary of such a stretch after finishes, `num_running` still decoding
        (the finished ones are still listed in `running`) and `free_blocks` free once their
        blocks for the next step are allocated: the (request, prompt tokens) the next
        `schedule` admits, each whole with no prefix hit, such that every later `schedule`
        admits nothing until the next finish (the queue empty or its head waiting for KV
        blocks, which decodes only make scarcer); [] if it admits nothing. None when that is
        not determined: the stretch ends there. `num_running` counts the tokens the running
        requests take in that step (one a decode; a prompt's rest, when the last admission gave
        a first chunk). A policy whose running pass gives a prompt in progress its rest before
        admitting (vLLM's steps) may list last a prompt that the budget left chunks, with that
        chunk (`finish_admits.py`). Changes no state."""
        return None

    def readmits_after_stall(self, num_running: int, free_blocks: int) -> bool:
        """After `admit_at_finish` admitted `finish_admits`' requests as a prompt-only step s (a
        prefill-first policy): does the next `schedule`, at s + 1 with `num_running` decoding and
        `free_blocks` free before their blocks, admit more, or is that not determined? Then the
        stretch's next boundary is s + 1, where `finish_admits` is asked again. Changes no state.
        The default, False: the head left waiting waits until the next finish, as `finish_admits`
        promised (SGLang's may not: the prompts it admitted reserve less once they run)."""
        return False

    def admit_step(self, st, s: int, kmax: int) -> int:
        """The stretch `st` (an admission stretch of this policy, its next boundary `kmax`, the
        next departure or its cap) at step s, with nothing admitted since: the first step j in
        [s, kmax) at whose start the next `schedule` would admit (or where that is not
        determined), taken as the boundary instead, where `finish_admits` is asked; else kmax.
        For a policy whose admission limit loosens step by step while nothing departs (SGLang's
        decaying `new_token_ratio`). Also tells the policy `st` is in flight. Changes no
        state of the run. The default: kmax (a held head waits for a finish)."""
        return kmax

    def keyed_joined(self, req: Request) -> None:
        """Told after `replica/keyed_join.py` admitted `req` into the stretch in flight (its
        `start` made, `first_scheduled_s` the join step's start), for a policy whose accounting
        at the stretch's end credits a joined request from there. Default: nothing."""

    def finish_noticed(self, req: Request, now_s: float) -> None:
        """Told when `req` leaves a stretch through finishes under a closed-loop workload
        (`replica/finish_notices.py`), at the end of its last step (`now_s`), before its
        follow-ups are made; its finish (`finish`, `end_step`) comes with the stretch's end. A
        policy whose `add_request` reads what a finish changes brings that up to date here and
        says so by `arrival_reads_finishes` False. Default: nothing."""

    def finish_departs(self, reqs: list[Request]) -> None:
        """Told at a boundary of such a stretch, before `finish_admits`: the requests that left
        it since its last boundary (still listed in `running`). A policy whose admission reads a
        total over the running requests (`batchllm`'s projected use) updates it here; stepping's
        next `schedule` computes it afresh, so a stretch that ends there discards it. Default:
        nothing."""

    def admit_at_finish(self, joins: list[tuple[Request, int]], out: SchedulerOutput) -> None:
        """Admit the requests `finish_admits` listed, as `schedule` would have (and keep what
        it would have noted about the head left waiting)."""
        self.join(joins, out)

    def holds_blocked_head(self, joins: list[tuple[Request, int]], free_blocks: int) -> bool:
        """At such a boundary where `joins` (`arrivals_join`'s answer) do not join for their
        blocks, `free_blocks` free there: would the next `schedule` admit nobody, its head
        blocked until a finish, and run the same decodes (it then sets what that `schedule`
        sets)? The stretch goes on to the next finish with them waiting. The default, False,
        ends it."""
        return False

    def join_blocks(self, joins: list[tuple[Request, int]]) -> tuple[int, int]:
        """(KV blocks `join` allocates for `joins`, free blocks it must leave beyond them): by
        default each prompt's blocks and none (a policy reserving more or keeping a watermark says so)."""
        bs = self.kv.block_size
        return sum([-(-n // bs) for _, n in joins]), 0  # (`cdiv` written out: once per arrival joining)

    def nothing_pending(self, output: SchedulerOutput) -> bool:
        """The usual condition for repeating a step: everyone running got its tokens, nothing
        was preempted or swapped, and nothing waits (new or swapped) to be admitted."""
        return (not (output.preempted or output.swapped_out or output.swapped_in or self.num_waiting or self.swapped)
                and len(output.scheduled) == len(self.running))
