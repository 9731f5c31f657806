"""The plan files in examples/plans/ and the YAML blocks of docs/planner.md are valid plans."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from servesim.planner.plan import load_plan, parse_plan
from servesim.planner.space import expand

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "plans").glob("*.yaml")), ids=lambda p: p.stem)
def test_example_plans_load(path):
    plan, base = load_plan(path)
    assert len(expand(plan.space)) >= 1 and base["slo"]["ttft_s"] > 0


def test_doc_plan_blocks_parse():
    text = (ROOT / "docs" / "planner.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]
    assert len(blocks) == 2
    full, mix = blocks
    plan, _ = parse_plan(full, "docs", ROOT / "examples" / "plans")
    assert [c.label for c in expand(plan.space)][0] == "h100-sxm tp1 seqs=64 vllm round-robin"
    plan, _ = parse_plan({"scenario": "../azure-conv.yaml", "traffic": {"rate_per_s": 1}, **mix}, "docs",
                         ROOT / "examples" / "plans")
    assert [b.name for b in plan.mix.buckets] == ["short", "long"]
