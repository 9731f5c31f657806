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


@dataclass(frozen=True)
class BlockGrowth:
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


def _block_usage(starts: np.ndarray, lens: np.ndarray, growths: list[BlockGrowth], n: int) -> np.ndarray:
    """Blocks in use at every step of the stretches (global first step `starts`, `lens` steps
    each), vectorised over all of them at once; values in step order."""
    bs = growths[0].block_size
    sizes = np.array([len(b.first_new) for b in growths], dtype=np.int64)
    f = np.fromiter(chain.from_iterable(b.first_new for b in growths), dtype=np.int64, count=int(sizes.sum()))
    m = np.fromiter(chain.from_iterable(b.runs for b in growths), dtype=np.int64, count=len(f))
    c = np.where(f < m, (m - f - 1) // bs + 1, 0)  # blocks each request gets in its stretch
    first_block = np.repeat(np.repeat(starts, sizes) + f, c)
    nth = np.arange(len(first_block)) - np.repeat(np.cumsum(c) - c, c)
    delta = np.bincount(first_block + bs * nth, minlength=n).astype(float)
    frees = [(g + step, blocks) for g, b in zip(starts.tolist(), growths) for step, blocks in b.frees]
    if frees:
        at, blocks = zip(*frees)
        delta -= np.bincount(np.array(at), weights=np.array(blocks, dtype=float), minlength=n)
    cum = np.concatenate([[0.0], np.cumsum(delta)])  # cum[t + 1] = changes up to step t
    offset = np.array([b.used0 for b in growths], dtype=float) - cum[starts]
    return cum[_positions(starts, lens) + 1] + np.repeat(offset, lens)


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
        self._emitted: list[list[int]] = []
        self._running: list[list[int]] = []
        self._kv_used: list[int | BlockGrowth] = []  # a single step's value, or a stretch's growth

    def add_request(self, req: Request) -> None:
        self.requests.append(req)

    def log_step(self, start_s: float, end_s: float, prefill_tokens: int, output_tokens: int,
                 num_running: int, num_waiting: int, kv_used_blocks: int) -> None:
        self.log_decode_steps(start_s, [end_s], [num_running], num_waiting, kv_used_blocks, prefill_tokens,
                              [output_tokens])

    def log_decode_steps(self, start_s: float, ends_s: list[float], batch: list[int], num_waiting: int,
                         kv_used_blocks: int | BlockGrowth, first_prefill_tokens: int = 0,
                         emitted: list[int] | None = None) -> None:
        """Consecutive steps ending at `ends_s`: step j runs `batch[j]` requests, which emit a
        token each unless `emitted` says otherwise; only the first step computes prompt tokens."""
        self._start_s.append(start_s)
        self._prefill0.append(first_prefill_tokens)
        self._num_waiting.append(num_waiting)
        self._len.append(len(ends_s))
        self._ends.append(ends_s)
        self._running.append(batch)
        self._emitted.append(batch if emitted is None else emitted)
        self._kv_used.append(kv_used_blocks)
        self.num_steps += len(ends_s)

    def step_log(self, num_gpu_blocks: int) -> StepLog:
        n = self.num_steps
        lens = np.array(self._len, dtype=np.int64)
        first = np.cumsum(lens) - lens  # index of each chunk's first step

        def flat(chunks: list[list]) -> np.ndarray:
            return np.fromiter(chain.from_iterable(chunks), dtype=float, count=n)

        end_s = flat(self._ends)
        kv_used = np.empty(n)
        single = np.array([type(v) is int for v in self._kv_used], dtype=bool)
        kv_used[first[single]] = [v for v in self._kv_used if type(v) is int]
        if not single.all():
            grown = ~single
            kv_used[_positions(first[grown], lens[grown])] = _block_usage(
                first[grown], lens[grown], [v for v in self._kv_used if type(v) is not int], n)
        start_s = np.empty(n)
        start_s[1:] = end_s[:-1]
        start_s[first] = self._start_s
        prefill = np.zeros(n)
        prefill[first] = self._prefill0
        return StepLog(start_s=start_s, end_s=end_s, prefill_tokens=prefill, output_tokens=flat(self._emitted),
                       num_running=flat(self._running),
                       num_waiting=np.repeat(np.array(self._num_waiting, dtype=float), lens),
                       kv_used_blocks=kv_used, num_gpu_blocks=num_gpu_blocks)
