"""The attention-DP constants' fit (validation/attention_dp.py): its line fit and decode batch."""

from __future__ import annotations

import pytest

from servesim.validation.attention_dp import decode_seqs, fit_entries, fit_line
from servesim.validation.silicon import parse_row
from tests.validation.test_silicon_mapping import BASE


def _row(**changes):
    return parse_row({**BASE, "tp_size": "2", "attention_dp_size": "2", "moe_ep_size": "4", **changes})


def test_fit_line_is_least_squares_with_nonnegative_terms() -> None:
    assert fit_line([(1.0, 3.0), (2.0, 5.0), (4.0, 9.0)]) == pytest.approx((1.0, 2.0))
    assert fit_line([(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]) == pytest.approx((2.0, 0.0))  # falling: the mean, no slope
    assert fit_line([(10.0, 1.0), (20.0, 3.0)]) == pytest.approx((0.0, 0.14))  # negative intercept: through 0
    # relative residuals: an exact line stays exact, and a point off the line moves the fit less
    # when its scale is large
    assert fit_line([(1.0, 3.0, 1.0), (2.0, 5.0, 10.0), (4.0, 9.0, 0.5)]) == pytest.approx((1.0, 2.0))
    off = [(1.0, 3.0, 1.0), (2.0, 5.0, 1.0), (4.0, 9.0, 1.0), (3.0, 17.0)]
    assert fit_line([p + (100.0,) if len(p) == 2 else p for p in off])[1] < fit_line([p[:2] for p in off])[1]


def test_decode_batch_is_dp_times_the_largest_rank() -> None:
    assert decode_seqs(_row(batch_size="32", concurrency="64")) == 64
    assert decode_seqs(_row(batch_size="4", concurrency="5")) == 6  # 3 + 2 users, padded to 3 per rank
    assert decode_seqs(_row(batch_size="8", concurrency="64")) == 16  # each rank runs at most its batch


def test_entries_are_per_engine() -> None:
    rows = [(_row(batch_size="32", concurrency=str(c), silicon_tpot_ms=str(10 + 0.01 * c)), 0.008) for c in (8, 32, 64)]
    (entry,) = fit_entries(rows)
    assert entry.match == {"engine": "vllm"}
    assert entry.values["dp_step_s"] == pytest.approx(0.002) and entry.values["dp_seq_s"] == pytest.approx(1e-5)
