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
        self._chunks: list = []  # lists of single-step tuples, or raw fast-forward stretches

    def add_request(self, req: Request) -> None:
        self.requests.append(req)

    def log_step(self, start_s: float, end_s: float, prefill_tokens: int, output_tokens: int,
                 num_running: int, num_waiting: int, kv_used_blocks: int) -> None:
        self._pending.append((start_s, end_s, prefill_tokens, output_tokens, num_running, num_waiting, kv_used_blocks))
        self.num_steps += 1

    def log_decode_steps(self, start_s: float, ends_s: np.ndarray, batch: int, num_waiting: int,
                         kv_used_blocks: list[int]) -> None:
        """A fast-forwarded stretch of identical decode steps ending at `ends_s` (kept raw until read)."""
        if self._pending:
            self._chunks.append(self._pending)
            self._pending = []
        self._chunks.append((start_s, ends_s, batch, num_waiting, kv_used_blocks))
        self.num_steps += len(ends_s)

    @staticmethod
    def _to_array(chunk) -> np.ndarray:
        if isinstance(chunk, list):  # single steps
            return np.array(chunk, dtype=float)
        start_s, ends_s, batch, num_waiting, kv_used = chunk
        out = np.empty((len(ends_s), len(STEP_COLUMNS)))
        out[0, 0] = start_s
        out[1:, 0] = ends_s[:-1]
        out[:, 1] = ends_s
        out[:, 2] = 0
        out[:, 3] = batch
        out[:, 4] = batch
        out[:, 5] = num_waiting
        out[:, 6] = kv_used
        return out

    def step_log(self, num_gpu_blocks: int) -> StepLog:
        chunks = self._chunks + ([self._pending] if self._pending else [])
        data = np.concatenate([self._to_array(c) for c in chunks]) if chunks else np.empty((0, len(STEP_COLUMNS)))
        cols = {name: data[:, i] for i, name in enumerate(STEP_COLUMNS)}
        return StepLog(num_gpu_blocks=num_gpu_blocks, **cols)
