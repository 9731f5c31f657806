"""Reading a plan file: the validated PlanConfig and the base scenario as a mapping."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from servesim.errors import InputError
from servesim.perf.hardware import gpu_spec
from servesim.planner.space import Candidate, PlanConfig
from servesim.scenario import _one_line, default_scenario_text, validate_scenario

PRICED_OBJECTIVES = ("cost", "goodput_per_dollar")


def _yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise InputError(f"{where}: malformed YAML{at}: {getattr(e, 'problem', e)}") from None


def load_plan(path: str | Path) -> tuple[PlanConfig, dict[str, Any]]:
    """The plan and its base scenario (SLO applied, probe size set), both validated."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"plan file '{path}' does not exist")
    data = _yaml(p.read_text(), str(path))
    if not isinstance(data, dict):
        raise InputError(f"{path}: a plan must be a mapping of keys to values")
    return parse_plan(data, str(path), p.parent)


def parse_plan(data: dict[str, Any], where: str = "plan", base_dir: Path = Path(".")) -> tuple[PlanConfig, dict]:
    try:
        plan = PlanConfig.model_validate(data)
    except ValidationError as e:
        raise InputError(f"{where}: {_one_line(e, allowed_from=PlanConfig)}") from None
    if isinstance(plan.scenario, str):
        scenario_path = base_dir / plan.scenario
        if not scenario_path.is_file():
            raise InputError(f"{where}: scenario file '{scenario_path}' does not exist")
        base = _yaml(scenario_path.read_text(), str(scenario_path)) or {}
    elif isinstance(plan.scenario, dict):
        base = dict(plan.scenario)
    else:
        base = _yaml(default_scenario_text(), "default scenario")
    if not isinstance(base, dict):
        raise InputError(f"{where}: the base scenario must be a mapping of keys to values")
    if plan.slo is not None:
        base["slo"] = dict(plan.slo)
    slo = validate_scenario(base, f"{where}: scenario").slo
    if slo.ttft_s is None and slo.tpot_s is None:
        raise InputError(f"{where}: goodput needs an SLO; set slo: {{ttft_s: ..., tpot_s: ...}}")
    workload = dict(base.get("workload") or {})
    workload["num_requests"] = plan.goodput.num_requests
    base["workload"] = workload
    validate_scenario(base, f"{where}: scenario")
    if plan.search.objective == "cost" and plan.traffic.rate_per_s is None:
        raise InputError(f"{where}: objective cost needs traffic.rate_per_s; allowed objectives without it: "
                         "goodput_per_gpu, goodput_per_dollar")
    return plan, base


def with_prices(cands: list[Candidate], objective: str) -> list[Candidate]:
    """Fill each candidate's price from the catalogue; a priced objective needs every price."""
    out = []
    for c in cands:
        price = c.price_usd_h if c.price_usd_h is not None else gpu_spec(c.gpu).price_usd_h
        if objective in PRICED_OBJECTIVES and not price:
            raise InputError(f"GPU {c.gpu} has no price and the objective is {objective}; set "
                             f"space.gpu: [{{name: {c.gpu}, price_usd_h: ...}}] or use objective goodput_per_gpu")
        out.append(dataclasses.replace(c, gpu=gpu_spec(c.gpu).name, price_usd_h=price or None))
    return out
