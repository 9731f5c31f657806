"""The `servesim` command line: a thin layer over the public API.

Each sub-command lives in its own module and registers itself on the shared Typer app; the
modules import the simulation lazily so that `servesim --help` stays fast.
"""

from __future__ import annotations

import signal

import typer

from servesim.cli import catalog, compare, plan, report, run, serve, trace

app = typer.Typer(
    name="servesim",
    help="Simulate, plan and emulate LLM inference serving.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (run, catalog, trace, report, compare, serve, plan):
    _module.register(app)


def main() -> None:
    # A terminated run (SIGTERM: `kill`, a job scheduler's time limit) unwinds as Ctrl-C does, so
    # the scratch folders of spilled step logs and request rows are removed on the way out.
    signal.signal(signal.SIGTERM, _terminate)
    app()


def _terminate(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)
