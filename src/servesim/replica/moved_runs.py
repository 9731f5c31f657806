"""A moved request's token runs kept apart per replica.

A request's runs merge where its step numbers follow on (`Engine.emit`, the stretches'
advances). A request that moved to another replica (a hand-off, a migration, a re-route after a
crash; `Request.moves` marks where each replica's runs start) may take its first step there at
the number after its last step on the replica it came from, by chance: its first run there then
continued its last run on the old one, and the request table would read those steps from the
old replica's log. The engine notes each request that moves to it with tokens made elsewhere
(`note`) and, after each step or stretch, splits such a run where the move is (`split`): one
mechanism for every path that emits tokens, stepped or fast-forwarded alike.
"""

from __future__ import annotations

from typing import Any


def note(moved: dict[int, tuple], req: Any) -> None:
    """`req` moved to this engine (its move just recorded) with tokens made elsewhere."""
    if req.token_steps:
        moved[req.id] = (req, req.moves[-1], req.token_steps[-1])


def split(moved: dict[int, tuple]) -> None:
    """Split the run of each noted request that emitted here where its move is, if it continued
    its last run there; forget those that emitted here or moved on since."""
    for key, (req, mark, last) in list(moved.items()):
        if req.moves[-1] != mark:  # (moved on before a token here)
            del moved[key]
            continue
        runs, m = req.token_steps, mark[0]
        if runs[m - 1] != last:
            runs[m:m] = (last + 1, runs[m - 1])
            runs[m - 1] = last
        elif len(runs) == m:
            continue  # (no token here yet)
        del moved[key]
