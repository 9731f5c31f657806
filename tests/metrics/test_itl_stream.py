"""Inter-token gaps joined as the run goes (metrics/itl_stream.py) give itl.py's figures."""

from __future__ import annotations

import numpy as np

from servesim.metrics.itl import itl_stats, values_stats
from servesim.metrics.itl_stream import ITLStream
from servesim.metrics.step_ends import StepEnds


def _requests(rng, num_steps: int, n: int) -> list[list[int]]:
    """`n` requests' token runs on one replica (flat start/end pairs, some with two or three
    runs: preempted or skipped steps between them)."""
    out = []
    for _ in range(n):
        a = int(rng.integers(0, num_steps - 1))
        steps = []
        for _ in range(int(rng.integers(1, 4))):
            b = min(num_steps - 1, a + int(rng.integers(0, 40)))
            steps += [a, b]
            a = b + 1 + int(rng.integers(1, 30))
            if a >= num_steps:
                break
        out.append(steps)
    return out


def test_gaps_joined_in_pieces_are_the_gaps_after_the_run():
    rng = np.random.default_rng(7)
    sizes = (3000, 1700)
    ends = [np.cumsum(rng.choice([0.01, 0.02, 0.013, 0.5], size=n)) for n in sizes]
    ends[1][900] = np.inf  # (a gap that is not finite is left out, as itl.py does)
    reqs = [(r, steps) for r, n in enumerate(sizes) for steps in _requests(rng, n, 400)]
    # runs arrive in the order their requests end (their last step), as the run goes
    reqs.sort(key=lambda e: (e[1][-1], e[0]))
    stream = ITLStream(2)
    sent_ends, sent = [0, 0], 0
    for now in range(0, 3100, 97):  # every 97 steps: new step ends, the runs that ended, watermarks
        for r in range(2):
            upto = min(now, sizes[r])
            stream.add_ends(r, ends[r][sent_ends[r]:upto])
            sent_ends[r] = upto
        done = [e for e in reqs[sent:] if e[1][-1] < now]
        sent += len(done)
        if done:
            steps = [s for _, s in done]
            counts = np.array([len(s) // 2 for s in steps])
            replicas = np.repeat([r for r, _ in done], counts)
            stream.add_runs(np.concatenate(steps).astype(np.int64), replicas, counts)
        live = reqs[sent:]
        stream.advance([min([now] + [s[0] for q, s in live if q == r]) for r in range(2)])
    for r in range(2):
        stream.add_ends(r, ends[r][sent_ends[r]:])
    assert sent == len(reqs) and stream.valid
    stream.advance(None)
    # after the run: the replicas' logs one after another, the runs indexing them, by request
    offsets = [0, sizes[0]]
    counts = np.array([len(s) // 2 for _, s in reqs])
    bounds = np.concatenate([np.array(s) + offsets[r] for r, s in reqs])
    runs = (counts, bounds[0::2], bounds[1::2])
    want = itl_stats(lambda: iter([runs]), StepEnds(ends))
    assert values_stats(stream.values) == want
    # (the longest gap spans several steps: one between two runs of a request)
    assert want["max"] > 0.5 and stream.values.num_pairs > 3000


def test_a_run_below_a_finished_gap_marks_the_stream_invalid():
    stream = ITLStream(1)
    stream.add_ends(0, np.arange(10.0))
    stream.add_runs(np.array([0, 5]), np.array([0]), np.array([1]))
    stream.advance([6])  # gaps 0-5 final: no run still to come starts below step 6
    assert stream.valid and stream.values.total_weight == 5
    stream.add_runs(np.array([4, 8]), np.array([0]), np.array([1]))  # (it would count at gaps 4 and 5)
    assert not stream.valid


def test_a_watermark_held_back_then_released_gives_the_same_gaps():
    # one request lives through 5,000 steps: the gaps wait in the window (it grows past its
    # first 1,024 values and moves to its front as they go) until its runs come
    ends = np.cumsum(np.resize([0.01, 0.03, 0.02], 5000))
    long_runs, short = [0, 2000, 2100, 4999], [[10, 20], [3000, 3500]]
    stream = ITLStream(1)
    for k in range(0, 5000, 300):
        stream.add_ends(0, ends[k:k + 300])
        stream.advance([0])  # (held by the long request's first step)
        if k == 3600:
            stream.add_runs(np.array(short[0] + short[1]), np.array([0, 0]), np.array([1, 1]))
    assert stream.values.total_weight == 0
    stream.add_runs(np.array(long_runs), np.array([0, 0]), np.array([2]))
    stream.advance(None)
    runs = (np.array([1, 1, 2]), np.array([10, 3000, 0, 2100]), np.array([20, 3500, 2000, 4999]))
    want = itl_stats(lambda: iter([runs]), StepEnds([ends]))
    assert values_stats(stream.values) == want and stream.values.total_weight == 10 + 500 + 2000 + 2899 + 1


def test_bounds_counted_per_step_answer_as_the_sorted_ones():
    from servesim.metrics.itl import SortedBounds

    rng = np.random.default_rng(3)
    bounds = rng.integers(0, 500, 300)
    counted, sorted_ = SortedBounds(bounds, 500), SortedBounds(bounds, 5000)  # (5000 steps: too many to count)
    assert counted.upto_step is not None and sorted_.sorted is not None
    for lo, hi in [(0, 500), (0, 7), (123, 321), (499, 500)]:
        expected = np.array([(bounds <= i).sum() for i in range(lo, hi)])
        assert counted.upto(0, lo, hi).tolist() == sorted_.upto(0, lo, hi).tolist() == expected.tolist()


def test_open_runs_from_sorted_bounds_count_start_le_step_lt_stop():
    from servesim.metrics.itl import SortedBounds, _open_runs

    rng = np.random.default_rng(5)
    starts = rng.integers(0, 4000, 200)
    stops = starts + rng.integers(0, 300, 200)
    for num_steps in (4400, 100_000):  # (counted per step, and sorted: too many steps to count)
        a, b = SortedBounds(starts, num_steps), SortedBounds(stops, num_steps)
        for lo, hi in [(0, 4400), (17, 18), (1000, 3333)]:
            want = [int(((starts <= i) & (i < stops)).sum()) for i in range(lo, hi)]
            assert _open_runs(a, b, 0, lo, hi).tolist() == want


def test_ranges_read_as_slices_or_by_index_from_arrays_and_files(tmp_path):
    from servesim.metrics.step_ends import read_ranges
    from servesim.metrics.step_log import positions

    rng = np.random.default_rng(9)
    logs = [np.cumsum(rng.exponential(0.02, n)) for n in (700, 1, 5000)]
    path = tmp_path / "log.f8"
    logs[2].tofile(path)
    ends = StepEnds([logs[0], logs[1], (str(path), len(logs[2]))])
    whole = np.concatenate(logs)
    firsts = [0, 700, 701]
    for long in (False, True):  # (a few values a range: gathered by index; hundreds: sliced)
        lens = rng.integers(100, 600, 30) if long else rng.integers(1, 4, 30)
        seg = rng.integers(0, 3, 30)
        seg[seg == 1] = 0 if long else 1  # (the one-step log holds short ranges only)
        size = np.array([700, 1, 5000])[seg]
        lens = np.minimum(lens, size)
        starts = np.array(firsts)[seg] + rng.integers(0, size - lens + 1)
        want = whole[positions(starts, lens)]
        assert read_ranges(ends, starts, lens).tolist() == want.tolist()
        assert read_ranges(whole, starts, lens).tolist() == want.tolist()
    one = StepEnds([(str(path), len(logs[2]))])  # (one segment: read without finding segments)
    idx = rng.integers(0, 5000, 50)
    assert one[idx].tolist() == logs[2][idx].tolist()
