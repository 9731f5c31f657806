"""Start-up structure: `servesim --help` and `import servesim` load none of the simulation stack.

Each check runs a fresh interpreter (the test process has imported everything already) and
reads its `sys.modules`; times are measured by benchmarks/bench_startup.py, not here.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

import servesim
from servesim.cli import app

HEAVY = ["numpy", "pydantic", "yaml", "plotly", "fastapi", "scipy", "pandas", "pyarrow", "ray",
         "servesim.scenario", "servesim.simulation", "servesim.report", "servesim.planner", "servesim.serve",
         "servesim.validation"]


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_help_imports_no_simulation_stack():
    code = ("import sys\nsys.argv = ['servesim', '--help']\nfrom servesim.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code")
    assert sorted(set(HEAVY) & loaded_after(code)) == []


def test_import_servesim_is_lazy_until_an_api_name_is_used():
    assert sorted(set(HEAVY) & loaded_after("import servesim")) == []
    assert {"servesim.scenario", "servesim.simulation"} <= loaded_after("from servesim import simulate")


def test_lazy_api_names_are_the_real_ones():
    from servesim.scenario import Scenario, load_scenario
    from servesim.simulation import Result, simulate

    assert (servesim.simulate, servesim.Result) == (simulate, Result)
    assert (servesim.load_scenario, servesim.Scenario) == (load_scenario, Scenario)
    assert set(servesim.__all__) <= set(dir(servesim))
    with pytest.raises(AttributeError, match="no attribute 'simulte'"):
        servesim.simulte  # noqa: B018


def test_run_help_still_lists_every_scenario_key_and_scheduler_parameter():
    res = CliRunner().invoke(app, ["run", "--help"], terminal_width=400)
    assert res.exit_code == 0, res.output
    assert "Simulate SCENARIO" in res.output
    assert "engine.max_num_batched_tokens (" in res.output  # a scenario key, built on demand
    assert "scheduler.sarathi: scheduler.chunk_size" in res.output  # a scheduler's own parameter
    listing = CliRunner().invoke(app, ["--help"], terminal_width=400).output
    assert "Simulate SCENARIO" in listing and "Serve the OpenAI API" in listing


def test_validate_default_file_matches_the_validation_module():
    from servesim.cli.validate import DEFAULT_SILICON as cli_default
    from servesim.validation.silicon import DEFAULT_SILICON

    assert cli_default == DEFAULT_SILICON
