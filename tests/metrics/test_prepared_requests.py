"""The requests file made by a forked process while the summary is (output.prepare_requests):
the bytes `write_run` writes itself, made by the child, not by this process; a child that
fails leaves the file to `write_run`."""

from __future__ import annotations

import os

import pytest

import servesim.output as output
from servesim import load_scenario, simulate
from servesim.metrics import step_helper
from servesim.output import prepare_requests, write_run

pytestmark = pytest.mark.skipif(not step_helper.helper_wanted(), reason="no fork or a single core")


def _result(fmt: str = "csv", keep_requests: bool = False):
    # a crash re-routes requests (cluster columns, re-routes); tenants with a comma and a quote
    sets = ["workload.trace=null", "workload.num_requests=400", "workload.arrival.rate_per_s=8", "replicas=2",
            "router.name=least-requests", "faults.crashes=[{replica: 1, at_s: 10, recovery_s: 5}]",
            f"output.requests_format={fmt}", "workload.attributes.tenants={'a,b': 1, 'q\"t': 2}"]
    return simulate(load_scenario(None, sets), keep_requests=keep_requests)


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "summary.json"}


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_the_forked_requests_file_is_the_one_write_run_writes(monkeypatch, tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    here = _result(fmt)
    write_run(here, tmp_path / "here", here.summary())
    there = _result(fmt)
    me, calls = os.getpid(), []
    real = output._write_requests
    monkeypatch.setattr(output, "_write_requests", lambda r, p: (calls.append(os.getpid() == me), real(r, p)))
    assert prepare_requests(there) is True
    write_run(there, tmp_path / "there", there.summary())
    assert calls == []  # (not written in this process: the child's call is counted in its own copy)
    files = _files(tmp_path / "there")
    assert files == _files(tmp_path / "here") and f"requests.{fmt}" in files
    assert there.table.cols["num_reroutes"].any() and (fmt == "parquet" or b'"a,b"' in files["requests.csv"])
    write_run(there, tmp_path / "again", there.summary())  # (once taken, written here again)
    assert calls == [True] and _files(tmp_path / "again") == files


def test_a_failed_child_leaves_the_file_to_write_run(monkeypatch, tmp_path):
    here = _result()
    write_run(here, tmp_path / "here", here.summary())
    there = _result()
    me, real = os.getpid(), output._write_requests

    def write(r, p):
        if os.getpid() != me:
            raise OSError("the child fails")
        real(r, p)

    monkeypatch.setattr(output, "_write_requests", write)
    assert prepare_requests(there) is True
    write_run(there, tmp_path / "there", there.summary())
    assert _files(tmp_path / "there") == _files(tmp_path / "here")


def test_rows_in_memory_are_not_forked():
    assert prepare_requests(_result(keep_requests=True)) is False  # (nothing spilled: write_run writes them)
