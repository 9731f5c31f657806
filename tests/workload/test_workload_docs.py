"""Every YAML example in docs/workloads.md is a valid scenario whose workload produces requests."""

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from servesim.scenario import validate_scenario
from servesim.workload import build_workload
from tests.workload.helpers import drive

DOC = Path(__file__).resolve().parents[2] / "docs" / "workloads.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), flags=re.S)


def test_docs_have_an_example_per_feature():
    text = "\n".join(BLOCKS)
    for key in ("trace: azure-conv", "speedup", "skip_bad_rows", "gamma", "weibull", "onoff", "piecewise",
                "diurnal", "closed", "servegen", "deepseek-r1", "mm-image", "shared_prefix", "sessions",
                "programs", "attributes", "sharegpt"):
        assert key in text, key


@pytest.mark.parametrize("block", BLOCKS, ids=[f"example{i}" for i in range(len(BLOCKS))])
def test_example_runs(block):
    scenario = validate_scenario(yaml.safe_load(block))
    workload = build_workload(scenario.workload, np.random.SeedSequence(0))
    head = list(itertools.islice(workload.arrivals(), 50))
    assert head and all(b.arrival_s >= a.arrival_s for a, b in zip(head, head[1:]))
    if scenario.workload.sessions or scenario.workload.programs:
        small = scenario.workload.model_copy(update={"num_requests": 100})
        assert len(drive(build_workload(small, np.random.SeedSequence(0)))) == 100
