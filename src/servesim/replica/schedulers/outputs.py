"""What a scheduler's decisions return: `SchedulerOutput` (the batch of one step) and
`FastForward` (whether the step may be repeated), with the usual answers as constants.

`base.py` holds the `Scheduler` contract itself (its hooks and the helpers policies share);
these are plain data records the engine reads, with no behaviour of their own, kept apart so
that the contract's file stays about behaviour. `base` re-exports every name, so
`from servesim.replica.schedulers.base import SchedulerOutput` keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat

from servesim.workload.request import Request


@dataclass(slots=True)
class SchedulerOutput:
    """What one call to `schedule` decided."""

    # (request, number of tokens to compute this step), in batch order. Decoding requests get
    # 1 token; prefilling (or recomputing) requests get a chunk.
    scheduled: list[tuple[Request, int]] = field(default_factory=list)
    # Requests preempted by recompute while scheduling (their blocks are already freed).
    preempted: list[Request] = field(default_factory=list)
    # Requests whose KV was moved to / brought back from the CPU tier this step (swap policies;
    # use `Scheduler.swap_out` / `swap_in`, which move the blocks and fill these lists). The
    # engine charges the copy time according to `Scheduler.swap_mechanics`.
    swapped_out: list[Request] = field(default_factory=list)
    swapped_in: list[Request] = field(default_factory=list)
    # Blocks actually copied for each entry of swapped_out / swapped_in (a CPU copy kept from
    # an earlier swap makes a swap-out cheaper than the request's size).
    swap_out_blocks: list[int] = field(default_factory=list)
    swap_in_blocks: list[int] = field(default_factory=list)
    # A hint that saves the engine a pass: the first `num_known_decodes` entries of `scheduled`
    # are decodes (one token, only the last generated token left to compute). 0 = unknown.
    num_known_decodes: int = 0
    # Those requests as a list of the caller's own, where the scheduler has them (None: read
    # from `scheduled`): the engine's pass over a batch of decodes becomes a copy.
    known_decodes: list[Request] | None = None
    # Further runs of decodes past the known ones, as [start, end) index pairs of `scheduled` in
    # order (a running pass's decodes allocated in bulk after a prompt chunk or an eviction:
    # Autellix's batch, sorted by level, puts new prompts before older decodes). None: none.
    decode_runs: list[list[int]] | None = None
    # Attention data parallelism only (replica/attention_dp.py): the step's split over the
    # attention ranks, one (prefill chunks, decode contexts) pair per rank, which the engine prices
    # with the perf model's `lockstep_step_time_s` (a lock-step step depends on each rank's batch,
    # not only on the union in `scheduled`). None: one batch, priced by `step_time_s`.
    rank_batches: list | None = None


def one_token_each(reqs) -> list[tuple[Request, int]]:
    """`scheduled`'s entries of decodes, (req, 1) each, made in C (a comprehension built each
    tuple in the interpreter: about a third more, over an overloaded batch at every step)."""
    return list(zip(reqs, repeat(1)))


def append_decodes(out: SchedulerOutput, reqs: list[Request]) -> None:
    """Append decodes `reqs` (one token each, known to decode: a running pass's bulk allocation)
    to `out.scheduled`, as a run of `decode_runs`."""
    run = [len(out.scheduled), len(out.scheduled) + len(reqs)]
    out.scheduled += one_token_each(reqs)
    if out.decode_runs is None:
        out.decode_runs = [run]
    else:
        out.decode_runs.append(run)


UNLIMITED_STEPS = 1 << 62  # (`Scheduler.repeat_order_limit`, `FastForward.max_steps`: no step limit)


@dataclass(frozen=True, slots=True)
class FastForward:
    """A policy's answer to: may the engine repeat this step without calling `schedule`?

    The engine then advances many decode steps as one event (same results as stepping one by
    one), stopping before anything the answer does not cover: the next arrival or policy
    timer, the step that would run out of KV blocks and (unless `through_finishes`) the first
    finish. The default, all False, is always safe, just slower.
    """

    repeat: bool = False
    """With no new arrival and enough free KV blocks, the next `schedule` calls would choose
    exactly the same requests with one token each until one of them finishes."""
    after_prefill: bool = False
    """`repeat` is exact also when this step finishes prompts (those requests then decode like
    the rest); without it the engine fast-forwards only decode-only steps."""
    through_finishes: bool = False
    """`repeat` keeps holding as requests finish (the rest go on decoding, nothing is
    admitted, no finish hook changes a decision), so finishes may be processed late."""
    max_steps: int = UNLIMITED_STEPS
    """At most this many steps repeat (this step included): the policy decides otherwise at
    the next one whatever happens (`vtc`'s `max_wait_tokens` decode steps). A policy that sets
    it admits no arrivals into the stretch (`arrivals_join` None)."""
    admissions_only: bool = False
    """`repeat` holds only inside an admission stretch (`replica/admission_stretch.py`), whose
    boundaries the policy's `admit_step` puts where its decision may change before the next
    finish (SGLang's held head above the ratio's floor); any other stretch is not planned."""
    finish_timer_s: float = float("inf")
    """With `through_finishes`: a finish may keep its KV blocks allocated (the policy's
    `keeps_blocks`) and sets a policy timer this long after its step's end (continuum's pins).
    The engine counts no blocks freed by such finishes. A timer on blocks the request alone
    holds fires inside the stretch (`finish_timer_key` names it), any other stops it before the
    first step that starts at or after it (that step's `schedule`: `replica/policy_stops.py`)."""
    through_timers: bool = False
    """With `through_finishes` and nothing waiting: the policy's timers that `stretch_timers`
    lists fire inside the stretch, each at the first step that starts at or after its time (as
    that step's `schedule` would fire it), instead of bounding the stretch (continuum's pin
    expiries: `replica/policy_stops.py`)."""


NO_FAST_FORWARD = FastForward()
REPEAT_DECODES = FastForward(repeat=True)  # the usual answer of a policy whose batch is steady
# A batch that stays steady once this step's prompts are done (they then decode with the rest).
REPEAT_AFTER_PREFILL = FastForward(repeat=True, after_prefill=True)
# ... and through finishes: nothing waits, so a finish only frees blocks and a sequence slot.
REPEAT_THROUGH = FastForward(repeat=True, after_prefill=True, through_finishes=True)
