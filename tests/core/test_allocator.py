"""glibc's allocator keeps the pages a run frees for its next arrays (core/allocator.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from servesim.core import allocator

GLIBC = hasattr(os, "confstr") and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")

# Four 1 MB arrays at a time, freed together, 40 times: with glibc's own limits the freed heap
# top (4 MB) is above its trim threshold (twice the largest block freed so far), so every round
# maps fresh pages; with `keep_freed_memory` the same pages come back.
_CHURN = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from servesim.core.allocator import keep_freed_memory
    assert keep_freed_memory()
for _ in range(3):
    arrays = [np.ones(1 << 17) for _ in range(4)]
    del arrays
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    arrays = [np.ones(1 << 17) for _ in range(4)]
    del arrays
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, env=env, check=True)
    return int(done.stdout.strip())


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_freed_pages_are_reused():
    plain, kept = _faults("plain"), _faults("keep")
    assert plain >= 40 * 4 * 200  # (each round faulted its 4 MB in again: 1,024 pages)
    assert kept < 100


def test_left_alone_where_the_process_has_its_own_settings(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert allocator.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    assert allocator.keep_freed_memory() is False


def test_left_alone_without_glibc(monkeypatch):
    monkeypatch.setattr(allocator.os, "confstr", lambda name: None)  # (musl answers nothing)
    assert allocator.keep_freed_memory() is False
