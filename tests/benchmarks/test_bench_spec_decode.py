"""benchmarks/bench_spec_decode.py: fast-forwarded and stepped runs take the same number of
steps, about 2.5 tokens each. (Speeds are the benchmark's business, not asserted here.)"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_spec_decode", ROOT / "benchmarks" / "bench_spec_decode.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_both_ways_take_the_same_steps():
    steps, _ = bench.run(3, 200, True)
    assert (steps, bench.run(3, 200, False)[0]) == (steps, steps)
    assert 200 / 4 < steps < 200 / 2  # 1 + 3 drafts at 70%: about 2.5 tokens a step
