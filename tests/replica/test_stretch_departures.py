"""The per-stretch shortcuts of the engine give what the general paths give: departures found
by scanning `remaining` (ties, any order), the batch runs of a stretch nobody left, the
uniform advance of a stretch without finishes, and no stretch built when step 1 cannot start
before the horizon."""

from __future__ import annotations

import bisect
import math
import random
from types import SimpleNamespace

import pytest

from servesim.perf.build import build_perf_model
from servesim.replica import fast_forward
from servesim.replica.token_advance import advance_decodes, advance_decodes_by, advance_decodes_step
from servesim.replica.schedulers.vllm import VLLMScheduler
from servesim.replica.stretch import Stretch
from servesim.replica.stretch_joins import StretchJoins
from servesim.workload.request import Request


class _Req:
    kv_block_keys = None


@pytest.fixture(scope="module")
def perf():
    return build_perf_model("llama-3.1-8b", "h100-sxm")


def _scalar_stretch(perf, ctx1: list[int], remaining: list[int]) -> Stretch:
    """A `through` stretch priced by the scalar loop only (no affine forms)."""
    return Stretch(0.0, 0.02, None, [], [], [_Req() for _ in ctx1], ctx1, remaining, True,
                   lambda k: perf.decode_time_fn(k) or False, perf, 0, lambda n: None)


def test_departures_with_ties_in_any_order_price_as_stepping(perf):
    rng = random.Random(7)
    remaining = [rng.choice([1, 2, 5, 5, 9, 9, 9, 30]) for _ in range(40)]  # ties, unsorted, some leave at once
    ctx1 = [rng.randrange(10, 4000) for _ in remaining]
    st = _scalar_stretch(perf, ctx1, remaining)
    st.price(float("inf"))
    # stepping: step j >= 1 runs the requests with remaining > j, each at context ctx1 + j - 1
    t, ends = 0.02, [0.02]
    for j in range(1, max(remaining)):
        active = [c + j - 1 for c, r in zip(ctx1, remaining) if r > j]
        t += perf.decode_time_fn(len(active))(sum(active))
        ends.append(t)
    assert st.k == max(remaining) == 30
    assert list(st.ends) == ends  # bit for bit
    assert st._order is None  # no departure order was sorted for the scalar loop


@pytest.mark.parametrize("remaining", [[7], [7, 40], [3, 3, 5, 9, 9, 9, 12, 30], list(range(2, 40, 3))])
@pytest.mark.parametrize("forms", [False, True])  # ends as a list (scalar loop) or an array (numpy chunks)
def test_finished_by_counts_the_requests_whose_last_step_ended_before_t(perf, remaining, forms):
    """`finished_by(t)` (a scan of the first departures, a search beyond four) is the count
    its definition gives: requests whose last step ended before t and is not the stretch's
    last, at every step boundary, just before and after it, and as the stretch grows."""
    from servesim.replica.fast_forward import DecodeFns, FastForwarding

    class _Forms(FastForwarding):
        def __init__(self) -> None:
            self.perf, self.decode_fns = perf, DecodeFns(perf)

    st = Stretch(0.0, 0.02, None, [], [], [_Req() for _ in remaining], [500] * len(remaining), list(remaining), True,
                 lambda k: perf.decode_time_fn(k) or False, perf, 0, _Forms()._decode_forms if forms else lambda n: None)
    counted = set()
    for horizon in (0.05, 0.2, float("inf")):
        st.price(horizon)
        ends = [float(e) for e in st.ends]
        for e in ends + [0.0, ends[-1] + 1.0]:
            for t in (e, math.nextafter(e, -math.inf), math.nextafter(e, math.inf)):
                want = sum(1 for r in remaining if r <= st.k - 1 and ends[r - 1] < t)
                assert st.finished_by(t) == want == st.finished_before(st.step_in_flight(t))
                # and up to when that holds: the next departure's last step's end, if a taken step
                # and not the last one (the router's kept counts read both in one call)
                nxt = sorted(remaining)[want] if want < len(remaining) else st.k
                assert st.finished_until(t) == (want, ends[nxt - 1] if nxt <= st.k - 1 else math.inf)
                counted.add(want)
    assert max(counted) == sum(1 for r in remaining if r < max(remaining))  # up to all but the last


def test_finished_until_goes_on_from_the_last_count_and_starts_over_when_it_no_longer_holds(perf, monkeypatch):
    """Reads at later and later times (a router's, at each arrival) count on from the last
    count (`_fin`) without a search, however many left before; a read that the last count
    does not hold for (an earlier t, a cut before its step) counts from none: every answer is
    the definition's."""
    remaining = list(range(2, 42))  # one departure a step, 39 before the last
    st = _scalar_stretch(perf, [300] * len(remaining), remaining)
    st.price(float("inf"))
    searches, search = [], Stretch.step_in_flight
    monkeypatch.setattr(Stretch, "step_in_flight", lambda self, t: searches.append(t) or search(self, t))

    def want(t):
        ends = list(st.ends)
        n = sum(1 for r in remaining if r <= st.k - 1 and ends[r - 1] < t)
        nxt = sorted(remaining)[n] if n < len(remaining) else st.k
        return n, (ends[nxt - 1] if nxt <= st.k - 1 else math.inf)

    times = [t for e in st.ends for t in (e, math.nextafter(e, math.inf))]
    for t in times:  # in order: each read scans on from the last count, none of them searches
        assert st.finished_until(t) == want(t)
    assert st._fin == 39 and searches == []
    t = float(st.ends[9])
    assert st.finished_until(t) == want(t) == (8, t)  # an earlier time: counted from none, a search past four
    assert searches == [t]
    assert st.finished_by(float(st.ends[11]) + 1e-9) == 11 and len(searches) == 1  # on from 8: three more
    t = float(st.ends[20])
    st.cut(float(st.ends[5]))  # the steps from 6 on are gone: the count of 11 holds no longer
    assert st.k == 6 and st.finished_until(t) == want(t) == (4, math.inf)


def test_batch_runs_of_a_stretch_nobody_left_and_of_one_with_departures(perf):
    st = _scalar_stretch(perf, [100, 200, 300], [50, 20, 20])
    st.price(0.021)  # one step past step 0
    assert st.k == 2
    assert st.batch_runs() == ([3], [2])
    st.price(float("inf"))
    assert st.batch_runs() == ([3, 1], [20, 30])
    assert st.batch_sizes() == [3] * 20 + [1] * 30


def _runs_by_search(k, rem, starts, stalls, n):
    """The joined stretch's batch runs by a search of the two sorted lists per change (the
    earlier `_batch_runs_joined`): n requests, `starts` of the joins, `stalls` (step, count)."""
    marks = sorted({0, *(r for r in rem if r < k), *(s for s in starts if s < k),
                    *(j for s, _ in stalls if s < k for j in (s, s + 1) if j < k)})
    sizes = [n - len(starts) + bisect.bisect_right(starts, j) - bisect.bisect_right(rem, j) for j in marks]
    for s, _ in stalls:
        if s < k:
            sizes[marks.index(s)] = starts.count(s)
    return sizes, [b - a for a, b in zip(marks, marks[1:] + [k])]


@pytest.mark.parametrize("seed", range(40))
def test_batch_runs_with_joins_and_stalls_count_each_change_once(seed):
    """`batch_runs` of a stretch with joins sums the joins and departures at each change of the
    batch in order: the runs a search of the sorted lists at each change gives, and per step the
    requests that joined at or before it and have not left (ties, joins and departures at the
    same step, prompt-only steps, changes at and past the last step)."""
    rng = random.Random(seed)
    k = rng.randint(1, 60)
    n0 = rng.randint(1, 6)
    starts = sorted(rng.randint(1, k + 3) for _ in range(rng.randint(1, 8)))
    rem = sorted(rng.randint(1, 70) for _ in range(n0 + len(starts)))
    stalls = [(s, 1) for s in sorted(set(starts)) if rng.random() < 0.3]
    st = SimpleNamespace(k=k, _sorted_rem=rem, joins=[(s, None, 9) for s in starts], reqs=[None] * len(rem),
                         stalls=stalls)
    runs = StretchJoins._batch_runs_joined(st)
    assert runs == _runs_by_search(k, rem, starts, stalls, len(rem))
    per_step = [size for size, m in zip(*runs) for _ in range(m)]
    assert len(per_step) == k
    stalled = dict(stalls)
    for j, size in enumerate(per_step):
        joined = sum(s <= j for s in starts)
        assert size == (starts.count(j) if j in stalled else n0 + joined - sum(r <= j for r in rem))


def test_uniform_advance_is_the_general_advance_with_equal_steps():
    def batch() -> list[Request]:
        reqs = [Request(i, 0.0, 10, 100) for i in range(4)]
        for i, r in enumerate(reqs):
            r.num_computed_tokens, r.num_output_tokens = 12, 3
            r.token_steps = [0, 6] if i % 2 else [0, 2, 5, 7]  # runs ending at the step before, or earlier
        return reqs

    a, b = batch(), batch()
    advance_decodes(a, [5] * 4, 8)
    advance_decodes_by(b, 5, 8)
    assert [(r.num_computed_tokens, r.num_output_tokens, r.token_steps) for r in a] == \
           [(r.num_computed_tokens, r.num_output_tokens, r.token_steps) for r in b]
    assert b[0].token_steps == [0, 2, 5, 12] and b[1].token_steps == [0, 6, 8, 12]


def test_one_step_advance_returns_the_finished_in_order():
    """The engine's stepped step advances its decodes and picks those that emitted their last
    token in one pass: the same requests as the uniform advance by one, then the filter."""
    def batch() -> list[Request]:
        reqs = [Request(i, 0.0, 10, 4 + i % 3) for i in range(6)]  # output lengths 4, 5, 6, ...
        for i, r in enumerate(reqs):
            r.num_computed_tokens, r.num_output_tokens = 12, 3 + i % 2  # 0, 1 and 3 emit their last
            r.token_steps = [0, 6] if i % 2 else [0, 2, 5, 7]
        return reqs

    a, b = batch(), batch()
    advance_decodes_by(a, 1, 8)
    expected = [r.id for r in a if r.num_output_tokens >= r.output_len]
    finished = advance_decodes_step(b, 8)
    assert [r.id for r in finished] == expected == [0, 1, 3]
    assert [(r.num_computed_tokens, r.num_output_tokens, r.token_steps) for r in a] == \
           [(r.num_computed_tokens, r.num_output_tokens, r.token_steps) for r in b]
    assert b[0].token_steps == [0, 2, 5, 8] and b[1].token_steps == [0, 6, 8, 8]


def test_no_stretch_is_built_when_step_1_cannot_start_before_the_horizon(monkeypatch):
    from servesim import load_scenario, simulate

    plans, first_k = [], []
    plan = fast_forward.FastForwarding._fast_forward
    monkeypatch.setattr(fast_forward.FastForwarding, "_fast_forward",
                        lambda self, *a: plans.append(1) or plan(self, *a))
    price = Stretch.price

    def first_price(st, horizon):
        fresh = st.k == 1
        price(st, horizon)
        if fresh:
            first_k.append(st.k)

    monkeypatch.setattr(Stretch, "price", first_price)
    # (the plain planner: admission stretches, which hold step 0 alone when a request's last
    # token is its, are off; `tests/replica/test_admission_stretch.py` covers them)
    monkeypatch.setattr(VLLMScheduler, "finish_admission", lambda self: False)
    # arrivals about one engine step apart: many plans meet the next arrival within step 0
    result = simulate(load_scenario(None, ["workload.trace=null", "workload.arrival.process=poisson",
                                           "workload.arrival.rate_per_s=40", "workload.num_requests=300",
                                           "workload.lengths.dataset=sharegpt"]))
    assert result.summary()["num_requests"] == 300 and result.num_fast_forwarded_steps > 0
    assert len(first_k) > 100  # stretches were planned ...
    assert len(plans) - len(first_k) > 20  # ... and others given up before a Stretch was built
    assert min(first_k) >= 2  # every stretch built reached step 1 (none built to be dropped)


@pytest.mark.parametrize("engine", ["vllm", "sglang"])  # (the CPU time added to the GPU step, or overlapped: max)
def test_the_affine_loop_prices_as_the_scalar_calls_bit_for_bit(engine, monkeypatch):
    from servesim.perf.config import PerfConfig
    from servesim.replica.fast_forward import DecodeFns, FastForwarding
    from servesim.replica.stretch_pricing import StretchPricing

    perf = build_perf_model("llama-3.1-8b", "h100-sxm", config=PerfConfig(engine=engine))
    assert perf._overlap is (engine == "sglang")

    class _Forms(FastForwarding):
        def __init__(self) -> None:
            self.perf, self.decode_fns = perf, DecodeFns(perf)

    affine = []
    plain = StretchPricing._price_affine
    monkeypatch.setattr(StretchPricing, "_price_affine", lambda st, h: affine.append(1) or plain(st, h))
    rng = random.Random(3)
    remaining = [rng.randrange(1, 60) for _ in range(25)]
    ctx1 = [rng.randrange(10, 9000) for _ in remaining]
    fast = Stretch(0.0, 0.02, None, [], [], [_Req() for _ in ctx1], ctx1, remaining, True,
                   lambda k: perf.decode_time_fn(k) or False, perf, 0, _Forms()._decode_forms)
    slow = _scalar_stretch(perf, ctx1, remaining)
    for horizon in (0.1, 0.3, 0.7, 5.0):  # under 64 steps each: the loop, not numpy chunks
        fast.price(horizon)
        slow.price(horizon)
        assert list(fast.ends) == list(slow.ends)
    assert affine and fast.k == slow.k == max(remaining)
