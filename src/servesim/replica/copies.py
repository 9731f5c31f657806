"""A request's unregistered copies of cached blocks (`Held.dups`), as ranges of positions.

A policy that computes a cached context again without looking up its hits (`sarathi`, `vtc`,
`orca`) holds copies of the cached blocks it registers over (`Group.register`); nearly every
Mooncake request of those policies holds some, one range of about 44 positions (its first
hash block or two, shared with another prompt's group). As a set of positions they cost a
pass over every position at each free (the span, the intersection with each segment, the
sort); as the ranges they form, a pass over one or two ranges.

`dups` is None or a list of (first, end) ranges, ascending, disjoint and never adjacent (two
ranges that touch are merged), so that the ranges within a segment are exactly the runs of
consecutive copies that the free queue takes as one plain entry each (`kv_release.py`).
"""

from __future__ import annotations


def add_copies(dups: list[tuple[int, int]] | None, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """`dups` with the positions of `ranges` added (a new list; neither argument changes)."""
    if not dups and len(ranges) == 1:
        return list(ranges)
    out: list[tuple[int, int]] = []
    for a, b in sorted([*(dups or ()), *ranges]):
        if out and a <= out[-1][1]:  # overlapping or adjacent: one range
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def has_copy(dups: list[tuple[int, int]] | None, p: int) -> bool:
    """Is position `p` a copy?"""
    if dups is not None:
        for a, b in dups:  # (a loop, not any() of a generator: asked once per request a stretch plans)
            if a <= p < b:
                return True
    return False


def copies_within(dups: list[tuple[int, int]], p0: int, p1: int) -> list[tuple[int, int]]:
    """The copies' ranges clipped to positions [p0, p1), ascending (empty if none)."""
    return [(a if a > p0 else p0, b if b < p1 else p1) for a, b in dups if a < p1 and p0 < b]
