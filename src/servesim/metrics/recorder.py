"""The recorder: raw facts of a run, nothing derived.

It keeps the requests (with their timestamps and token step runs) and a log of engine steps:
start, end, prefill tokens, output tokens, running and waiting counts and KV blocks in use.
Steps are logged in chunks (a single step, or a fast-forwarded stretch whose per-step lists the
engine built anyway), so recording a stretch costs O(1) Python work; the columns are assembled
once, with numpy, when read. `summary.py` and `timeseries.py` derive everything else from
these, as pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import NamedTuple

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


class BlockGrowth(NamedTuple):
    """KV blocks in use over a fast-forwarded stretch, described instead of listed.

    `used0` blocks are in use in step 0. Request i gets a new block at steps first_new[i],
    first_new[i] + block_size, ... while below runs[i] (the steps it runs); `frees` lists
    (step, blocks) released before a step by requests that finished earlier in the stretch.
    """

    used0: int
    first_new: list[int]
    runs: list[int]
    block_size: int
    frees: list[tuple[int, int]]


def _positions(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """All step indices of chunks starting at `starts` with `lens` steps each."""
    return np.repeat(starts, lens) + (np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens))


class Recorder:
    """Collects requests and engine steps of one replica during a run."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.num_steps = 0
        # one entry per chunk of consecutive steps
        self._start_s: list[float] = []  # start of the chunk's first step (later ones start when the previous ends)
        self._prefill0: list[int] = []  # prompt tokens of the chunk's first step (later ones have none)
        self._num_waiting: list[int] = []  # constant over a chunk
        self._len: list[int] = []
        # per-step lists, one per chunk (kept by reference, not copied)
        self._ends: list[list[float]] = []
        self._single_emitted: list[int] = []  # tokens emitted by each single step (a stretch emits `batch`)
        self._running: list[list[int]] = []
        self._kv_used: list[int | None] = []  # a single step's blocks in use, or None for a stretch
        # block growth of the stretches, flattened as they are logged (expanded in step_log)
        self._block_size = 0
        self._growth_used0: list[int] = []
        self._growth_sizes: list[int] = []
        self._growth_first_new: list[list[int]] = []
        self._growth_runs: list[list[int]] = []
        self._frees: list[tuple[int, int]] = []  # (global step, blocks freed before it)

    def add_request(self, req: Request) -> None:
        self.requests.append(req)

    def log_step(self, start_s: float, end_s: float, prefill_tokens: int, output_tokens: int,
                 num_running: int, num_waiting: int, kv_used_blocks: int) -> None:
        self._single_emitted.append(output_tokens)
        self.log_decode_steps(start_s, [end_s], [num_running], num_waiting, kv_used_blocks, prefill_tokens)

    def log_decode_steps(self, start_s: float, ends_s: list[float], batch: list[int], num_waiting: int,
                         kv_used_blocks: int | BlockGrowth, first_prefill_tokens: int = 0) -> None:
        """Consecutive steps ending at `ends_s`: step j runs `batch[j]` requests; only the first
        computes prompt tokens. A stretch (KV use given as a `BlockGrowth`) emits a token per
        running request per step; a single step logged by `log_step` says what it emitted."""
        self._start_s.append(start_s)
        self._prefill0.append(first_prefill_tokens)
        self._num_waiting.append(num_waiting)
        self._len.append(len(ends_s))
        self._ends.append(ends_s)
        self._running.append(batch)
        if not isinstance(kv_used_blocks, BlockGrowth):
            self._kv_used.append(int(kv_used_blocks))
        else:
            used0, first_new, runs, self._block_size, frees = kv_used_blocks
            self._kv_used.append(None)
            self._growth_used0.append(used0)
            self._growth_sizes.append(len(first_new))
            self._growth_first_new.append(first_new)
            self._growth_runs.append(runs)
            for step, blocks in frees:
                self._frees.append((self.num_steps + step, blocks))
        self.num_steps += len(ends_s)

    def step_log(self, num_gpu_blocks: int) -> StepLog:
        n = self.num_steps
        lens = np.array(self._len, dtype=np.int64)
        first = np.cumsum(lens) - lens  # index of each chunk's first step

        def flat(chunks: list[list]) -> np.ndarray:
            return np.fromiter(chain.from_iterable(chunks), dtype=float, count=n)

        end_s = flat(self._ends)
        start_s = np.empty(n)
        start_s[1:] = end_s[:-1]
        start_s[first] = self._start_s
        prefill = np.zeros(n)
        prefill[first] = self._prefill0
        running = flat(self._running)
        single = np.array([v is not None for v in self._kv_used], dtype=bool)
        emitted = running.copy()
        emitted[first[single]] = self._single_emitted
        return StepLog(start_s=start_s, end_s=end_s, prefill_tokens=prefill, output_tokens=emitted,
                       num_running=running, num_waiting=np.repeat(np.array(self._num_waiting, dtype=float), lens),
                       kv_used_blocks=self._block_usage(first, lens, single), num_gpu_blocks=num_gpu_blocks)

    def _block_usage(self, first: np.ndarray, lens: np.ndarray, single: np.ndarray) -> np.ndarray:
        """Blocks in use at every step: single steps as logged, stretches expanded from their
        growth, vectorised over all of them at once."""
        n = self.num_steps
        kv = np.empty(n)
        stretch = ~single
        kv[first[single]] = [v for v in self._kv_used if v is not None]
        if not stretch.any():
            return kv
        starts, slens, bs = first[stretch], lens[stretch], self._block_size
        sizes = np.array(self._growth_sizes, dtype=np.int64)
        count = int(sizes.sum())
        f = np.fromiter(chain.from_iterable(self._growth_first_new), dtype=np.int64, count=count)
        m = np.fromiter(chain.from_iterable(self._growth_runs), dtype=np.int64, count=count)
        c = np.where(f < m, (m - f - 1) // bs + 1, 0)  # blocks each request gets in its stretch
        first_block = np.repeat(np.repeat(starts, sizes) + f, c)
        nth = np.arange(len(first_block)) - np.repeat(np.cumsum(c) - c, c)
        delta = np.bincount(first_block + bs * nth, minlength=n).astype(float)
        if self._frees:
            at, blocks = zip(*self._frees)
            delta -= np.bincount(np.array(at), weights=np.array(blocks, dtype=float), minlength=n)
        cum = np.concatenate([[0.0], np.cumsum(delta)])  # cum[t + 1] = changes up to step t
        offset = np.array(self._growth_used0, dtype=float) - cum[starts]
        kv[_positions(starts, slens)] = cum[_positions(starts, slens) + 1] + np.repeat(offset, slens)
        return kv


def concat_step_logs(logs: list[StepLog]) -> tuple[StepLog, list[int]]:
    """The replicas' logs one after another (each keeps its own time order), and the index of
    each log's first step. Step-to-step differences across a boundary belong to no request."""
    offsets = np.cumsum([0] + [len(g) for g in logs[:-1]]).tolist()
    cols = {c: np.concatenate([getattr(g, c) for g in logs]) for c in STEP_COLUMNS}
    return StepLog(**cols, num_gpu_blocks=sum(g.num_gpu_blocks for g in logs)), offsets
