import numpy as np
import pytest

from servesim.workload.servegen_data import load_traces, mixed_pmfs
from tests.workload.helpers import make


def test_shipped_client_models_match_the_readme():
    # README (shared/data/traces/servegen): aggregate req/min mean / peak per 10-min window.
    for model, clients, windows, mean_per_min, peak_per_min in [
        ("m-small", 43, 2016, 70464, 232771), ("deepseek-r1", 73, 144, 961, 2551), ("mm-image", 35, 144, 568, 797)]:
        tr = load_traces(model)
        agg = tr.rate.sum(axis=0) * 60
        assert tr.rate.shape == (clients, windows)
        assert agg.mean() == pytest.approx(mean_per_min, abs=1)
        assert agg.max() == pytest.approx(peak_per_min, abs=1)


def test_scaled_to_target_rate_with_diurnal_shape_and_tenants():
    cfg = {"arrival": {"process": "servegen", "model": "deepseek-r1", "rate_per_s": 2.0}, "duration_s": 86400}
    reqs = list(make(cfg).arrivals())
    t = np.array([r.arrival_s for r in reqs])
    assert np.all(np.diff(t) >= 0) and t[-1] <= 86400
    assert len(reqs) / 86400 == pytest.approx(2.0, rel=0.03)
    # The released per-hour aggregate (scaled) predicts each hour's count.
    tr = load_traces("deepseek-r1")
    hourly = tr.rate.sum(axis=0).reshape(24, 6).mean(axis=1)
    expected = hourly / hourly.mean() * 2.0 * 3600
    counts = np.histogram(t, bins=24, range=(0, 86400))[0]
    assert np.corrcoef(counts, expected)[0, 1] > 0.95
    assert len({r.tenant for r in reqs}) > 40 and reqs[0].tenant.startswith("deepseek-r1/client-")


def test_top_clients_and_start_offset():
    cfg = {"arrival": {"process": "servegen", "model": "mm-image", "top_clients": 3, "start_s": 43200},
           "duration_s": 3600}
    reqs = list(make(cfg).arrivals())
    assert len({r.tenant for r in reqs}) <= 3
    tr = load_traces("mm-image")
    top3 = np.argsort(-tr.rate.sum(axis=1))[:3]
    expected = tr.rate[top3, 72:78].sum() * 600
    assert len(reqs) == pytest.approx(expected, rel=0.1)


def test_reasoning_and_multimodal_lengths():
    r1 = list(make({"lengths": {"dataset": "deepseek-r1"}, "num_requests": 20000}).arrivals())
    out = np.array([r.output_len for r in r1])
    assert out.max() <= 32768 and np.median(out) > 500  # long reasoning outputs
    pmfs = mixed_pmfs("deepseek-r1", ("output_tokens",))
    values, probs = pmfs["output_tokens"]
    assert out.mean() == pytest.approx((values * probs).sum(), rel=0.05)
    mm = list(make({"lengths": {"dataset": "mm-image"}, "num_requests": 5000}).arrivals())
    assert np.median([r.prompt_len for r in mm]) > 690  # image tokens (README p50 690) plus text
