"""`result._globalise_token_steps`: a request's token runs move from its replica's step indices
to the concatenated log's, by the offset of the replica that ran each run."""

from __future__ import annotations

from servesim.result import _globalise_token_steps
from tests.factories import make_request


def test_runs_move_by_their_replicas_offsets_with_and_without_moves():
    offsets = [0, 100, 250]
    still = make_request(0, 10, 5)  # served by replica 2 throughout: every run moves by 250
    still.replica, still.token_steps = 2, [3, 7, 9, 9]
    first = make_request(1, 10, 5)  # replica 0's offset is 0: left as it is
    first.replica, first.token_steps = 0, [1, 4]
    moved = make_request(2, 10, 5)  # replica 1's runs, then after a crash replica 2's from index 2 on
    moved.replica, moved.token_steps, moved.moves = 2, [5, 6, 8, 8, 1, 3], [(0, 1), (2, 0), (4, 2)]
    silent = make_request(3, 10, 5)  # no token: nothing to move
    silent.replica = 1
    runs = still.token_steps
    _globalise_token_steps([still, first, moved, silent], offsets)
    assert still.token_steps is runs and runs == [253, 257, 259, 259]  # (in place: the request's own list)
    assert first.token_steps == [1, 4]
    assert moved.token_steps == [105, 106, 8, 8, 251, 253]
    assert silent.token_steps == []
