"""The step log reduced as it comes: same results as the whole log, memory that plateaus.

Asserted by comparing outputs byte for byte and by the size of the structures held, never by
timing."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest

from servesim import load_scenario, simulate
from servesim.metrics.exact import ExactSum, WeightedValues, exact_sum
from servesim.metrics import series_parts
from servesim.metrics.recorder import Recorder
from servesim.metrics.summary import weighted_percentiles

POISSON = ["workload.trace=null", "workload.arrival.process=poisson", "workload.lengths.dataset=sharegpt",
           "workload.arrival.rate_per_s=20", "output.timeseries_interval_s=100"]


def _outputs(result) -> tuple[str, dict]:
    s = result.summary()
    s.pop("wall_time_s")
    return json.dumps(s, sort_keys=True), {k: v.tolist() for k, v in result.timeseries().items()}


@pytest.mark.parametrize("sets", [
    ["workload.num_requests=1500", "workload.trace=null", "workload.arrival.process=poisson",
     "workload.arrival.rate_per_s=30", "workload.lengths.dataset=sharegpt"],
    # preemptions (token runs with gaps between them), several replicas, two tenants (fairness section)
    ["replicas=3", "workload.trace.speedup=6", "workload.trace.end_s=120", "engine.gpu_memory_utilization=0.3",
     "workload.attributes.tenants={a: 1, b: 1}"],
])
def test_reduced_as_it_came_equals_the_whole_log(sets, monkeypatch):
    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 1000)  # many chunks
    monkeypatch.setattr(WeightedValues, "memory_pairs", 2000)  # ITL gaps spilled to a file
    path = None if "workload.trace=null" in sets else "examples/azure-conv.yaml"
    streamed = simulate(load_scenario(path, sets), keep_requests=False)
    whole = simulate(load_scenario(path, sets), keep_requests=True, keep_steps=True)
    assert streamed.steps is None and len(whole.steps) > 4000
    assert _outputs(streamed) == _outputs(whole)


@pytest.mark.parametrize("sets", [
    ["autoscaler.name=kpa", "autoscaler.max_replicas=3", "autoscaler.interval_s=2"],
    ["replicas=2", "power.row_power_budget_w=1400"],
    ["pools=[{name: p, role: prefill, replicas: 1}, {name: d, role: decode, replicas: 2}]"],
])
def test_energy_power_and_busy_shares_read_the_steps_times_alone(sets, monkeypatch):
    """An autoscaler, a power section or prefill/decode pools keep each step's times and prompt
    tokens (`StepTimes`), not the whole log: the same summary and series as with the whole log."""
    from servesim.metrics.step_log import StepTimes

    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 1000)  # many buffers, each expanded on its own
    sets = POISSON + ["workload.num_requests=800", "workload.arrival.rate_per_s=8", *sets]
    streamed = simulate(load_scenario(None, sets), keep_requests=False)
    whole = simulate(load_scenario(None, sets), keep_requests=True, keep_steps=True)
    assert streamed.steps is None and all(type(r.steps) is StepTimes for r in streamed.replicas)
    assert sum(map(len, (r.steps for r in streamed.replicas))) == len(whole.steps) > 4000
    assert _outputs(streamed) == _outputs(whole)


def test_step_ends_and_row_files_are_deleted_with_the_result(monkeypatch):
    one_chunk = simulate(load_scenario(None, POISSON + ["workload.num_requests=300"]), keep_requests=False)
    held = one_chunk.replicas[0].stats
    assert held.held_ends is not None and len(held.held_ends) == one_chunk.summary()["num_steps"]
    assert not any(p.name.startswith("ends-") for p in Path(one_chunk.spill.name).iterdir())  # (one chunk: held)
    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 100)  # several chunks: held while the run's budget lasts
    held_all = simulate(load_scenario(None, POISSON + ["workload.num_requests=300"]), keep_requests=False)
    assert held_all.replicas[0].stats.held_ends is not None  # (no file: in memory, as one chunk's)
    assert not any(p.name.startswith("ends-") for p in Path(held_all.spill.name).iterdir())
    assert _outputs(held_all) == _outputs(one_chunk)
    monkeypatch.setattr(series_parts, "HELD_BYTES", 0)  # none beyond the first chunk: the ends and partials go to files
    result = simulate(load_scenario(None, POISSON + ["workload.num_requests=300"]), keep_requests=False)
    assert json.dumps(result.summary() | {"wall_time_s": 0}) == json.dumps(one_chunk.summary() | {"wall_time_s": 0})
    folder = Path(result.spill.name)
    # the step ends and the time-series partials, one file per request column in arrival order and
    # the token runs' files (the rows' chunk file is gone)
    from servesim.metrics.row_spill import RUN_FILES
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["ends-0.f8", "ends-0.ranges", "ends-0.tokens", "ends-0.marks", *RUN_FILES.values()]
        + [f"col-{name}.bin" for name in result.table.cols])
    assert folder.joinpath("col-arrival_s.bin").stat().st_size == 8 * 300
    assert folder.joinpath("ends-0.f8").stat().st_size == 8 * result.summary()["num_steps"]
    del result
    gc.collect()
    assert not folder.exists()


def _held_bytes(num_requests: int) -> tuple[int, int]:
    """(steps, bytes the step-log structures hold at the end) of a streamed Poisson run."""
    result = simulate(load_scenario(None, POISSON + [f"workload.num_requests={num_requests}"]), keep_requests=False)
    stats = result.replicas[0].stats
    return stats.num_steps, stats.nbytes()


def test_step_log_memory_plateaus(monkeypatch):
    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 1000)  # several reductions per run
    monkeypatch.setattr(series_parts, "HELD_BYTES", 0)  # (nothing held beyond a first chunk: files)
    steps, held = _held_bytes(1000)
    steps4, held4 = _held_bytes(4000)
    assert steps4 > 3 * steps
    # what stays grows with time-series intervals (here 100 s each), not steps: a 4x longer run
    # holds a few more intervals, far below 4x and below a byte per step
    assert held4 < held + 8_000 and held4 < steps4


def test_exact_sum_does_not_depend_on_order_or_chunking():
    rng = np.random.default_rng(0)
    x = rng.exponential(0.02, 10_000) * rng.choice([1e-6, 1.0, 1e6], 10_000)
    a, b = ExactSum(), ExactSum()
    a.add(x)
    for part in np.array_split(x[::-1], 7):
        b.add(part)
    assert a.value() == b.value() == pytest.approx(float(np.sum(x)), rel=1e-12)
    import math
    assert a.value() == math.fsum(x.tolist())  # correctly rounded


def test_exact_sum_is_the_rounded_exact_sum_over_every_exponent_and_sign():
    from fractions import Fraction
    rng = np.random.default_rng(3)
    x = rng.standard_normal(5_000) * np.exp2(rng.integers(-1074, 1000, 5_000))  # both signs, any binade
    x[::9] = 0.0
    x[::13] = -0.0
    x[::17] = 5e-324 * rng.integers(1, 1 << 52, len(x[::17]))  # subnormals
    x[::19] = 2.0 ** 52 + 1.0  # many equal values with a full mantissa: a bin's units add up
    exact = float(sum(map(Fraction, x.tolist()), Fraction(0)))
    s = ExactSum()
    for part in np.array_split(x, 4):
        s.add(part)
    assert s.value() == exact
    assert exact_sum(np.full(300_000, 0.1)) == float(300_000 * Fraction(0.1))  # more than one bincount chunk


def test_exact_sum_pickles_its_used_bins_and_goes_on_exactly():
    import pickle
    rng = np.random.default_rng(5)
    x = rng.standard_normal(4_000) * np.exp2(rng.integers(-60, 60, 4_000))  # both signs, 120 binades
    s = ExactSum()
    s.add(x[:3_000])
    data = pickle.dumps(s)
    assert len(data) < 10_000 < len(pickle.dumps((s._hi, s._lo)))  # (about 240 bins of the span's 2,170 used)
    t = pickle.loads(data)
    assert all(np.array_equal(a, b) for a, b in zip(t.__getstate__(), s.__getstate__()))
    s.add(x[3_000:])
    t.add(x[3_000:])  # (the restored bins take more values as the original's do)
    assert t.value() == s.value() == exact_sum(x)
    assert pickle.loads(pickle.dumps(ExactSum())).value() == 0.0


def test_exact_sum_holds_only_the_bins_its_values_reach():
    # (all 4,096 bins were 64 kB a sum: a reducer's dozen sums, 250 MB for 1,000 replicas)
    s = ExactSum()
    assert s._hi.nbytes == 0 and s.value() == 0.0
    s.add(np.array([0.5, 0.75]))
    s.add(np.array([3.0, 1e-3]))  # a higher binade and a lower one widen the span
    assert len(s._hi) == 12 and s.value() == 0.5 + 0.75 + 3.0 + 1e-3


def weighted_values(v: np.ndarray, w: np.ndarray, parts: int) -> WeightedValues:
    """The pairs (v, w) added to a `WeightedValues` in `parts` chunks, as a run adds them."""
    values = WeightedValues()
    for part_v, part_w in zip(np.array_split(v, parts), np.array_split(w, parts)):
        values.add(part_v, part_w)
    return values


def test_spilled_percentiles_are_numpy_percentiles(monkeypatch):
    monkeypatch.setattr(WeightedValues, "memory_pairs", 500)
    rng = np.random.default_rng(1)
    v = np.round(rng.exponential(0.03, 20_000), 4)  # many ties
    w = rng.integers(1, 9, len(v))
    values = weighted_values(v, w, 13)
    qs = (0, 1, 50, 90, 99, 100)
    assert values._file is not None
    assert values.percentiles(qs) == weighted_percentiles(v, w.copy(), qs)
    assert values.percentiles(qs) == np.percentile(np.repeat(v, w), qs).tolist()
    assert values.max == v.max() and values.total_weight == w.sum()
    values.close()


@pytest.mark.parametrize("kind", ["spread", "ties", "one value", "a few pairs"])
def test_in_memory_percentiles_sort_only_the_ranks_buckets(monkeypatch, kind):
    """Pairs held in memory (a run's inter-token gaps: about 90,000 at 4,000 requests) are
    bucketed by one histogram pass and only the pairs in the wanted ranks' buckets are sorted:
    numpy's percentiles, for values spread over binades, heavy ties (a speculative run's
    repeated step times), all equal, or few."""
    rng = np.random.default_rng(3)
    n = 30_000 if kind != "a few pairs" else 40
    if kind == "spread":
        v = rng.exponential(0.02, n) * rng.choice([1e-6, 1.0, 1e3], n)
    elif kind == "ties":
        v = np.where(rng.random(n) < 0.7, 0.0125, np.round(rng.exponential(0.02, n), 3))
    else:
        v = np.full(n, 0.04) if kind == "one value" else rng.exponential(0.02, n)
    w = rng.integers(1, 6, n)
    values = weighted_values(v, w, 5)
    sorted_sizes = []
    argsort = np.argsort
    monkeypatch.setattr(np, "argsort", lambda a, *args, **kw: (sorted_sizes.append(len(a)), argsort(a, *args, **kw))[1])
    qs = (0, 1, 50, 90, 99, 100)
    assert values._file is None
    assert values.percentiles(qs) == np.percentile(np.repeat(v, w), qs).tolist()
    (size,) = sorted_sizes
    if kind == "spread":
        assert size < n // 20  # (the ranks' buckets only)
    values.close()


@pytest.mark.parametrize("kind", ["one octave", "all equal", "zeros and spread", "few bits differ"])
def test_spilled_percentiles_of_narrow_or_equal_values(monkeypatch, kind):
    """The first histogram starts below the bits all values share: values in one octave,
    all equal, from 0 up, or differing only in their last bits give numpy's percentiles."""
    monkeypatch.setattr(WeightedValues, "memory_pairs", 300)
    rng = np.random.default_rng(7)
    n = 5_000
    v = {"one octave": 0.02 + 0.01 * rng.random(n), "all equal": np.full(n, 0.013),
         "zeros and spread": np.where(rng.random(n) < 0.3, 0.0, rng.exponential(0.03, n)),
         "few bits differ": 0.0125 + 2.0 ** -60 * rng.integers(0, 40, n)}[kind]
    w = rng.integers(1, 4, n)
    values = WeightedValues()
    for part_v, part_w in zip(np.array_split(v, 7), np.array_split(w, 7)):
        values.add(part_v, part_w)
    qs = (0, 10, 50, 90, 99, 100)
    assert values._file is not None
    assert values.percentiles(qs) == np.percentile(np.repeat(v, w), qs).tolist()
    values.close()


@pytest.mark.parametrize("order", ["as drawn", "largest first", "smallest first"])
def test_spilled_percentiles_start_from_the_kept_histogram(monkeypatch, order):
    """Once pairs spill, their histogram by the top 24 bits is kept as they come (its span
    grown down and up as chunks arrive), so the search reads the pairs once (the last pass)
    instead of twice; the percentiles are numpy's. Values spread over too many prefixes (zeros
    among them) drop the histogram and take the first pass as before."""
    monkeypatch.setattr(WeightedValues, "memory_pairs", 2000)
    rng = np.random.default_rng(11)
    v = np.concatenate([0.007 + 0.0005 * rng.random(15_000), 0.05 * rng.random(5_000) + 0.01])
    if order != "as drawn":
        v = np.sort(v)[::-1] if order == "largest first" else np.sort(v)
    w = rng.integers(1, 9, len(v))
    passes = []
    chunks = WeightedValues._chunks
    monkeypatch.setattr(WeightedValues, "_chunks", lambda self: passes.append(1) or chunks(self))
    qs = (0, 1, 50, 90, 99, 100)
    expected = np.percentile(np.repeat(v, w), qs).tolist()
    for spread in (False, True):
        x = np.where(np.arange(len(v)) % 97 == 0, 0.0, v) if spread else v
        values = WeightedValues()
        for part_v, part_w in zip(np.array_split(x, 17), np.array_split(w, 17)):
            values.add(part_v, part_w)
        passes.clear()
        assert values.percentiles(qs) == np.percentile(np.repeat(x, w), qs).tolist()
        if spread:
            assert values._coarse is None and len(passes) == 2
        else:
            assert values._coarse is not None and values.percentiles(qs) == expected
            assert len(passes) == 2  # (one read for each of the two calls)
        values.close()


def test_floor_div_is_numpy_floor_division():
    from servesim.metrics.step_reduce import floor_div
    rng = np.random.default_rng(4)
    for interval in (1.0, 0.1, 0.3, 60.0, 7.7, 1e-3):
        edges = np.arange(4000) * interval
        t = np.concatenate([rng.uniform(0, 4000, 20_000), edges, np.nextafter(edges, 0), np.nextafter(edges, np.inf)])
        expected = (t // interval).astype(np.int64)
        assert np.array_equal(floor_div(t, interval), expected)
    # where the rounded quotient is a whole number it is not always the floor: the slow path is needed
    t = np.arange(4000) * 0.1
    assert (np.floor(t / 0.1) != t // 0.1).sum() > 1000


def test_unique_sorted_is_numpy_unique():
    from servesim.metrics.step_reduce import unique_sorted
    rng = np.random.default_rng(5)
    for x in (np.sort(rng.integers(0, 50, 1000)), rng.integers(0, 50, 1000), np.array([3]), np.array([1, 1, 1])):
        at, inverse = unique_sorted(x)
        expected_at, expected_inverse = np.unique(x, return_inverse=True)
        assert np.array_equal(at, expected_at) and np.array_equal(inverse, expected_inverse)
        assert inverse.dtype == expected_inverse.dtype


def _steps(rng, n: int, interval: float):
    """Step starts and ends of stretches (each step starts when the one before ends) with
    idle gaps between them, some ends on interval edges."""
    busy = rng.uniform(0.001, 0.05, n)
    gap = np.where(rng.random(n) < 0.05, rng.uniform(0, 3 * interval, n), 0.0)
    end = np.cumsum(busy + gap)
    end[::97] = np.round(end[::97] / interval) * interval  # (on an edge)
    end = np.maximum.accumulate(end)
    start = np.concatenate(([0.0], end[:-1]))
    start[gap > 0] = (end - busy)[gap > 0]
    start = np.minimum(start, end)
    return start, end


def test_start_intervals_are_the_floor_division_of_the_starts():
    from servesim.metrics.step_reduce import floor_div, start_intervals
    rng = np.random.default_rng(6)
    for interval in (1.0, 0.1, 0.3):
        start, end = _steps(rng, 5000, interval)
        shared = (start[1:] == end[:-1]).mean()
        assert 0.5 < shared < 1.0  # both paths ran: starts taken from the previous end, and divided
        got = start_intervals(start, end, floor_div(end, interval), interval)
        assert np.array_equal(got, (start // interval).astype(np.int64))


def test_tokens_by_interval_are_the_weighted_bincounts_over_unique_intervals():
    from servesim.metrics.step_reduce import floor_div, tokens_by_interval
    rng = np.random.default_rng(7)
    for interval, ordered in ((1.0, True), (0.3, True), (1.0, False)):
        start, end = _steps(rng, 5000, interval)
        k = floor_div(end, interval)
        if not ordered:
            k = rng.permutation(k)  # (the sorting path)
        prefill = np.where(rng.random(5000) < 0.02, rng.integers(1, 9000, 5000), 0).astype(np.int32)
        output = rng.integers(0, 300, 5000).astype(np.int32)
        at, inverse = np.unique(k, return_inverse=True)
        got = tokens_by_interval(k, prefill, output)
        expected = (at, np.bincount(inverse, weights=prefill), np.bincount(inverse, weights=output))
        for g, e in zip(got, expected):
            assert g.dtype == e.dtype and g.tobytes() == e.tobytes()
    no_prompt = tokens_by_interval(np.array([0, 0, 2]), np.zeros(3, dtype=np.int32), np.ones(3, dtype=np.int32))
    assert [a.tolist() for a in no_prompt] == [[0, 2], [0.0, 0.0], [2.0, 1.0]]


def test_a_runs_held_bytes_run_out_midway_with_the_same_outputs(monkeypatch):
    """The replicas' step ends and partials share one budget of held bytes (`HeldBytes`): those
    that find it spent go to files, the others stay in memory, and the outputs are the same as
    with everything in files or everything held."""
    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 200)  # (about 11 chunks a replica, 1.6 kB of ends each)
    sets = POISSON + ["workload.num_requests=600", "replicas=3", "router.name=round-robin"]
    outs, held = [], []
    for budget in (0, 30_000, 1 << 30):
        monkeypatch.setattr(series_parts, "HELD_BYTES", budget)
        result = simulate(load_scenario(None, sets), keep_requests=False)
        outs.append(_outputs(result))
        held.append(sum(r.stats.held_ends is not None for r in result.replicas))
        files = [p for p in Path(result.spill.name).iterdir() if p.name.startswith("ends-") and p.suffix == ".f8"]
        assert len(files) == 3 - held[-1]  # (a replica's ends: in memory or in its file)
    assert held == [0, 2, 3]  # (30 kB: the first replica's ends spill, the budget lasts for the others')
    assert outs[0] == outs[1] == outs[2]
