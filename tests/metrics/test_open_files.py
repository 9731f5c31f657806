"""A run keeps no file open per replica: a cluster larger than the open-files limit allows
(Linux's default soft limit is 1,024) runs through `servesim run`, which spools each replica's
step ends and time-series partials to files."""

from __future__ import annotations

import resource
import subprocess
import sys


def test_a_cluster_of_many_replicas_runs_under_a_low_open_files_limit(tmp_path):
    limit = 160  # five spool files a replica held open: 60 replicas would need 300

    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "servesim", "run", "--set", "replicas=60", "--set", "router.name=least-requests",
         "--set", "workload.trace.end_s=30", "--out", str(out)],
        capture_output=True, text=True, preexec_fn=lower, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pool default: 60 replicas" in proc.stdout
    assert (out / "summary.json").is_file() and (out / "timeseries.csv").is_file()
