"""`StepLog`: one replica's engine steps as per-step columns, and joining several.

The shape every reader of steps shares (the step reducer, time series, power, cluster
sections, tests), kept apart from the recorder that produces it and the compact buffer it is
expanded from, so that readers depend on the log's shape only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP_COLUMNS = ("start_s", "end_s", "prefill_tokens", "output_tokens", "num_running", "num_waiting", "kv_used_blocks")


@dataclass(frozen=True)
class StepLog:
    """Per-step columns of one replica, all the same length (one entry per engine step).
    Times are float64; counts are int32 (4 bytes a step; arithmetic with a float promotes them
    to float64, so every derived value is what float64 counts would give)."""

    start_s: np.ndarray
    end_s: np.ndarray
    prefill_tokens: np.ndarray  # int32
    output_tokens: np.ndarray  # int32
    num_running: np.ndarray  # int32
    num_waiting: np.ndarray  # int32
    kv_used_blocks: np.ndarray  # int32
    num_gpu_blocks: int

    def __len__(self) -> int:
        return len(self.end_s)


@dataclass(frozen=True)
class StepTimes:
    """The columns of one replica's steps that the elastic, power and disaggregation sections
    read (each step's time, and whether it ran prompt tokens: prefill or decode power), kept
    for them when the whole log is not (`simulate(keep_steps=False)`): 20 bytes a step, where
    the log and its concatenation take 72."""

    start_s: np.ndarray
    end_s: np.ndarray
    prefill_tokens: np.ndarray  # int32 (as the log's)

    def __len__(self) -> int:
        return len(self.end_s)


def positions(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """All indices of ranges starting at `starts` with `lens` elements each."""
    lens = np.asarray(lens, dtype=np.int64)
    return np.repeat(starts, lens) + (np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens))


def concat_step_logs(logs: list[StepLog]) -> tuple[StepLog, list[int]]:
    """The replicas' logs one after another (each keeps its own time order), and the index of
    each log's first step. Step-to-step differences across a boundary belong to no request."""
    offsets = np.cumsum([0] + [len(g) for g in logs[:-1]]).tolist()
    cols = {c: np.concatenate([getattr(g, c) for g in logs]) for c in STEP_COLUMNS}
    return StepLog(**cols, num_gpu_blocks=sum(g.num_gpu_blocks for g in logs)), offsets
