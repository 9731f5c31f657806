"""SIGTERM (`kill`, a job scheduler's time limit) unwinds a command as Ctrl-C does, so the
scratch folders of spilled step logs and request rows are removed and nothing is half written.

Raising from the handler is not always enough: when the signal lands while an extension module
is being imported (numpy.random's, at the start of a run) the import can swallow the handler's
`SystemExit` and the run goes on. So the signal is also remembered, and the progress callbacks
(which the long commands call every few thousand requests, with or without a bar) raise it
again at that safe point.
"""

from __future__ import annotations

import signal

_received: list[int] = []  # the process's signal state, one per process as signals are


def install() -> None:
    signal.signal(signal.SIGTERM, _handle)


def _handle(signum: int, _frame) -> None:
    _received.append(signum)
    raise SystemExit(128 + signum)


def check() -> None:
    """Exit as the handler would if a SIGTERM arrived and its exit was swallowed."""
    if _received:
        raise SystemExit(128 + _received[0])
