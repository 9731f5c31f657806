"""Stretch pricing: numpy chunks priced ahead of the horizon give exactly the floats of the
scalar loop (one perf-model call per step), through departures and extensions."""

from __future__ import annotations

import bisect

import numpy as np
import pytest

from servesim.perf.build import build_perf_model
from servesim.replica.fast_forward import DecodeFns, FastForwarding
from servesim.replica import stretch_chunks
from servesim.replica.stretch import Stretch


class _Forms(FastForwarding):
    """Just the engine's memoised decode forms."""

    def __init__(self, perf) -> None:
        self.perf = perf
        self.decode_fns = DecodeFns(perf)


class _Req:
    kv_block_keys = None


def _stretch(perf, forms, through: bool, first: int = 40) -> Stretch:
    n = 12
    ctx1 = [300 + 97 * i for i in range(n)]
    remaining = [first + 53 * i for i in range(n)]  # departures every 53 steps in `through` mode
    return Stretch(0.0, 0.02, None, [], [], [_Req() for _ in range(n)], ctx1, remaining, through,
                   lambda k: perf.decode_time_fn(k) or False, perf, 0, forms)


@pytest.mark.parametrize("segments", [0, 4, 100])  # chunks vectorised over steps, or run by run
@pytest.mark.parametrize("through", [True, False])
def test_numpy_chunks_match_the_scalar_loop_bit_for_bit(through, segments, monkeypatch):
    monkeypatch.setattr(stretch_chunks, "SEGMENTS", segments)
    chunks = []
    plain = Stretch._chunk
    monkeypatch.setattr(Stretch, "_chunk", lambda st, horizon: chunks.append(st) or plain(st, horizon))
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    first = 40 if through else 140  # (without departures `kmax` is the least remaining: over 64 for chunks)
    fast = _stretch(perf, _Forms(perf)._decode_forms, through, first)
    slow = _stretch(perf, lambda n: None, through, first)
    for horizon in (0.05, 0.9, 2.5, float("inf")):  # a first pricing, then extensions
        fast.price(horizon)
        slow.price(horizon)
        assert [float(t) for t in fast.ends] == [float(t) for t in slow.ends]
        assert fast.batch_sizes() == slow.batch_sizes()
    assert chunks and set(map(id, chunks)) == {id(fast)}  # numpy priced (the loop only ever prices step by step)
    assert len(fast.ends) == fast.k == (40 + 53 * 11 if through else first)
    sizes = fast.batch_sizes()
    assert len(sizes) == fast.k
    if through:  # one request leaves every 53 steps from step 40 on
        assert sizes[0] == sizes[39] == 12 and sizes[40] == 11 and sizes[-1] == 1
        assert sizes.count(11) == 53
    else:
        assert set(sizes) == {12}
    for j in (1, 39, 40, 41, 200):
        if j < fast.k:
            assert fast.tokens_before(j) == sum(sizes[:j])


@pytest.mark.parametrize("through", [True, False])
@pytest.mark.parametrize("horizon", [2.5, float("inf")])
def test_a_few_steps_to_a_step_cap_are_priced_by_the_scalar_loop(through, horizon, monkeypatch):
    """A policy's step cap (vtc's `max_wait_tokens` with a request waiting) leaves a few steps
    to `kmax` under a far horizon: the scalar loop prices them (numpy's fixed cost per chunk
    is more than theirs), with the chunks' floats; 65 steps left or more still go to a chunk."""
    chunks = []
    plain = Stretch._chunk
    monkeypatch.setattr(Stretch, "_chunk", lambda st, steps: chunks.append(st) or plain(st, steps))
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    forms = _Forms(perf)._decode_forms
    for cap in (10, 65):  # (step 0 is priced at the start: 9 and 64 steps left)
        capped = _stretch(perf, forms, through, 140)
        capped.kmax = cap
        capped.price(horizon)
        assert not chunks and capped.k == cap
        ahead = _stretch(perf, forms, through, 140)  # (uncapped: numpy chunks)
        ahead.price(horizon)
        assert chunks and [float(t) for t in capped.ends] == [float(t) for t in ahead.ends[:cap]]
        chunks.clear()
    over = _stretch(perf, forms, through, 140)
    over.kmax = 66
    over.price(horizon)
    assert chunks == [over] and over.k == 66


def test_a_cut_keeps_the_step_in_flight_and_drops_what_was_priced_ahead():
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    st = _stretch(perf, _Forms(perf)._decode_forms, True)
    st.price(0.5)
    t = (st.ends[9] + st.ends[10]) / 2  # during step 10
    assert st.cut(t)
    assert len(st.ends) == st.k == 11 and len(st.batch_sizes()) == 11 and st.final
    assert st._priced == 11  # steps priced ahead are forgotten
    assert not st.cut(t)  # nothing more to drop


@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("ctx0", [10, 368_500, 400_000, 2**45 + 7])  # below, across and above the CPU floor; huge
def test_one_run_gives_the_floats_of_the_run_by_run_path(overlap, ctx0):
    """`times_of_run` (a chunk nobody leaves) skips the CPU floor when its first step is above
    it; every step time must still be the general path's, bit for bit, and the floor must bind
    where it should."""
    base = np.array([0.0, 0.004, 0.0041, 0.0042])
    cpu = np.array([0.0, 0.009, 0.009, 0.009])
    forms = (base, cpu, 1.3e-8, overlap, None)  # (no table of one request's times)
    n, m = 3, 500
    fast, slow = np.empty(m), np.empty(m)
    stretch_chunks.times_of_run(fast, forms, n, ctx0)
    # the general path: step j0 = 5 of a batch of n with ctx sum ctx0 at that step, nobody leaving
    stretch_chunks.times_by_runs(slow, 5, forms, n, None, [0], ctx0 - 4 * n, 0, 0)
    assert fast.tobytes() == slow.tobytes()
    expected = [0.0042 + 1.3e-8 * (ctx0 + i * n) for i in range(m)]
    expected = [max(x, 0.009) if overlap else x + 0.009 for x in expected]
    assert fast.tolist() == expected  # the scalar form's floats
    if overlap and ctx0 == 10:
        assert fast[0] == 0.009  # the floor binds
    if overlap and ctx0 == 400_000:
        assert fast[0] > 0.009
    if overlap and ctx0 == 368_500:
        assert fast[0] == 0.009 < fast[-1]  # the floor binds for the first steps only


@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("n", [1, 2, 3])  # one request, two (the largest batch with a table), three (numpy calls)
@pytest.mark.parametrize("ctx0", [10, 68_430, 80_000])  # below, across and above the CPU floor
def test_small_batches_runs_come_from_the_forms_tables_bit_for_bit(overlap, n, ctx0):
    """A run of one or two requests is a strided slice of the forms' table of batch size n's
    step times by context sum (`RunTimes`), in a chunk nobody leaves and as the last run of
    one others left; three are priced by the numpy calls: the floats of the numpy calls on a
    plain tuple of the same forms, and the scalar form's."""
    base = np.array([0.0, 0.004, 0.00402, 0.00404, 0.00406, 0.00408])
    cpu = np.array([0.0, 0.0129, 0.0129, 0.0129, 0.0129, 0.0129])
    plain = (base, cpu, 1.3e-7, overlap, None)
    runs = stretch_chunks.RunTimes(base, cpu, 1.3e-7, overlap)
    forms = plain[:4] + (runs,)
    m = 600
    table, numpy_calls = np.empty(m), np.empty(m)
    stretch_chunks.times_of_run(table, forms, n, ctx0)
    stretch_chunks.times_of_run(numpy_calls, plain, n, ctx0)
    if n <= stretch_chunks.RunTimes.SMALL:
        assert len(runs._tables[n]) >= ctx0 + m * n  # (the table was used, grown to the context sum)
    assert table.tobytes() == numpy_calls.tobytes()
    expected = [base[n] + 1.3e-7 * (ctx0 + i * n) for i in range(m)]
    assert table.tolist() == [max(x, 0.0129) if overlap else x + 0.0129 for x in expected]
    if overlap and ctx0 == 68_430:
        assert table[0] == 0.0129 < table[-1] or n > 1  # the floor binds for the first steps only
    if overlap and ctx0 == 10:
        assert table[0] == 0.0129  # the floor binds
    # n + 1 requests from step 1, one leaving before step 200: the second run is n requests'
    rem, ctx1 = [200] + [900] * n, [ctx0] + [ctx0 // n + 50 + i for i in range(n)]
    prefix = [0, *np.cumsum([ctx1[0]] + ctx1[1:]).tolist()]
    by_table, by_calls = np.empty(m), np.empty(m)
    stretch_chunks.times_by_runs(by_table, 1, forms, n + 1, rem, prefix, sum(ctx1), 0, 1)
    stretch_chunks.times_by_runs(by_calls, 1, plain, n + 1, rem, prefix, sum(ctx1), 0, 1)
    assert by_table.tobytes() == by_calls.tobytes()
    rest = [base[n] + 1.3e-7 * (sum(ctx1[1:]) + (j - 1) * n) for j in range(200, 601)]  # steps 200..600
    assert by_table[199:].tolist() == [max(x, 0.0129) if overlap else x + 0.0129 for x in rest]


def test_a_run_past_the_tables_longest_is_priced_by_numpy_calls():
    """A context sum past `RunTimes.LONGEST` makes no table (memory stays bounded): the run's
    times are the numpy calls' all the same."""
    base, cpu = np.array([0.0, 0.004, 0.0041]), np.array([0.0, 0.0129, 0.0129])
    runs = stretch_chunks.RunTimes(base, cpu, 1.3e-8, True)
    times, expected = np.empty(100), np.empty(100)
    ctx0 = stretch_chunks.RunTimes.LONGEST
    stretch_chunks.times_of_run(times, (base, cpu, 1.3e-8, True, runs), 2, ctx0)
    stretch_chunks.times_of_run(expected, (base, cpu, 1.3e-8, True, None), 2, ctx0)
    assert len(runs._tables[2]) == 0 and times.tobytes() == expected.tobytes()


@pytest.mark.parametrize("horizon", [0.021, 0.05, 0.9, float("inf")])  # one step more, a few, many, all
def test_a_lone_stretch_priced_whole_takes_the_scalar_loops_steps(horizon):
    """`price_lone` (a new stretch of one request at an idle replica) prices all its steps at
    once from the forms' table and takes those that start before the horizon: the steps and
    floats of the scalar loop, and an extension past them is priced on as `price` would."""
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")

    def lone(forms) -> Stretch:
        return Stretch(0.0, 0.02, None, [], [], [_Req()], [1500], [700], True,
                       lambda k: perf.decode_time_fn(k) or False, perf, 0, forms)

    fast, slow = lone(_Forms(perf)._decode_forms), lone(lambda n: None)
    fast.price_lone(horizon)
    slow.price(horizon)
    assert fast.k == slow.k >= 2 and fast.end_s == slow.end_s
    assert [float(t) for t in fast.ends] == [float(t) for t in slow.ends]
    assert fast._priced == 700  # (every step priced, those past the horizon kept for extensions)
    fast.price(float("inf"))
    slow.price(float("inf"))
    assert fast.k == slow.k == 700 and [float(t) for t in fast.ends] == [float(t) for t in slow.ends]


class _Joiner:
    kv_block_keys = None

    def __init__(self, output_len: int) -> None:
        self.output_len = output_len


# (ctx1, remaining) of the requests a stretch starts with, the step at which it is cut, and the
# (prompt, output) of the request that joins there: one running request left and a short
# joiner (two runs: two, then one), a long joiner, three running with two leaving at one step
# (runs of four, three and one from the numpy calls, then the tables), a joiner that leaves first
JOINED = [
    ([1500, 900], [700, 90], 100, (2000, 250)),
    ([1500], [700], 40, (300, 2000)),
    ([400, 800, 1200, 50], [300, 500, 500, 900], 120, (700, 100)),
    ([3000, 20], [900, 30], 60, (128, 2)),
]


def _joined(perf, forms, case) -> Stretch:
    """A stretch of `case` priced ahead, cut at its step s, and joined there by one request
    with its scalar state brought to step s (as `join_arrivals` does)."""
    ctx1, remaining, s, (prompt, output) = case
    st = Stretch(0.0, 0.02, None, [], [], [_Req() for _ in ctx1], list(ctx1), list(remaining), True,
                 lambda k: perf.decode_time_fn(k) or False, perf, 0, forms)
    st.first_new = [10 ** 9] * len(ctx1)  # (no block growth: the blocks are `_limit`'s, not pricing's)
    st.price(float("inf"))
    st.cut(float(st.ends[s - 1]))  # (the step in flight at that time is s - 1: k = s)
    assert st.k == s
    st.truncate(s)
    st._sync()
    st.join_one(_Joiner(output), prompt, 10 ** 9, 0, 0.031, forms(len(ctx1) + 1), 16)
    return st


@pytest.mark.parametrize("case", JOINED)
@pytest.mark.parametrize("ahead_s", [1e-9, 0.3, 2.0, float("inf")])  # a step away, a few (the scalar loop), many, all
def test_a_joined_stretch_priced_on_whole_takes_the_scalar_loops_steps(case, ahead_s, monkeypatch):
    """`price_on` (just after a join, the scalar state step k's) prices every step to the last
    at once, run by run from that state, and takes those that start before the horizon: the
    steps and floats of the scalar loop (`price` without the affine forms: one perf-model call
    per step), and an extension past them is priced on as `price` would."""
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    forms = _Forms(perf)._decode_forms
    fast, slow = _joined(perf, forms, case), _joined(perf, lambda n: None, case)
    horizon = fast.end_s + ahead_s
    chunks = []
    plain = Stretch._chunk
    monkeypatch.setattr(Stretch, "_chunk", lambda st, steps: chunks.append(st) or plain(st, steps))
    fast.price_on(horizon)
    slow.price(horizon)
    assert fast.k == slow.k >= 2 and fast.end_s == slow.end_s
    assert [float(t) for t in fast.ends] == [float(t) for t in slow.ends]
    assert not chunks  # (whole, or the scalar loop: never `_chunk`)
    whole = ahead_s > 1  # (more than 64 steps to the horizon: every step priced, those past it kept for extensions)
    assert fast._priced == (fast.kmax if whole else fast.k) and (whole or fast.k < fast.kmax)
    fast.price(float("inf"))
    slow.price(float("inf"))
    assert fast.k == slow.k == fast.kmax and [float(t) for t in fast.ends] == [float(t) for t in slow.ends]
    assert fast.batch_sizes() == slow.batch_sizes()


def test_a_joined_stretch_with_many_departures_ahead_is_priced_by_chunks(monkeypatch):
    """More than `SEGMENTS` + 1 requests running after the join: `price_on` leaves it to
    `price` (its chunks vectorised over the steps), with the same floats."""
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    case = ([300 + 97 * i for i in range(8)], [200 + 53 * i for i in range(8)], 50, (500, 300))
    fast, slow = _joined(perf, _Forms(perf)._decode_forms, case), _joined(perf, lambda n: None, case)
    priced = []
    plain = Stretch.price
    monkeypatch.setattr(Stretch, "price", lambda st, h: priced.append(st) or plain(st, h))
    fast.price_on(float("inf"))
    slow.price(float("inf"))
    assert priced[0] is fast and fast.k == slow.k == fast.kmax
    assert [float(t) for t in fast.ends] == [float(t) for t in slow.ends]


@pytest.mark.parametrize("ahead_s", [0.3, 2.0, float("inf")])  # a few steps (the scalar loop), many, none
@pytest.mark.parametrize("departures", [8, 3])  # many leaving before the last step, or few (priced whole)
def test_a_joined_stretch_at_a_replica_among_many_prices_a_few_steps_ahead(ahead_s, departures, monkeypatch):
    """`price_on(horizon, ahead)` (a replica among many, its horizon a guess): with more than
    `SEGMENTS` + 1 requests running after the join, at most `ahead` steps are priced by the
    scalar loop, no numpy chunk, the scalar state kept at the last of them; extensions then price
    on as `price` does. Few departures are priced whole as without `ahead`. The floats of the
    scalar loop (one perf-model call per step) all along."""
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    case = ([300 + 97 * i for i in range(departures)], [200 + 53 * i for i in range(departures)], 50, (500, 300))
    fast, slow = _joined(perf, _Forms(perf)._decode_forms, case), _joined(perf, lambda n: None, case)
    k0, horizon = fast.k, fast.end_s + ahead_s
    chunks = []
    plain = Stretch._chunk
    monkeypatch.setattr(Stretch, "_chunk", lambda st, steps: chunks.append(st) or plain(st, steps))
    fast.price_on(horizon, 64)
    many = departures > stretch_chunks.SEGMENTS + 1
    slow.price(min(horizon, fast.end_s))  # (the steps the fast one took: those that start before its end)
    if many:
        assert fast._priced == fast.k <= k0 + 64 and fast._f is not None  # (the scalar state of the next step)
        assert fast.k == k0 + 64 or fast.end_s >= horizon  # (64 steps, or those before the horizon)
    else:  # (whole when the horizon is far, else the scalar loop to it, as without `ahead`)
        assert fast._priced in (fast.kmax, fast.k)
    assert not chunks and slow.k >= fast.k
    slow.truncate(fast.k)
    assert [float(t) for t in fast.ends] == [float(t) for t in slow.ends]
    fast.price(float("inf"))
    slow.price(float("inf"))
    assert fast.k == slow.k == fast.kmax and [float(t) for t in fast.ends] == [float(t) for t in slow.ends]
    assert fast.batch_sizes() == slow.batch_sizes()


@pytest.mark.parametrize("numpy_ends", [False, True])  # ends in a list (the scalar loop) or an array (chunks)
def test_a_cut_keeps_the_steps_started_before_it_wherever_it_falls(numpy_ends):
    """`cut` reads the second-to-last end first (an arrival usually falls in the last step) and
    searches only before it: the steps it keeps must be those a search of every end keeps, for
    a cut at, between, before and after the ends, on either kind of ends."""
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    forms = _Forms(perf)._decode_forms if numpy_ends else (lambda n: None)
    whole = _stretch(perf, forms, True)
    whole.price(2.5)
    ends = [float(t) for t in whole.ends]
    assert isinstance(whole._ends, np.ndarray) == numpy_ends and len(ends) > 20
    times = [0.0, ends[0], *ends[-3:], ends[-1] + 1.0] + [(a + b) / 2 for a, b in zip(ends, ends[1:])]
    for t in times:
        st = _stretch(perf, forms, True)
        st.price(2.5)
        keep = min(bisect.bisect_left(ends, t) + 1, len(ends))
        assert st.cut(t) == (keep < len(ends))
        assert st.k == keep and [float(x) for x in st.ends] == ends[:keep] and st.final


@pytest.mark.parametrize("numpy_ends", [False, True])  # ends in a list (the scalar loop) or an array (chunks)
def test_the_ends_view_reads_the_ends_as_python_floats_through_every_change(numpy_ends):
    """`ends_view` (what Python reads single ends through: the list itself, or a memoryview of
    the array) shows the stretch's ends as Python floats after pricing, a cut, a join's write,
    the scalar loop's appends and the array's growth: a view left on a replaced array fails."""
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    forms = _Forms(perf)._decode_forms if numpy_ends else (lambda n: None)
    st = _stretch(perf, forms, True, first=3000)

    def check() -> list[float]:
        view = st.ends_view
        got = [view[j] for j in range(st.k)]
        assert got == [float(t) for t in st.ends] and all(type(t) is float for t in got)
        assert type(st.end_s) is float and st.end_s == got[-1]
        return got

    st.price(2.5)
    assert isinstance(st._ends, np.ndarray) == numpy_ends and st.k > 20
    before = check()
    st.cut((before[9] + before[10]) / 2)  # (keeps steps 0..10)
    assert check() == before[:11]
    st._sync()
    st.join_one(_Joiner(500), 700, 10 ** 9, 0, 0.031, forms(13), 16)
    assert check() == before[:11] + [before[10] + 0.031]
    more = [st.end_s + 0.01 * (i + 1) for i in range(3 * len(st._ends))]  # (past the array's room: it grows)
    st._append(more)
    assert check() == before[:11] + [before[10] + 0.031] + more


def test_the_scalar_loop_writes_into_the_array_and_grows_it_when_full():
    """`_price_affine` stores each step's end as it prices it: appended to a list, or written
    into the array through its memoryview, the array doubled when the loop reaches its end.
    The same floats either way, across the growth and the departures around it."""
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    forms = _Forms(perf)._decode_forms
    as_list, as_array = (_stretch(perf, forms, True) for _ in range(2))  # (departures at 40, 93, 146, 199)
    as_array._room(1)  # (an array of 64 ends, step 0's priced: the loop fills it, then grows it)
    assert len(as_array._ends) == 64
    for st in (as_list, as_array):
        st._sync()
        st._price_affine(float("inf"), 150)
        st._price_affine(float("inf"), 220)  # (on from step 150: the first call grew the array to 128, then 256)
    assert type(as_list._ends) is list and len(as_array._ends) == 256
    assert as_array.k == as_list.k == as_array._priced == 220
    got = [as_array.ends_view[j] for j in range(220)]
    assert got == as_list._ends and as_array.ends.tolist() == got
    assert as_array.end_s == as_list.end_s == got[-1]
    assert as_array.batch_sizes() == as_list.batch_sizes() and as_array.batch_sizes()[-1] == 8


@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("numpy_ends", [False, True])
def test_the_scalar_loop_prices_run_by_run_the_floats_of_stepping(overlap, numpy_ends):
    """`_price_affine` prices a run of a constant batch at a time (`affine_run`, its context
    sum carried as a float): every step's end is the scalar form's time of that step's batch
    (its size and context sum as integers) summed on step by step, through departures, a
    horizon inside a run, a `stop`, and the array's growth; its scalar state is then the next
    step's."""
    n = 12
    base = np.array([0.0] + [0.004 + 1e-4 * k for k in range(1, n + 1)])
    cpu = np.array([0.0] + [0.0091] * n)
    g = 1.3e-9  # (with overlap the CPU time binds once a few requests have left)
    forms = (base, cpu, g, overlap, None)
    ctx1 = [300_000 + 97 * i for i in range(n)]
    remaining = [40 + 53 * i for i in range(n)]  # (one leaves every 53 steps from step 40 on)
    st = Stretch(0.0, 0.02, None, [], [], [_Req() for _ in range(n)], ctx1, remaining, True,
                 lambda k: (lambda ctx: 0.0), None, 0, lambda k: forms)
    ref, ctx_of, times = [0.02], [], []
    for j in range(1, 401):  # (stepping: the batch of step j and its time, summed on in order)
        act = [i for i in range(n) if remaining[i] > j]
        ctx = sum(ctx1[i] + j - 1 for i in act)
        ctx_of.append((len(act), ctx))
        x = base[len(act)] + g * ctx
        c = float(cpu[len(act)])
        times.append((c if c > x else float(x)) if overlap else float(x) + c)
        ref.append(ref[-1] + times[-1])
    if numpy_ends:
        st._room(1)  # (an array of 64 ends: the loop fills it, then grows it twice)
    st._sync()
    h = (ref[25] + ref[26]) / 2  # (inside the first run: step 26 starts before it and ends after)
    for horizon, stop, k in ((h, 1 << 62, 27), (float("inf"), 93, 93), (float("inf"), 150, 150),
                             ((ref[170] + ref[171]) / 2, 400, 172), (float("inf"), 400, 400)):
        st._price_affine(horizon, stop)
        assert st.k == st._priced == k and st.end_s == ref[k - 1]
        assert (st._active, st._ctx_sum) == ctx_of[k - 1]  # (step k's batch, departures at k applied)
        assert [st.ends_view[j] for j in range(k)] == ref[:k]
    assert type(st._ends) is (np.ndarray if numpy_ends else list)
    if numpy_ends:
        assert len(st._ends) == 512
    if overlap:  # (both sides of the max taken)
        assert times.count(0.0091) > 50 and sum(x > 0.0091 for x in times) > 50


@pytest.mark.parametrize("forms", [False, True])  # `_price_loop` or the affine forms' `_price_affine`
def test_a_truncation_unwinds_the_scalar_state_to_its_step_with_those_that_left_after_it(forms, monkeypatch):
    """A plain stretch through finishes truncated inside the steps its scalar loop priced keeps
    a scalar state, that of the step it is cut back to: the requests that left after that step
    (ties included) back in the batch, every context back by the steps dropped. The same
    integers as `_sync`'s pass (not called), so a join there takes the lean path at once."""
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    ctx1 = [300 + 97 * i for i in range(10)]
    remaining = [5, 9, 9, 9, 14, 20, 20, 27, 31, 40]  # ties: three leave before step 9, two before 20

    def sync_fails(self):
        raise AssertionError("the state is rebuilt by a pass")

    for j in (2, 5, 8, 9, 10, 19, 20, 21, 26):
        st = Stretch(0.0, 0.02, None, [], [], [_Req() for _ in ctx1], list(ctx1), list(remaining), True,
                     lambda k: perf.decode_time_fn(k) or False, perf, 0,
                     _Forms(perf)._decode_forms if forms else (lambda n: None))
        st.price(float(30 * 0.02))  # (the scalar loop: a near horizon, about 30 steps)
        assert st._f and st._priced == st.k > 26
        monkeypatch.setattr(Stretch, "_sync", sync_fails)
        st.truncate(j)
        monkeypatch.undo()
        running = [c + j - 1 for c, r in zip(ctx1, remaining) if r > j]
        assert (st.k, st._priced, st._p, st._active, st._ctx_sum) == (j, j, sum(r <= j for r in remaining),
                                                                      len(running), sum(running))
        assert st._f is not None and st._f(st._ctx_sum) == perf.decode_time_fn(len(running))(sum(running))


@pytest.mark.parametrize("ahead", [0, 64])
def test_a_stretch_capped_below_its_last_departure_is_priced_on_as_price_prices_it(ahead, monkeypatch):
    """A length a policy capped (`FastForward.max_steps`, vtc's `max_wait_tokens`) below the last
    departure: `price_on`'s run-by-run loop, which ends at the last departure, would read past the
    departures (an IndexError at vtc azure-conv 8 when launches first priced on); it goes by the
    scalar loop with `ahead`, else by `price`, to the cap, with the scalar loop's floats."""
    perf = build_perf_model("llama-3.1-8b", "h100-sxm")
    case = ([300, 700, 1100], [200, 260, 320], 50, (500, 400))
    fast, slow = _joined(perf, _Forms(perf)._decode_forms, case), _joined(perf, lambda n: None, case)
    fast.kmax = slow.kmax = fast.k + 100  # (below the last departure: 50 + 400)
    assert fast._sorted_rem[-1] > fast.kmax
    fast.price_on(float("inf"), ahead)
    fast.price(float("inf"))  # (on to the cap, as the stretch's end extends it)
    slow.price(float("inf"))
    assert fast.k == slow.k == fast.kmax and [float(t) for t in fast.ends] == [float(t) for t in slow.ends]
