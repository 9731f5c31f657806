"""The `servesim` command line: a thin layer over the public API.

Each sub-command lives in its own module and registers itself on the shared Typer app; the
modules import the simulation lazily so that `servesim --help` stays fast.
"""

from __future__ import annotations

import typer

from servesim.cli import catalog, compare, plan, report, run, serve, terminate, trace

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
    terminate.install()
    app()
