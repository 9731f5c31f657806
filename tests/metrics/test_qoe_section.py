"""The QoE section values whole chunks of requests at once (`qoe_many`: 1.0 for a request no
token of which is late, the others one by one): it must give every request's `qoe` float for
float, so the summary does not change."""

from __future__ import annotations

import numpy as np

from servesim.metrics.sections import SectionInput
from servesim.metrics.sections.qoe import qoe, qoe_many, section
from servesim.workload.request import RequestState
from tests.factories import make_request


def _requests(rng, m):
    counts = rng.integers(0, 40, m).astype(np.int64)
    counts[::17] = 9000  # longer than numpy's reduction buffer (8,192)
    counts[5] = 0
    times = [np.cumsum(rng.exponential(rng.choice([0.01, 0.5]), c)) + rng.uniform(0, 3) for c in counts]
    return counts, times


def test_qoe_many_is_qoe_of_each_request_bit_for_bit():
    rng = np.random.default_rng(7)
    counts, times = _requests(rng, 80)
    ttft = rng.choice([0.1, 1.0, 2.5], len(counts))
    tds = rng.choice([3.3, 5.0, 11.0], len(counts))
    got = qoe_many(np.concatenate(times), counts, ttft, tds)
    want = [qoe(t, float(a), float(b)) for t, a, b in zip(times, ttft, tds)]
    assert [repr(v) for v in got] == [repr(v) for v in want]
    assert got[5] == 0.0  # (no tokens)
    assert len({v for v in got if 0.0 < v < 1.0}) > 20 and got.count(1.0) > 10  # both paths ran
    # a late request next to one on time: each valued with its own tokens only
    late = np.array([50.0, 50.1, 50.2, 0.1, 0.2, 0.3])
    two = qoe_many(late, np.array([3, 3]), np.array([1.0, 1.0]), np.array([5.0, 5.0]))
    assert two == [qoe(late[:3], 1.0, 5.0), qoe(late[3:], 1.0, 5.0)] and two[1] == 1.0


def test_section_reads_each_requests_own_targets():
    rng = np.random.default_rng(11)
    reqs, steps = [], []
    for i in range(40):
        r = make_request(i, 10, 5, arrival=float(i))
        r.state = RequestState.FINISHED
        gaps = rng.exponential(0.6, 5)
        r.token_steps = list(range(len(steps), len(steps) + 5))
        steps += (i + 0.2 + np.cumsum(gaps)).tolist()
        if i % 3 == 0:
            r.extra["qoe_ttft_s"], r.extra["qoe_tds"] = 0.3, 9.0
        reqs.append(r)
    data = SectionInput(reqs, np.array(steps), {"scheduler": {"name": "andes"}})
    out = section(data)
    # each request valued alone (the section's former path), with its own targets or andes' defaults
    each = [qoe(times - i, *((0.3, 9.0) if i % 3 == 0 else (1.0, 5.0)))
            for i, times in enumerate(data.token_times_each(np.arange(40)))]
    assert out["num_requests"] == 40 and out["mean"] == float(np.mean(each)) and out["min"] == min(each) < 1.0
