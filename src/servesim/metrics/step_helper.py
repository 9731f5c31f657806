"""The step logs' reduction in a helper process, beside the event loop on a second core.

A run hands each replica's steps on in buffers of `Recorder.CHUNK_STEPS` steps. Expanding a
buffer and reducing it (metrics/step_reduce.py) is about a tenth of an 8-replica run, and it
reads nothing the loop changes afterwards. Where a second core and `fork` exist, a forked
process does it: the loop sends each buffer down a pipe (compact: 8 bytes a step and a few
numbers per stretch), in the order the recorders hand them on, and takes the reducers back
when the run ends. The child runs the same code on the same values in the same order, so the
results are the bytes an in-process reduction gives (tests/metrics/test_step_helper.py).

The fork happens at the first full buffer, so short runs never fork. A fork (not spawn) copies
the reducers as they are, with the files their step ends go to; the parent never writes those.
If the loop's process fails, the child sees its pipe close and exits; if the child fails, the
run fails at its end with the child's traceback.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import traceback

from servesim.metrics.step_buffer import StepBuffer
from servesim.metrics.step_reduce import StepReducer


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
    """Reduces the replicas' step buffers in a forked process (started at the first buffer)."""

    def __init__(self, reducers: list[StepReducer]) -> None:
        self.reducers = reducers  # replica index -> its reducer (the child's copies, once forked)
        self.num_buffers = 0  # buffers sent to the child
        self._conn = None  # buffers go down this end
        self._answers = None  # the child's answer comes back on this one
        self._proc = None

    def add(self, index: int, buf: StepBuffer) -> None:
        """Reduce `buf` into replica `index`'s reducer (in the child, in sending order)."""
        if self._conn is None:
            self._start()
        buf.pack()  # (a few arrays to pickle, not lists of numbers)
        buf.ends.array()
        self._send((index, buf))
        self.num_buffers += 1

    def finish(self) -> list[StepReducer]:
        """The reducers, every buffer sent reduced into them (their step-end files closed)."""
        if self._conn is None:
            return self.reducers
        self._send(None)
        status, payload = self._answer()
        self.stop()
        if status != "ok":
            raise RuntimeError(f"the step log's helper process failed:\n{payload}")
        self.reducers = payload
        return payload

    def _send(self, msg) -> None:
        try:
            self._conn.send(msg)
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
        ctx = multiprocessing.get_context("fork")
        down_r, down_w = ctx.Pipe(duplex=False)  # buffers to the child
        up_r, up_w = ctx.Pipe(duplex=False)  # its answer
        _widen(down_w)
        self._proc = ctx.Process(target=_serve, args=(down_r, up_w, (down_w, up_r), self.reducers), daemon=True,
                                 name="servesim-steps")
        self._proc.start()
        down_r.close()
        up_w.close()
        for r in self.reducers:
            r.close()  # (this process's copies of their step-end files: the child writes them)
        self._conn, self._answers = down_w, up_r


def _widen(conn) -> None:
    """Let the pipe hold a few buffers (about 150 kB each; Linux gives a pipe 64 kB), so the loop
    writes and goes on while the child is busy or waits for a core; elsewhere, or if refused,
    the loop waits on a full pipe instead."""
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass


def _serve(down, up, parent_ends: tuple, reducers: list[StepReducer]) -> None:
    """The child: reduce buffers until told to stop, then send the reducers back."""
    for end in parent_ends:
        end.close()  # (else the pipe would never report the parent gone)
    # Ctrl-C reaches the whole process group: the parent stops the run (and the pipe closes);
    # a termination signal ends the child quietly, not through the parent's handlers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        while (msg := down.recv()) is not None:
            index, buf = msg
            reducers[index].add(buf.log(0))
        for r in reducers:
            r.close()
        up.send(("ok", reducers))
    except EOFError:
        return  # the loop's process failed or went away: nothing to report to
    except BaseException:  # noqa: BLE001  (reported to the parent, which raises it)
        try:
            up.send(("error", traceback.format_exc()))
        except OSError:
            pass  # (the parent is gone too)
