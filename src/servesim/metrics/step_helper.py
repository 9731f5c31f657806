"""The step logs' reduction in a helper process, beside the event loop on a second core.

A run hands each replica's steps on in buffers of `Recorder.CHUNK_STEPS` steps. Expanding a
buffer and reducing it (metrics/step_reduce.py) is about a tenth of an 8-replica run, and it
reads nothing the loop changes afterwards. Where a second core and `fork` exist, a forked
process does it: the loop sends each buffer down a pipe (compact: 8 bytes a step and a few
numbers per stretch), in the order the recorders hand them on, and takes the reducers back
when the run ends. A buffer goes as a fixed header and its columns' raw bytes in one
`writev` (`StepBuffer.wire`; pickling it cost the loop several times the copy). The child
runs the same code on the same values in the same order, so the results are the bytes an
in-process reduction gives (tests/metrics/test_step_helper.py).

The fork happens once the buffers handed on hold `FORK_AT_STEPS` steps; those before are
reduced here. A fork costs both processes: each page one of them writes after it is copied,
and the buffers cross a pipe, so a helper that reduced a 4,000-request matrix cell's 90,000 to
170,000 steps cost 0.04 to 0.2 CPU seconds more than reducing them here (20 % of the cell) and
saved it no wall time; a run's reduction pays for the fork only in its later steps. A fork
(not spawn) copies the reducers as they are, their files flushed (the parent writes them no
more), and the child goes on from their state: the same bytes as an in-process reduction.
If the loop's process fails, the child sees its pipe close and exits; if the child fails, the
run fails at its end with the child's traceback.

The same pipe carries the token runs of the requests that ended and, now and then, each
replica's watermark (below which no run is still to come): the child reduces the inter-token
gaps as the steps come (itl_stream.py) and sends the summary's `itl_s` figures back with the
reducers, so the loop's process does not join runs and steps after the run. When the runs did
not come down the pipe (one replica: their trips would cost the loop more than the join; a
request that moved between replicas), the child makes that join after the run instead, from
the step ends' files and the runs (their spilled files, or arrays sent once: `join_gaps`),
while the loop's process closes the run and summarises.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import struct
import threading
import traceback

import numpy as np

from servesim.metrics.itl import RunChunks, itl_stats, values_stats
from servesim.metrics.itl_stream import ITLStream
from servesim.metrics.step_buffer import WIRE, StepBuffer
from servesim.metrics.step_ends import StepEnds
from servesim.metrics.step_reduce import StepReducer

# a message's header: replica index of a step buffer, or one of the kinds below; steps, block
# size, values per column (a buffer); runs, requests (token runs); replicas (watermarks)
_HEAD = struct.Struct(f"<3q{len(WIRE)}q")
_END, _RUNS, _WATERMARKS, _ENDS = -1, -2, -3, -4  # (_ENDS: a replica's step ends reduced before the fork)
_NO_SIZES = (0,) * len(WIRE)


def helper_wanted() -> bool:
    """Reduce in a helper: `fork` exists, this process may run on at least two cores, it is
    not itself a worker (a parallel sweep's workers already share the cores out), and it runs
    one thread (a fork copies no other thread, so a lock one of them held would stay held in
    the child: a server's, or a Ray worker's, threads)."""
    if ("fork" not in multiprocessing.get_all_start_methods() or multiprocessing.parent_process() is not None
            or threading.active_count() > 1):
        return False
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores >= 2


class ReducerHelper:
    """Reduces the replicas' step buffers in a forked process (started once `FORK_AT_STEPS`
    steps were reduced here)."""

    #: steps reduced in this process before the helper forks (0.1 to 0.25 CPU s of reduction)
    FORK_AT_STEPS = 1 << 20

    def __init__(self, reducers: list[StepReducer], folder: str | None = None) -> None:
        self.reducers = reducers  # replica index -> its reducer (the child's copies, once forked)
        self.folder = folder  # where the child's gaps go beyond memory
        self.num_buffers = 0  # buffers sent to the child
        self.steps_here = 0  # steps reduced in this process before the fork
        self._ends_here: list[tuple[int, np.ndarray]] = []  # (replica, their step ends), for the child's gaps
        self.stream_itl = True  # token runs go to the child (False once a request moved between replicas)
        self._itl_pending = False  # the child's `itl_s` is still to be read (`itl`)
        self._itl: dict | None = None
        self._queued: list[list] = []  # token runs sent before the child starts
        self._conn = None  # buffers go down this end
        self._answers = None  # the child's answer comes back on this one
        self._proc = None
        self._ended = False  # the end was sent (`end`)

    def add(self, index: int, buf: StepBuffer) -> bool:
        """Reduce `buf` into replica `index`'s reducer: here before the fork (False: the buffer
        is the reducer's to keep), then in the child, in sending order (True: its bytes are in
        the pipe, the buffer free again)."""
        if self._conn is None:
            if self.steps_here + buf.num_steps <= self.FORK_AT_STEPS:
                log = buf.log(0)
                self.reducers[index].add(log)
                self.steps_here += buf.num_steps
                if self.stream_itl:  # (the child's gap stream starts from every step's end)
                    self._ends_here.append((index, log.end_s))
                return False
            self._start()
            for parts in self._queued:
                self._send(parts)
            for replica, ends in self._ends_here if self.stream_itl else ():
                ends = np.ascontiguousarray(ends, dtype=np.float64)
                self._send([_HEAD.pack(_ENDS, replica, len(ends), *_NO_SIZES), ends])
            self._queued = self._ends_here = []
        arrays = buf.wire()
        self._send([_HEAD.pack(index, buf.num_steps, buf.block_size, *map(len, arrays)), *arrays])
        self.num_buffers += 1
        return True

    def add_runs(self, bounds: np.ndarray, replicas: np.ndarray, counts: np.ndarray) -> None:
        """Token runs of requests that ended (`ITLStream.add_runs`; int64 arrays)."""
        if not self.stream_itl or not len(counts):
            return
        parts = [_HEAD.pack(_RUNS, len(replicas), len(counts), *_NO_SIZES), bounds, replicas, counts]
        if self._conn is None:
            self._queued.append(parts)
        else:
            self._send(parts)

    def add_watermarks(self, watermarks: list[int]) -> None:
        """Per replica, the lowest step a token run still to come can start at."""
        if self.stream_itl and self._conn is not None:
            self._send([_HEAD.pack(_WATERMARKS, len(watermarks), 0, *_NO_SIZES), np.array(watermarks, dtype=np.int64)])

    def end(self) -> None:
        """Nothing more comes: the child reduces what it was sent and answers (`finish`), while
        this process goes on with what does not need the reducers."""
        self._queued = self._ends_here = []
        if self._conn is not None and not self._ended:
            self._ended = True
            self._send([_HEAD.pack(_END, 0, int(self.stream_itl), *_NO_SIZES)])

    def finish(self) -> list[StepReducer]:
        """The reducers, every buffer sent reduced into them (their step-end files closed).
        The child then finishes the gaps (`itl`) while this process goes on; if they were not
        streamed, it waits for `join_gaps`."""
        self.end()
        if self._conn is None:
            return self.reducers
        self.reducers = self._result()
        self._itl_pending = self.stream_itl
        return self.reducers

    def join_gaps(self, runs: RunChunks | None, ends: StepEnds | None) -> None:
        """After `finish`, when the gaps were not streamed (one replica, or a request that
        moved): the child joins the token runs `runs` (picklable: the spilled rows' files, or
        the arrays of rows held in memory, sent down the pipe) with the
        step ends `ends` (itl.itl_stats, the join the summary would make) while this process
        goes on with the summary's other passes; `itl` then reads its figures. None: nothing
        to join there (the summary joins them), and the child ends."""
        if self._conn is None or self.stream_itl:
            return
        if runs is None:
            self.stop()
            return
        self._conn.send((runs, ends))
        self._itl_pending = True

    def itl(self) -> dict | None:
        """The summary's `itl_s` as the child reduced it (waits for it once); None: it did
        not (no child, or the gaps are left to the join after the run)."""
        if self._itl_pending:
            self._itl_pending = False
            try:
                self._itl = self._result()
            finally:
                self.stop()
        return self._itl

    def _result(self):
        status, payload = self._answer()
        if status != "ok":
            self.stop()
            raise RuntimeError(f"the step log's helper process failed:\n{payload}")
        return payload

    def _send(self, parts: list) -> None:
        try:
            _write_all(self._conn.fileno(), parts)
        except OSError:  # the child is gone: it failed (its report may wait in the pipe)
            _, payload = self._answer()
            self.stop()
            raise RuntimeError(f"the step log's helper process failed:\n{payload}") from None

    def _answer(self) -> tuple[str, object]:
        try:
            return self._answers.recv()
        except (EOFError, OSError):
            self._proc.join(timeout=5)
            return "error", f"it exited with code {self._proc.exitcode}"

    def stop(self) -> None:
        """End the child (a failed run: whatever it holds is not needed)."""
        if self._conn is not None:
            self._conn.close()
            self._answers.close()
        if self._proc is not None:
            self._proc.join(timeout=5)
            if self._proc.is_alive():  # pragma: no cover - a child stuck in a write
                self._proc.kill()
                self._proc.join()

    def _start(self) -> None:
        # (the child's reducers go back pickled at the end, and this process's copies are done
        # with: the step ends held beyond a first chunk go to their files before the fork)
        for reducer in self.reducers:
            reducer.hold_no_more()
        ctx = multiprocessing.get_context("fork")
        down_r, down_w = ctx.Pipe(duplex=False)  # buffers to the child
        up_r, up_w = ctx.Pipe(duplex=False)  # its answer
        _widen(down_w)
        _widen(up_w)  # (the reducers go back without waiting for this process to read: the gaps follow at once)
        self._proc = ctx.Process(target=_serve, args=(down_r, up_w, (down_w, up_r), self.reducers, self.folder),
                                 daemon=True,
                                 name="servesim-steps")
        self._proc.start()
        down_r.close()
        up_w.close()
        self._conn, self._answers = down_w, up_r


def _widen(conn) -> None:
    """Let the pipe hold a few buffers (about 150 kB each; Linux gives a pipe 64 kB), so the loop
    writes and goes on while the child is busy or waits for a core, and the child's answer (the
    reducers) while the loop's process closes its request table; elsewhere, or if refused, the
    writer waits on a full pipe instead."""
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass


def _serve(down, up, parent_ends: tuple, reducers: list[StepReducer], folder: str | None) -> None:
    """The child: reduce buffers and join token runs until told to stop, then send the
    reducers and the gaps' figures back."""
    for end in parent_ends:
        end.close()  # (else the pipe would never report the parent gone)
    # Ctrl-C reaches the whole process group: the parent stops the run (and the pipe closes);
    # a termination signal ends the child quietly, not through the parent's handlers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    fd = down.fileno()
    itl = ITLStream(len(reducers), folder)
    try:
        while True:
            index, num_steps, block_size, *sizes = _HEAD.unpack(_read_exact(fd, _HEAD.size))
            if index == _END:
                break
            if index == _RUNS:  # bounds, replica of each run, runs of each request
                itl.add_runs(*(_read_array(fd, n) for n in (2 * num_steps, num_steps, block_size)))
                continue
            if index == _WATERMARKS:
                itl.advance(_read_array(fd, num_steps).tolist())
                continue
            if index == _ENDS:  # replica, steps
                itl.add_ends(num_steps, _read_array(fd, block_size, np.float64))
                continue
            arrays = [np.empty(n, dtype=dtype) for n, dtype in zip(sizes, WIRE)]
            for a in arrays:
                _read_into(fd, memoryview(a).cast("B"))
            log = StepBuffer.from_wire(num_steps, block_size, arrays).log(0)
            reducers[index].add(log)
            itl.add_ends(index, log.end_s)
        up.send(("ok", reducers))
        if block_size:  # (block_size of the end: runs were sent all along; the parent waits for the gaps)
            stats = None
            if itl.valid:
                itl.advance(None)
                stats = values_stats(itl.values)
            itl.close()
            up.send(("ok", stats))
        else:  # the gaps joined after the run, here (`join_gaps`), or none (the pipe closes)
            itl.close()
            runs, ends = down.recv()
            up.send(("ok", itl_stats(runs, ends, folder)))
    except EOFError:
        return  # the loop's process failed or went away: nothing to report to
    except BaseException:  # noqa: BLE001  (reported to the parent, which raises it)
        try:
            up.send(("error", traceback.format_exc()))
        except OSError:
            pass  # (the parent is gone too)


def _write_all(fd: int, parts: list) -> None:
    """Write the byte buffers (bytes, contiguous arrays) to the pipe `fd`, all of them: one
    `writev`, continued where a signal cut it short."""
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        done = os.writev(fd, views)
        while views and done >= len(views[0]):
            done -= len(views.pop(0))
        if done:
            views[0] = views[0][done:]


def _read_into(fd: int, view: memoryview) -> None:
    """Fill `view` from the pipe `fd` (EOFError: the writer is gone)."""
    while len(view):
        n = os.readv(fd, [view])
        if n == 0:
            raise EOFError
        view = view[n:]


def _read_array(fd: int, n: int, dtype=np.int64) -> np.ndarray:
    a = np.empty(n, dtype=dtype)
    _read_into(fd, memoryview(a).cast("B"))
    return a


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray(n)
    _read_into(fd, memoryview(buf))
    return bytes(buf)
