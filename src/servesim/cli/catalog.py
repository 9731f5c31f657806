"""Performance-model commands: `catalog`, `estimate`, `calibrate` and `perf-report`.

All of them live in perf_*.py modules and are registered here; each prints bad input as one
`error: ...` line on stderr and exits with code 2.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    from servesim.cli import perf_calibrate, perf_catalog, perf_estimate, validate

    perf_catalog.register(app)
    perf_estimate.register(app)
    perf_calibrate.register(app)
    validate.register(app)
