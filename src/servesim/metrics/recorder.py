"""The recorder: raw facts of a run, nothing derived.

It keeps the requests (with their timestamps and token step runs) and a log of engine steps:
start, end, prefill tokens, output tokens, running and waiting counts and KV blocks in use.
Single steps are appended as tuples; fast-forwarded decode stretches as numpy columns, so
recording a stretch costs O(1) Python work. `summary.py` and `timeseries.py` derive
everything else from these, as pure functions.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

from servesim.workload.request import Request

STEP_COLUMNS = ("start_s", "end_s", "prefill_tokens", "output_tokens", "num_running", "num_waiting", "kv_used_blocks")


@dataclass(frozen=True)
class StepLog:
    """Per-step columns of one replica, all the same length (one entry per engine step)."""

    start_s: np.ndarray
    end_s: np.ndarray
    prefill_tokens: np.ndarray
    output_tokens: np.ndarray
    num_running: np.ndarray
    num_waiting: np.ndarray
    kv_used_blocks: np.ndarray
    num_gpu_blocks: int

    def __len__(self) -> int:
        return len(self.end_s)


class Recorder:
    """Collects requests and engine steps of one replica during a run."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        # one typed array per step column (C doubles): appends and a stretch's extends run at C
        # speed, and reading them into numpy needs no conversion
        self._cols: tuple[array, ...] = tuple(array("d") for _ in STEP_COLUMNS)

    @property
    def num_steps(self) -> int:
        return len(self._cols[1])

    def add_request(self, req: Request) -> None:
        self.requests.append(req)

    def log_step(self, start_s: float, end_s: float, prefill_tokens: int, output_tokens: int,
                 num_running: int, num_waiting: int, kv_used_blocks: int) -> None:
        c = self._cols
        c[0].append(start_s)
        c[1].append(end_s)
        c[2].append(prefill_tokens)
        c[3].append(output_tokens)
        c[4].append(num_running)
        c[5].append(num_waiting)
        c[6].append(kv_used_blocks)

    def log_decode_steps(self, start_s: float, ends_s: list[float], batch: list[int], num_waiting: int,
                         kv_used_blocks: list[int], first_prefill_tokens: int = 0) -> None:
        """A fast-forwarded stretch of steps ending at `ends_s`; step j runs and emits a token
        for `batch[j]` requests; only the first may also compute prompt tokens."""
        k = len(ends_s)
        c = self._cols
        c[0].append(start_s)
        c[0].extend(ends_s[:-1])
        c[1].extend(ends_s)
        c[2].append(first_prefill_tokens)
        c[2].extend([0] * (k - 1))
        c[3].extend(batch)
        c[4].extend(batch)
        c[5].extend([num_waiting] * k)
        c[6].extend(kv_used_blocks)

    def step_log(self, num_gpu_blocks: int) -> StepLog:
        cols = {name: np.frombuffer(col, dtype=float).copy() for name, col in zip(STEP_COLUMNS, self._cols)}
        return StepLog(num_gpu_blocks=num_gpu_blocks, **cols)
