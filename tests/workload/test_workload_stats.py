"""Trace statistics against the README of shared/data/traces (computed independently there)."""

import pytest

from servesim.workload.stats import trace_stats
from servesim.workload.traces import TraceReader, resolve_trace


def stats(name):
    path, display, _ = resolve_trace(name)
    return trace_stats(TraceReader(path, display_name=display).rows())


def test_azure_conv_matches_readme():
    s = stats("azure-conv")
    assert s["num_requests"] == 19366
    assert s["duration_s"] / 60 == pytest.approx(58.4, abs=0.05)
    assert s["mean_rate_per_s"] == pytest.approx(5.53, abs=0.005)
    assert (s["peak_rate_per_s"], s["peak_rate_per_min"]) == (16, 507)
    assert s["interarrival_cv"] == pytest.approx(1.09, abs=0.005)
    assert [s["input_len"][k] for k in ("p50", "p90", "p99", "max")] == pytest.approx([1020, 2735, 4142, 14050], abs=0.5)
    assert [s["output_len"][k] for k in ("p50", "p90", "p99", "max")] == pytest.approx([129, 424, 601, 1000], abs=0.5)
    assert s["input_len"]["mean"] == pytest.approx(1155, abs=0.5)
    assert "prefix_reuse_ratio" not in s


def test_azure_code_matches_readme():
    s = stats("azure-code")
    assert s["num_requests"] == 8819
    assert s["mean_rate_per_s"] == pytest.approx(2.57, abs=0.005)
    assert (s["peak_rate_per_s"], s["peak_rate_per_min"]) == (67, 632)
    assert s["interarrival_cv"] == pytest.approx(13.2, abs=0.05)
    assert [s["output_len"][k] for k in ("p50", "p90", "max")] == [13, 55, 1899]


def test_mooncake_prefix_reuse_matches_readme():
    s = stats("mooncake-conversation")
    assert s["num_requests"] == 12031
    assert s["interarrival_cv"] == pytest.approx(3.03, abs=0.005)
    assert (s["num_blocks"], s["num_unique_blocks"]) == (288500, 182790)
    assert s["prefix_reuse_ratio"] == pytest.approx(0.366, abs=0.0005)
    assert s["input_len"]["p50"] == 6909 and s["output_len"]["max"] == 2000


def test_length_table_has_no_time_keys():
    s = stats("sharegpt")
    assert s["num_requests"] == 30731 and "duration_s" not in s
    assert s["input_len"]["p50"] == 1730 and s["output_len"]["max"] == 1024
