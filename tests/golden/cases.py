"""The golden cases: scenarios whose outputs must stay byte-identical across refactors.

Every example, every scheduler on an overloaded slice of the Azure conversation trace (so
that preemption, swapping and queueing paths all run), a closed-loop session workload and
speculative decoding. `hashes.json` holds the sha256 of each case's `summary.json` (without
`wall_time_s`) and `requests.csv`; `python tests/golden/regen.py` rewrites it after a
deliberate, documented change of results.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from servesim import load_scenario, simulate
from servesim.output import write_run
from servesim.replica.schedulers import available

ROOT = Path(__file__).resolve().parents[2]
HASHES = Path(__file__).with_name("hashes.json")
OVERLOAD = ["workload.trace.speedup=6", "workload.trace.end_s=300", "engine.gpu_memory_utilization=0.3"]


def cases() -> dict[str, tuple[str, list[str]]]:
    """name -> (scenario file or None for the default, --set overrides)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        out[f"example-{path.stem}"] = (str(path), [])
    for name in available():
        out[f"overload-{name}"] = (str(ROOT / "examples/azure-conv.yaml"), [f"scheduler.name={name}", *OVERLOAD])
    for name in ("vllm", "sarathi", "continuum"):
        out[f"sessions-{name}"] = (str(ROOT / "examples/sessions.yaml"),
                                   [f"scheduler.name={name}", "workload.num_requests=400"])
    out["spec-decode"] = (str(ROOT / "examples/azure-code.yaml"),
                          ["engine.num_speculative_tokens=3", "workload.trace.end_s=600"])
    return out


def digest(path: str, overrides: list[str], out_dir: Path) -> dict[str, str]:
    """sha256 of the run's summary (wall time removed) and per-request table."""
    result = simulate(load_scenario(path, overrides))
    summary = result.summary()
    summary.pop("wall_time_s")
    write_run(result, out_dir, summary)
    text = json.dumps(json.loads((out_dir / "summary.json").read_text()), sort_keys=True)
    return {"summary": hashlib.sha256(text.encode()).hexdigest(),
            "requests": hashlib.sha256((out_dir / "requests.csv").read_bytes()).hexdigest()}
