"""Start-up cost of the command line: CPU milliseconds of a fresh process, best of N.

    python benchmarks/bench_startup.py [--repeat 5]

CPU time of the child (user + system, from getrusage of children), not wall time, so the
numbers mean something on a shared machine. Commands: `import servesim`, `servesim --help`,
`servesim run --help` (builds the scenario-key listing) and `servesim run` of a 20-request
scenario (imports the simulation, simulates, writes the run folder).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile

COMMANDS = {
    "python -c 'import servesim'": ["-c", "import servesim"],
    "servesim --help": ["-m", "servesim", "--help"],
    "servesim run --help": ["-m", "servesim", "run", "--help"],
    "servesim run (20 requests)": ["-m", "servesim", "run", "--set", "workload.num_requests=20", "-q", "--out", "{out}"],
}


def child_cpu_ms(args: list[str]) -> float:
    """CPU ms of one fresh interpreter running `args`; fails loudly if the command fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, *args], check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return 1000 * (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for label, cmd in COMMANDS.items():
            cmd = [a.replace("{out}", f"{tmp}/run") for a in cmd]
            best = min(child_cpu_ms(cmd) for _ in range(args.repeat))
            print(f"{label:32s} {best:7.0f} ms CPU (best of {args.repeat})", flush=True)


if __name__ == "__main__":
    main()
