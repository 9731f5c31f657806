"""The request: what the workload produces and every later stage reads and advances.

A request carries its static description (lengths, prefix hashes, tenant, SLOs, session and
program links) and its dynamic serving state (`num_computed_tokens`, state, timestamps).
Policies may read `output_len` only when they are explicitly clairvoyant; the engine uses it
as the ground truth of how many tokens will be generated.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Sequence


class RequestState(enum.IntEnum):
    """Lifecycle states. FINISHED and after are terminal; every request ends in exactly one."""

    WAITING = 0  # arrived, never scheduled (or re-queued after recompute preemption: PREEMPTED)
    RUNNING = 1  # holds KV blocks on the GPU and is scheduled step after step
    PREEMPTED = 2  # preempted by recompute: blocks freed, back in the waiting queue
    SWAPPED = 3  # preempted by swap: KV lives in the CPU tier
    FINISHED = 4
    REJECTED = 5  # refused at admission (too long for the engine, or by an admission policy)
    DROPPED = 6  # still unfinished when the simulation stopped
    ABORTED = 7  # abandoned by its client (e.g. a stream disconnected); its KV is freed
    FAILED = 8  # its replica failed and no replica was left to retry it on

    @property
    def terminal(self) -> bool:
        return self >= RequestState.FINISHED


TERMINAL_STATES = (RequestState.FINISHED, RequestState.REJECTED, RequestState.DROPPED, RequestState.ABORTED,
                   RequestState.FAILED)


@dataclass(slots=True, eq=False)
class Request:
    """One LLM call. Lengths are in tokens, times in simulated seconds."""

    id: int
    arrival_s: float
    prompt_len: int
    output_len: int
    # Prefix identity: hash_ids[k] identifies the whole token prefix [0, (k+1)*hash_block_tokens)
    # (Mooncake's chained 512-token block ids). Tokens past the covered range are unique.
    # A tuple, or for generated workloads an `IdRanges` (`workload/prefix.py`: the ids as a few
    # ranges, which reads, compares and hashes as the tuple of the same ids).
    hash_ids: Sequence[int] = ()
    hash_block_tokens: int = 512
    tenant: str = "default"
    model: str | None = None  # the model it asks for (None: the scenario's model)
    lora: str | None = None  # the LoRA adapter it asks for (None: the base model)
    priority: int = 0  # lower value = more important (vLLM convention)
    slo_class: str | None = None
    ttft_slo_s: float | None = None  # per-request SLOs (override the scenario-wide ones)
    tpot_slo_s: float | None = None
    is_offline: bool = False
    session_id: int | None = None
    turn: int = 0
    program_id: int | None = None
    call_index: int = 0
    parents: tuple[int, ...] = ()  # ids of calls (requests) this call waits for
    max_tokens: int | None = None  # user cap; reservation-based admission reads it
    # Leading hash ids up to the last one another request of the run also has (a replay knows
    # every request up front: `workload/replay.py`; a session's last turn, its previous turn's:
    # `workload/generated.py`); the ids after it are this request's alone,
    # so no other request can hit their blocks. None: not known (every id may be shared), or
    # keyed whole from its first preemption on under a policy that may swap (`key_every_id`).
    num_shared_hash_ids: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # policy- or workload-specific tags

    # ---- dynamic state (owned by the replica engine) ----
    state: RequestState = RequestState.WAITING
    num_computed_tokens: int = 0  # tokens whose KV is computed (vLLM v1 vocabulary)
    num_output_tokens: int = 0  # tokens generated so far
    num_preemptions: int = 0
    num_cached_tokens: int = 0  # prefix-cache hit tokens at first admission
    num_cached_tokens_total: int = 0  # hit tokens summed over all admissions (incl. after preemption)
    first_scheduled_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    # Engine steps at whose end this request emitted a token, as flat inclusive runs
    # [start0, end0, start1, end1, ...] of the replica's step indices; with the replica's step
    # end times this gives every token's time (and so every inter-token gap) exactly, while a
    # fast-forwarded decode stretch costs O(1) to record.
    token_steps: list[int] = field(default_factory=list)
    kv_block_keys: Sequence[Any] | None = None  # prefix keys at the engine's block size (engine-set; a tuple or BlockKeys)
    replica: int = -1  # the replica serving it (its token_steps index that replica's step log)
    # (index into token_steps, replica) each time it moved to another replica (after a crash);
    # runs from that index on belong to that replica's step log. An empty tuple until the first
    # move makes it a list (`Replica._take`): nearly every request never moves, and one list less
    # a request is one allocation and one object fewer for the end-of-run collection to walk.
    moves: Sequence[tuple[int, int]] = ()

    @property
    def num_tokens(self) -> int:
        """Prompt plus generated tokens: what a recompute has to prefill again (vLLM v1)."""
        return self.prompt_len + self.num_output_tokens

    @property
    def remaining_output(self) -> int:
        return self.output_len - self.num_output_tokens

    @property
    def is_decoding(self) -> bool:
        """True when only the last generated token is left to compute (one token per step)."""
        return self.num_output_tokens > 0 and self.num_tokens - self.num_computed_tokens == 1
