"""`PeakItems` and `FewPeakItems` (VTC's future-peak check kept across a mini-batch, as arrays
and as lists for small batches) against `future_peak`."""

from __future__ import annotations

import numpy as np
import pytest

from servesim.replica.schedulers.vtc import future_peak
from servesim.replica.schedulers.vtc_peak import FEW, FewPeakItems, PeakItems, peak_items


@pytest.mark.parametrize("cls", [PeakItems, FewPeakItems])
def test_peak_items_equal_future_peak(cls):
    rng = np.random.default_rng(7)
    for trial in range(300):
        n = int(rng.integers(0, 80))
        # small ranges: many ties in remaining output; some negative rests (a reserve below the output)
        contexts = [int(x) for x in rng.integers(1, 500, n)]
        rests = [int(x) for x in rng.integers(-5, 30 if trial % 2 else 400, n)]
        items = cls(contexts, rests)
        for _ in range(int(rng.integers(1, 12))):  # candidates, some admitted, as a mini-batch does
            c, r = int(rng.integers(1, 500)), int(rng.integers(-5, 400))
            assert items.peak_with(c, r) == future_peak(contexts + [c], rests + [r])
            if rng.random() < 0.7:
                items.add(c, r)
                contexts.append(c)
                rests.append(r)
                assert len(items) == len(contexts)


@pytest.mark.parametrize("cls", [PeakItems, FewPeakItems])
def test_peak_of_an_empty_batch_is_the_candidates_own(cls):
    items = cls([], [])
    assert items.peak_with(10, 5) == 15 == future_peak([10], [5])
    assert items.peak_with(10, -20) == 0


def test_the_form_follows_the_batch_size():
    assert type(peak_items([1] * (FEW - 1), [1] * (FEW - 1))) is FewPeakItems
    assert type(peak_items([1] * FEW, [1] * FEW)) is PeakItems


def test_admissions_past_the_buffers_room_keep_the_peaks():
    """`PeakItems` holds its batch in buffers with room to grow: admitting many more requests
    than it was built with (its buffers full more than once) gives `future_peak`'s peaks."""
    rng = np.random.default_rng(11)
    contexts, rests = [120, 40], [30, 300]
    items = PeakItems(contexts, rests)
    for _ in range(150):
        c, r = int(rng.integers(1, 500)), int(rng.integers(-5, 400))
        assert items.peak_with(c, r) == future_peak(contexts + [c], rests + [r])
        items.add(c, r)
        contexts.append(c)
        rests.append(r)
    assert len(items) == 152 and len(items._c) >= 152  # (grown: built with room for 20)
