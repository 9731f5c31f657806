"""Multi-turn sessions: turn n+1 = turn n's prompt + answer + a new message, after a think time.

The next turn's hash ids start with every full block of turn n's prompt + answer, so the
prefix cache can serve them; a session stops after its turn count, at the context limit, or
when a turn did not finish (rejected or dropped: there is no answer to continue from).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from servesim.workload.config import SessionsConfig
from servesim.workload.prefix import HashIds
from servesim.workload.request import Request, RequestState


@dataclass(slots=True)
class NextTurn:
    """What the driver needs to emit the next turn."""

    arrival_s: float
    prompt_len: int
    output_len: int
    hash_ids: tuple[int, ...]
    turn: int


class SessionPlanner:
    """Pure bookkeeping of session turns; the driver owns ids, limits and attributes."""

    def __init__(self, cfg: SessionsConfig, turns: Iterator[int], think_s: Iterator[float],
                 follow_lengths: Callable[[], tuple[int, int]], hashes: HashIds, follow_hashes: HashIds):
        # Next turns draw lengths and ids from their own streams: a session's first turn is then
        # the same whatever the simulation did before it (`trace generate` writes exactly these).
        self._cfg = cfg
        self._turns = turns
        self._think_s = think_s
        self._lengths = follow_lengths
        self._hashes = hashes
        self._follow_hashes = follow_hashes

    def num_turns(self) -> int:
        return next(self._turns)

    def first_hash_ids(self, base: tuple[int, ...], prompt_len: int, output_len: int) -> tuple[int, ...]:
        # Cover prompt and answer: the next turn re-reads both.
        return self._hashes.extend(base, prompt_len + output_len)

    def is_last(self, turn: int, turns_total: int, prompt_len: int, output_len: int) -> bool:
        """Can no turn follow this one, whatever is drawn or happens after it is emitted? Its
        session's last planned turn, or a context (prompt and answer) past the limit already:
        `next_turn`'s prompt, that context plus a new message, would pass it too."""
        return turn + 1 >= turns_total or prompt_len + output_len > self._cfg.max_prompt_tokens

    def next_turn(self, done: Request, now_s: float, turns_total: int) -> NextTurn | None:
        """The follow-up of a finished turn, or None when the session ends."""
        if done.state != RequestState.FINISHED or done.turn + 1 >= turns_total:
            return None
        new_prompt, output = self._lengths()
        prompt = done.prompt_len + done.output_len + new_prompt
        if prompt > self._cfg.max_prompt_tokens:
            return None
        ids = self._follow_hashes.extend(done.hash_ids, prompt + output)
        return NextTurn(now_s + next(self._think_s), prompt, output, ids, done.turn + 1)
