"""A prompt-only step inside an admission stretch (`AdmitStretch.stall`) leaves every request's
growth in `growth`'s frame (the steps that are not stalls): the departures read it there and the
apply maps it back to the stretch's steps (`stretch_stalls.frame_growth`). Checked against
stepping (every request's tokens, token steps, times, computed tokens and the whole step log,
KV blocks in use included) where stalls come at the stretch's first boundary, mid-stretch,
several in a row, and just before the stretch ends."""

from __future__ import annotations

from collections import Counter

import pytest

from servesim.replica.admission_stretch import AdmitStretch
from servesim.replica.stretch_stalls import frame_growth
from tests.factories import ToyPerf
from tests.replica.test_admission_stretch import fast_and_stepped, llama  # noqa: F401 (a fixture)

# (seed, blocks, params, perf): overloads where vllm-v0's finishes admit as prompt-only steps,
# among them every place a stall can take in its stretch (see the counts asserted below)
CASES = [(1, 1000, {}, "llama"), (3, 300, {}, "llama"), (4, 200, {}, "toy"), (3, 300, {"preemption_mode": "swap"}, "toy"),
         (1, 1000, {"max_num_seqs": 8}, "toy"), (3, 300, {"watermark": 0.2}, "llama")]


@pytest.fixture
def seen(monkeypatch):
    """Counts of where each stall fell in its stretch, and of stretches applied right after one."""
    counts = Counter()
    stall, apply = AdmitStretch.stall, AdmitStretch.apply

    def counted_stall(st, *args):
        s, before = st.k, st.stall_steps
        counts["stall"] += 1
        counts["in growth's frame"] += st.growth is not None
        counts["first boundary"] += s == 1
        counts["in a row"] += bool(before) and s == before[-1] + 1
        counts["mid-stretch"] += bool(before) and s > before[-1] + 1
        return stall(st, *args)

    def counted_apply(st, engine):
        counts["ends right after a stall"] += bool(st.stall_steps) and st.k == st.stall_steps[-1] + 1
        return apply(st, engine)

    monkeypatch.setattr(AdmitStretch, "stall", counted_stall)
    monkeypatch.setattr(AdmitStretch, "apply", counted_apply)
    return counts


def run_cases(llama) -> None:
    """`CASES` fast-forwarded and stepped, checked to give the same runs."""
    for seed, num_blocks, params, perf in CASES:
        fast_and_stepped(seed, num_blocks, ToyPerf() if perf == "toy" else llama, "vllm-v0", params)


def test_stalls_in_growths_frame_match_stepping(seen, llama):
    run_cases(llama)
    print(dict(seen))
    assert seen["stall"] > 500 and seen["in growth's frame"] == seen["stall"]  # (the O(1) stall ran, every time)
    assert seen["first boundary"] >= 10 and seen["mid-stretch"] >= 100
    assert seen["in a row"] >= 2 and seen["ends right after a stall"] >= 3


def test_frame_growth_maps_each_block_past_the_stalls():
    # blocks of 4 steps; stalls at steps 3, 7 and 8 (the frame's steps 0-2, 3-5, 6... are the
    # stretch's 0-2, 4-6, 9...). Request 0 runs 11 steps (8 in the frame) from the frame's step 1:
    # blocks at its steps 1 and 5, the stretch's 1 and 6; request 1 runs 12 (9) from the frame's
    # step 6: one block, at the stretch's step 9, past the three stalls
    steps, runs = frame_growth([1, 6], [11, 12], [3, 7, 8], 4)
    assert steps.tolist() == [1, 6, 9] and runs.tolist() == [2, 7, 10]
