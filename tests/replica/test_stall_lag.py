"""A stall inside an admission stretch (`AdmitStretch.stall`) makes no pass over the batch: the
stored `remaining` and `ctx1` of the requests running lag the stalls (`AdmitStretch.lag`), those
that left are set apart, and the lists are settled (one pass) only when something other than the
departures' searches reads them. Checked two ways: after every stall the settled lists equal
those the stall's passes made before (a shadow of them kept beside the stretch), and whole runs
equal stepping's (`test_stall_frame.run_cases`); the counts assert that stalls ran while lagging and that
the lists were settled far less often than a stall came."""

from __future__ import annotations

from collections import Counter

import pytest

from servesim.replica.admission_stretch import _CTX1, _REMAINING, AdmitStretch
from tests.replica.test_admission_stretch import llama  # noqa: F401 (a fixture)
from tests.replica.test_stall_frame import run_cases


def settled(st: AdmitStretch) -> tuple[list[int], list[int]]:
    """(remaining, ctx1) as `_settle` leaves them, without settling."""
    g, rem, ctx1 = st.lag, _REMAINING.__get__(st), _CTX1.__get__(st)
    if not g:
        return list(rem), list(ctx1)
    return [r + g if r >= 0 else ~r for r in rem], [c - g if r >= 0 else c for c, r in zip(ctx1, rem)]


@pytest.fixture
def shadowed(monkeypatch):
    """Counts of stalls (those while the lists lagged already) and settles; each stall checked
    against the eager passes applied to a copy of the lists settled before it."""
    counts = Counter()
    stall, settle = AdmitStretch.stall, AdmitStretch._settle

    def checked_stall(st, *args):
        eager = st.growth is not None
        if eager:
            s, n = st.k, len(st.reqs)
            rem, ctx1 = settled(st)
            ctx1 = [c - 1 if r > s else c for c, r in zip(ctx1, rem)]
            rem = [r + 1 if r > s else r for r in rem]
            counts["stall"] += 1
            counts["while lagging"] += st.lag > 0
        stall(st, *args)
        if eager:  # (the joiners' entries follow the others')
            after_rem, after_ctx1 = settled(st)
            assert after_rem[:n] == rem and after_ctx1[:n] == ctx1
            assert after_rem[n:] == [s + req.output_len for _, req, _ in st.joins[len(st.joins) - len(after_rem) + n:]]

    def counted_settle(st):
        counts["settle"] += 1
        return settle(st)

    for name, wrapped in (("stall", checked_stall), ("_settle", counted_settle)):
        monkeypatch.setattr(AdmitStretch, name, wrapped)
    return counts


def test_stalls_lag_and_match_the_passes_and_stepping(shadowed, llama):
    run_cases(llama)
    print(dict(shadowed))
    assert shadowed["stall"] > 500
    assert shadowed["while lagging"] > 0.5 * shadowed["stall"]  # (no pass over the batch in those)
    assert shadowed["settle"] < 0.5 * shadowed["stall"]
