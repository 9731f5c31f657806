import numpy as np
import pytest

from tests.workload.helpers import make


def fields(reqs):
    return [(r.id, r.arrival_s, r.prompt_len, r.output_len, r.hash_ids, r.tenant) for r in reqs]


@pytest.mark.parametrize("process, cv", [("poisson", 1.0), ("gamma", 3.0), ("gamma", 0.5), ("weibull", 2.0)])
def test_rate_and_cv(process, cv):
    arrival = {"process": process, "rate_per_s": 5.0} | ({} if process == "poisson" else {"cv": cv})
    reqs = list(make({"arrival": arrival, "num_requests": 40000}).arrivals())
    t = np.array([r.arrival_s for r in reqs])
    gaps = np.diff(t)
    assert len(reqs) == 40000
    assert len(reqs) / t[-1] == pytest.approx(5.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.08)
    assert np.all(gaps >= 0)


def test_same_seed_same_requests_other_seed_differs():
    cfg = {"arrival": {"process": "gamma", "rate_per_s": 3, "cv": 2}, "lengths": {"dataset": "sharegpt"}, "num_requests": 300}
    assert fields(make(cfg, 7).arrivals()) == fields(make(cfg, 7).arrivals())
    assert fields(make(cfg, 7).arrivals()) != fields(make(cfg, 8).arrivals())


def test_fixed_and_uniform_lengths():
    reqs = list(make({"lengths": {"prompt_tokens": 100, "output_tokens": [5, 7]}, "num_requests": 2000}).arrivals())
    assert {r.prompt_len for r in reqs} == {100}
    assert {r.output_len for r in reqs} == {5, 6, 7}


def test_sharegpt_lengths_follow_the_table():
    reqs = list(make({"lengths": {"dataset": "sharegpt"}, "num_requests": 30000}).arrivals())
    prompts = np.array([r.prompt_len for r in reqs])
    outputs = np.array([r.output_len for r in reqs])
    # README: ShareGPT input p50 1,730 (mean 2,340), output p50 415 (mean 439).
    assert np.median(prompts) == pytest.approx(1730, rel=0.05)
    assert outputs.mean() == pytest.approx(439, rel=0.03)
    assert prompts.max() <= 8141 and outputs.max() <= 1024


def test_duration_limit_and_default_count():
    reqs = list(make({"arrival": {"rate_per_s": 10}, "duration_s": 100}).arrivals())
    assert all(r.arrival_s <= 100 for r in reqs) and 850 < len(reqs) < 1150
    assert len(list(make({}).arrivals())) == 1000


def test_a_length_table_is_read_once_for_first_turns_and_follow_ups(monkeypatch):
    from servesim.workload import lengths

    calls = []
    real = lengths.read_length_table
    monkeypatch.setattr(lengths, "read_length_table", lambda name: calls.append(name) or real(name))
    cfg = {"lengths": {"dataset": "sharegpt"}, "sessions": {"turns": [3, 3], "think_time_s": 1}, "num_requests": 60}
    reqs = list(make(cfg).arrivals())
    assert calls == ["sharegpt"] and len(reqs) > 0
