"""The recorder: raw facts of a run, nothing derived.

It keeps the requests (with their timestamps and token step runs) and a log of engine steps:
start, end, prefill tokens, output tokens, running and waiting counts and KV blocks in use.
Single steps are appended as tuples; fast-forwarded decode stretches as numpy columns, so
recording a stretch costs O(1) Python work. `summary.py` and `timeseries.py` derive
everything else from these, as pure functions.
"""

from __future__ import annotations

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
        self.num_steps = 0
        self._pending: list[tuple] = []
        self._chunks: list[np.ndarray] = []

    def add_request(self, req: Request) -> None:
        self.requests.append(req)

    def log_step(self, start_s: float, end_s: float, prefill_tokens: int, output_tokens: int,
                 num_running: int, num_waiting: int, kv_used_blocks: int) -> None:
        self._pending.append((start_s, end_s, prefill_tokens, output_tokens, num_running, num_waiting, kv_used_blocks))
        self.num_steps += 1

    def log_decode_steps(self, start_s: float, ends_s: np.ndarray, batch: int, num_waiting: int,
                         kv_used_blocks: np.ndarray) -> None:
        """A fast-forwarded stretch of identical decode steps ending at `ends_s`."""
        self._flush()
        k = len(ends_s)
        chunk = np.empty((k, len(STEP_COLUMNS)))
        chunk[0, 0] = start_s
        chunk[1:, 0] = ends_s[:-1]
        chunk[:, 1] = ends_s
        chunk[:, 2] = 0
        chunk[:, 3] = batch
        chunk[:, 4] = batch
        chunk[:, 5] = num_waiting
        chunk[:, 6] = kv_used_blocks
        self._chunks.append(chunk)
        self.num_steps += k

    def _flush(self) -> None:
        if self._pending:
            self._chunks.append(np.array(self._pending, dtype=float))
            self._pending = []

    def step_log(self, num_gpu_blocks: int) -> StepLog:
        self._flush()
        data = np.concatenate(self._chunks) if self._chunks else np.empty((0, len(STEP_COLUMNS)))
        self._chunks = [data] if len(data) else []
        cols = {name: data[:, i] for i, name in enumerate(STEP_COLUMNS)}
        return StepLog(num_gpu_blocks=num_gpu_blocks, **cols)
