"""How many requests a measured mean was taken over, read from the mean's decimals.

The file does not record a run's request count, but some campaigns' means give it away. AIPerf
times every request in whole nanoseconds and reports the mean TTFT in milliseconds, so the mean
of n requests is (a whole number of nanoseconds) / n: times the right n it is a whole number of
nanoseconds again, and times a wrong n almost never (a chance of about 1 in 10,000 at the
tolerance below, which only absorbs the float's last digit). A run that lost a few requests (an
error, a cancelled stream) averages over rounds x users less those.

The test is necessary, not sufficient, one row at a time: a divisor of the true count passes
when the nanosecond sum happens to divide by it, and every multiple passes. Over a campaign's rows
the true rounds per user pass in (nearly) every row and a divisor only in some, so
`campaign_rounds` takes the smallest count that the most rows pass, and only when more than half
the campaign's rows pass it. Means computed otherwise pass for no count (over float seconds) or
for every count (a mean written with 6 decimals or fewer: it carries no information and is not
read); such campaigns read as unknown.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter
from decimal import Decimal
from pathlib import Path

from servesim.validation.silicon_file import open_measured, parse_row

NS_PER_MS = 1_000_000
TOLERANCE_NS = Decimal("0.00005")  # a float of 16-17 significant digits, times a few thousand requests
ROUND_CANDIDATES = (1, 2, 4, 5, 8, 10, 16, 20, 25, 40, 50)  # the benchmark scripts' rounds per user and their divisors
MAX_MISSING = 7  # requests a run may have lost and still average over
MIN_SHARE = 0.5  # a campaign's rounds must be allowed by more than this share of its rows


def whole_ns(mean_ms: str, n: int) -> bool:
    """True when n requests of whole-nanosecond times can average to `mean_ms` (the file's text)."""
    total_ns = Decimal(mean_ms) * n * NS_PER_MS
    return abs(total_ns - total_ns.to_integral_value()) < TOLERANCE_NS


def rounds_read(mean_ms: str, users: int) -> frozenset[int]:
    """The rounds per user (ROUND_CANDIDATES) that one run's mean TTFT allows: k with a count of
    k x users, less up to MAX_MISSING lost requests, averaging to whole nanoseconds; none when
    the mean itself is whole nanoseconds (rounded: every count would pass)."""
    if whole_ns(mean_ms, 1):
        return frozenset()
    missing = range(min(MAX_MISSING, users - 1) + 1)
    return frozenset(k for k in ROUND_CANDIDATES if any(whole_ns(mean_ms, k * users - m) for m in missing))


def campaign_rounds(path: str | Path) -> dict[tuple[str, str, str], tuple[int, int, int]]:
    """Per (engine, system, version) of the aggregated rows: (rounds per user, rows that allow it,
    rows), the rounds being the smallest count the most rows allow; campaigns where no more than
    MIN_SHARE of the rows allow it are left out."""
    allowed: dict[tuple[str, str, str], Counter] = {}
    rows: Counter = Counter()
    with open_measured(path) as f:
        for raw in csv.DictReader(f):
            row = parse_row(raw)
            if row.mode != "agg" or row.concurrency < 1:
                continue
            key = (row.backend, row.system, row.version)
            rows[key] += 1
            allowed.setdefault(key, Counter()).update(rounds_read(raw["silicon_ttft_ms"].strip(), row.concurrency))
    result = {}
    for key, counts in allowed.items():
        if counts:
            rounds, agreeing = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            if agreeing > MIN_SHARE * rows[key]:
                result[key] = (rounds, agreeing, rows[key])
    return result


def main(argv: list[str]) -> None:
    """`python -m servesim.validation.request_count FILE`: the rounds per user each campaign's means record."""
    for (engine, system, version), (rounds, agreeing, total) in sorted(campaign_rounds(argv[0]).items()):
        print(f"{engine} {system} {version or '(no version)'}: {rounds} per user ({agreeing} of {total} rows)")


if __name__ == "__main__":
    main(sys.argv[1:])
