"""Speed matrix: every scheduler x five workloads x {1, 8} replicas, one fresh process per cell.

    python benchmarks/bench_matrix.py                      # the whole matrix, printed as markdown
    python benchmarks/bench_matrix.py --quick              # 500 requests per cell, a smoke run
    python benchmarks/bench_matrix.py --schedulers vllm,sarathi --workloads azure-conv --replicas 8
    python benchmarks/bench_matrix.py --docs               # also rewrite the table in docs/performance.md
    python benchmarks/bench_matrix.py --profile vllm mooncake 1   # cProfile one cell: top functions

Each cell simulates the first `--requests` requests (default 4,000) of its workload. With 8
replicas the arrival rate is multiplied by 8 (trace speedup or Poisson rate) so that each
replica of a least-requests cluster sees about the load of the single replica; the same
number of requests then covers an eighth of the simulated time. Each cell runs in its own
Python process, so one cell's heap and caches cannot slow the next and the peak RSS is the
cell's own; a cell that exceeds `--timeout` seconds is killed and shown as "timeout".
Timed: `simulate()` plus `summary()`, best of `--repeat` runs (default 3, as `bench_replay.py`:
the least wall and the least CPU time, each over the runs), after a warm-up run of the cell's first `--warmup`
requests (default 100) in the same process, so that neither the imports and scenario loading
nor what a process does once on first use is counted: the modules a run imports when it first
needs them (numpy.random, the trace readers: about 25 ms on the 2-core host, a tenth of a
4,000-request cell at 15,000 requests a second, 11 ms of it compiling them again under
PYTHONDONTWRITEBYTECODE) and the catalogue's parsed files. `bench_replay.py`'s best of three
leaves them out the same way. `--warmup 0` times a cold process, as the tables before the
thirty-eighth round did, and `--repeat 1` a single run, as they did before the forty-first
(docs/performance-history.md): on a shared host one run's time can be 1.7 times another's.
Targets (issue 15): >= 10,000 simulated requests per CPU second in every cell; vLLM on
azure-conv >= 40,000.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"

# name -> (example file, fixed overrides, rate key, rate at 1 replica)
WORKLOADS: dict[str, tuple[str, list[str], str, float]] = {
    "azure-conv": ("azure-conv.yaml", [], "workload.trace.speedup", 1.0),
    "azure-conv-10x": ("azure-conv.yaml", [], "workload.trace.speedup", 10.0),
    "mooncake": ("mooncake.yaml", [], "workload.trace.speedup", 0.25),
    "sessions": ("sessions.yaml", [], "workload.arrival.rate_per_s", 0.5),
    "spec-decode": ("azure-code.yaml", ["engine.num_speculative_tokens=3"], "workload.trace.speedup", 1.0),
}
REPLICAS = (1, 8)


def cell_overrides(scheduler: str, workload: str, replicas: int, requests: int) -> tuple[str, list[str]]:
    """(scenario file, --set overrides) of one cell."""
    example, fixed, rate_key, rate = WORKLOADS[workload]
    sets = [f"scheduler.name={scheduler}", f"workload.num_requests={requests}", *fixed,
            f"{rate_key}={rate * replicas:g}"]
    if replicas > 1:
        sets += [f"replicas={replicas}", "router.name=least-requests"]
    return str(ROOT / "examples" / example), sets


def run_cell(scheduler: str, workload: str, replicas: int, requests: int, warmup: int = 0, repeat: int = 1) -> dict:
    """Simulate one cell in this process and measure it, best of `repeat` runs, after a warm-up
    run of its first `warmup` requests (0: none) (the child side)."""
    import resource

    from servesim import load_scenario, simulate

    from bench_replay import children_cpu_s  # (this folder is on the path: a cell runs as a script)

    def cpu() -> float:  # this process and the step reduction's helper process
        return time.process_time() + children_cpu_s()

    warmed = simulate(load_scenario(*cell_overrides(scheduler, workload, replicas, warmup))).summary()[
        "num_requests"] if warmup else 0
    scenario = load_scenario(*cell_overrides(scheduler, workload, replicas, requests))
    wall_s = cpu_s = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), cpu()
        result = simulate(scenario)
        summary = result.summary()
        wall_s, cpu_s = min(wall_s, time.perf_counter() - t0), min(cpu_s, cpu() - c0)
    steps = summary["num_steps"]
    return {"requests": summary["num_requests"], "warmup_requests": warmed, "runs": repeat, "wall_s": wall_s, "cpu_s": cpu_s, "steps": steps,
            "ff_share": result.num_fast_forwarded_steps / max(steps, 1),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def profile_cell(path: str, overrides: list[str], top: int = 12) -> None:
    """Print the `top` functions by own time of one cell's simulate() + summary() (cProfile)."""
    import cProfile
    import pstats

    from servesim import load_scenario, simulate

    scenario = load_scenario(path, overrides)
    profiler = cProfile.Profile()
    profiler.runcall(lambda: simulate(scenario).summary())
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def spawn_cell(scheduler: str, workload: str, replicas: int, requests: int, timeout_s: float,
               warmup: int = 0, repeat: int = 1) -> dict:
    """Run one cell in a fresh interpreter; {"status": "ok"|"timeout"|"error", ...measurements}."""
    cmd = [sys.executable, __file__, "--cell", scheduler, workload, str(replicas), str(requests),
           "--warmup", str(warmup), "--repeat", str(repeat)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:  # subprocess.run kills the child it started
        return {"status": "timeout"}
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()
        return {"status": "error", "message": lines[-1][:120]}
    return {"status": "ok", **json.loads(done.stdout.strip().splitlines()[-1])}


def row(scheduler: str, workload: str, replicas: int, cell: dict) -> str:
    head = f"| {scheduler} | {workload} | {replicas} |"
    if cell["status"] != "ok":
        note = cell["status"] + (f": {cell['message']}" if "message" in cell else "")
        return head + f" {note.replace('|', '/')} |" + " |" * 6
    n = cell["requests"]
    return (head + f" {n:,} | {cell['wall_s']:.2f} | {n / cell['wall_s']:,.0f} | {cell['cpu_s']:.2f} | "
            f"{n / cell['cpu_s']:,.0f} | {cell['peak_rss_mb']:,.0f} | {cell['ff_share']:.1%} |")


HEADER = ("| scheduler | workload | replicas | requests | wall s | req / wall s | CPU s | req / CPU s "
          "| peak RSS MB | fast-forwarded steps |\n|---|---|---|---|---|---|---|---|---|---|")


def write_docs(table: str) -> None:
    """Replace the text between the matrix markers of docs/performance.md."""
    text = DOCS.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        sys.exit(f"error: {DOCS} has no {BEGIN} ... {END} markers")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    DOCS.write_text(pattern.sub(lambda _: f"{BEGIN}\n{table}\n{END}", text), encoding="utf-8")


def pick(value: str, allowed: list[str], what: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()] if value else list(allowed)
    bad = [v for v in chosen if v not in allowed]
    if bad:
        sys.exit(f"error: unknown {what} {', '.join(bad)}; allowed: {', '.join(allowed)}")
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schedulers", default="", help="comma-separated (default: every registered scheduler)")
    ap.add_argument("--workloads", default="", help=f"comma-separated from {', '.join(WORKLOADS)} (default: all)")
    ap.add_argument("--replicas", default="1,8", help="comma-separated from 1, 8 (default: both)")
    ap.add_argument("--requests", type=int, default=4000, help="requests simulated per cell (default 4000)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a cell is killed (default 120)")
    ap.add_argument("--warmup", type=int, default=100,
                    help="requests of the warm-up run before the timed one (default 100; 0: a cold process)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per cell, the best taken (default 3)")
    ap.add_argument("--quick", action="store_true", help="500 requests per cell, 60 s timeout")
    ap.add_argument("--docs", action="store_true", help=f"write the table into {DOCS.relative_to(ROOT)}")
    ap.add_argument("--cell", nargs=4, metavar=("SCHEDULER", "WORKLOAD", "REPLICAS", "REQUESTS"),
                    help=argparse.SUPPRESS)  # internal: run one cell and print its JSON
    ap.add_argument("--profile", nargs=3, metavar=("SCHEDULER", "WORKLOAD", "REPLICAS"),
                    help="profile one cell in this process (with --requests) and print its hot spots")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error(f"--repeat must be at least 1 (got {args.repeat})")
    if args.profile:
        sched, workload, replicas = args.profile
        return profile_cell(*cell_overrides(sched, workload, int(replicas), args.requests))
    if args.cell:
        sched, workload, replicas, requests = args.cell
        print(json.dumps(run_cell(sched, workload, int(replicas), int(requests), args.warmup, args.repeat)))
        return
    from servesim.replica.schedulers import available

    schedulers = pick(args.schedulers, available(), "scheduler")
    workloads = pick(args.workloads, list(WORKLOADS), "workload")
    replicas = [int(r) for r in pick(args.replicas, [str(r) for r in REPLICAS], "replica count")]
    requests, timeout_s = (500, 60.0) if args.quick else (args.requests, args.timeout)
    setup = (f"{requests:,} requests per cell, best of {args.repeat} " + (
        f"after a warm-up run of {args.warmup:,}" if args.warmup else "in a cold process") + f", timeout {timeout_s:g} s")
    print(f"{setup}\n\n{HEADER}", flush=True)
    rows = []
    for sched in schedulers:
        for workload in workloads:
            for n in replicas:
                rows.append(row(sched, workload, n, spawn_cell(sched, workload, n, requests, timeout_s, args.warmup, args.repeat)))
                print(rows[-1], flush=True)
    if args.docs:
        write_docs(f"{setup}.\n\n{HEADER}\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
