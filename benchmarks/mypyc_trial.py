"""Compile servesim's hot modules with mypyc into a scratch copy of `src/`, to compare the
compiled and the interpreted code in the same minutes (docs/performance-history.md, "The hot path
compiled with mypyc"). The repository is not touched; nothing here is installed.

Run: python benchmarks/mypyc_trial.py /tmp/servesim-mypyc      (needs `pip install mypy` and gcc)
then e.g. PYTHONPATH=/tmp/servesim-mypyc/src python benchmarks/bench_cluster.py --replicas 8
against PYTHONPATH=src, alternated.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The modules that compile as they are (native classes: EventLoop, InFlightCounts, Cluster,
# Replica, Feed, RunTimes, FreeQueue, ...). The engine, stretch, KV cache and scheduler classes
# are mixin stacks, which mypyc's native classes cannot be: see the docs section.
MODULES = ["core/loop.py", "cluster/counts.py", "cluster/cluster.py", "cluster/routers/common.py",
           "workload/feed.py", "perf/terms.py", "replica/replica.py", "replica/token_advance.py",
           "replica/lone_stretch.py", "replica/stretch_join.py", "replica/stretch_chunks.py",
           "replica/free_queue.py", "replica/schedulers/arrival_joins.py"]
# mypy's checks the mixin-heavy code fails today (mypyc compiles only code that type-checks);
# the modules above need none of them but the Optional narrowing ones
DISABLED = "union-attr, index, arg-type, operator, attr-defined"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="scratch folder (replaced)")
    args = ap.parse_args()
    src = args.out / "src"
    shutil.rmtree(args.out, ignore_errors=True)
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    (src / "mypy.ini").write_text(f"[mypy]\nignore_missing_imports = True\ndisable_error_code = {DISABLED}\n")
    cmd = [sys.executable, "-m", "mypyc", "--config-file", "mypy.ini", *(f"servesim/{m}" for m in MODULES)]
    subprocess.run(cmd, cwd=src, check=True)
    print(f"compiled {len(MODULES)} modules: PYTHONPATH={src}")


if __name__ == "__main__":
    main()
