"""Andes's pending requests (waiting, then swapped) kept in density order between steps.

Andes values every pending request at every step (`AndesScheduler.densities`). A pending
request's output count and last token time do not change, so its density depends on the time
only through t = now - arrival, and with the default targets it is a constant for long spells:
Q_serve is exactly 1.0 while the expected length (t + horizon) / TDS_exp^-1 has not passed the
tokens it would be served within the horizon, and Q_wait is 1.0 or 0.0 by a threshold on t (no
token yet) or exactly 1.0 while the expected length has not passed the tokens it holds. Each
condition is monotone in `now`, so a request is either *static* (its density is that constant
until a boundary time, computed with a margin and re-checked exactly once reached) or
*dynamic* (a condition has failed for good: it is valued at every step, float for float as
`densities` does). Static requests stay in one sorted list, updated on change; the order read
by the scheduler is the merge of that list and the sorted dynamic ones, by (-density, place in
`list(waiting) + swapped`): the stable sort of the per-step valuation, so the same decisions. A
dynamic request is valued only once a bound of its density reaches the next one in that order
(most of the queue is never valued: the knapsack reads its head).

The slack percentile and mean weight need the pending requests' slack keys (arrival + TTFT_exp
+ n / TDS_exp, minus now) and weights: both constant while pending, kept sorted and summed.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from heapq import heappop, heappush
from itertools import count
from math import inf
from typing import Iterator

from servesim.workload.request import Request

WAITING, SWAPPED = 0, 1  # groups, in the order `list(waiting) + swapped`
DYNAMIC = "dynamic"


def keeps_pace(last_s: float, arrival_s: float, ttft: float, n: int, lat: float, tok_lat: float) -> bool:
    """Is Q_serve 1.0 by the request's pace (Andes' QoE)? Its last token (of `n`, at `last_s`)
    came before its TTFT target plus n token latencies `lat`, and the engine's token latency
    `tok_lat` meets its target's. (`AndesScheduler.densities` inlines it: its hot loop.)"""
    return last_s - arrival_s < ttft + n * lat and tok_lat <= lat


class PendingOrder:
    """Density order, slack keys and total weight of a scheduler's pending requests."""

    def __init__(self, sched) -> None:
        self.sched = sched
        self.static: list[tuple] = []  # (-density, group, place, request, weight), sorted
        # (-bound, group, place, request, weight), sorted: by decreasing bound of the density
        # (1 / weight, or lower: `_bound`, `_tighten`)
        self.dynamic: list[tuple] = []
        # request -> [group, place, weight, slack key, where, its entry in `dynamic`]
        self.info: dict[Request, list] = {}
        self.slack_keys: list[float] = []  # sorted
        self.total_weight = 0
        self.checks: list[tuple] = []  # heap of (time to re-check, seq, request, static entry)
        self._new: list[Request] = []  # added since the last `refresh`: not yet valued
        self._valued: list[tuple] = []  # (entry in `dynamic`, density, time) valued by `order` since `refresh`
        self._front, self._back, self._swapped = 0, 0, 0
        self._seq = count()

    def __len__(self) -> int:
        return len(self.info)

    # ---- membership ------------------------------------------------------------------
    def add(self, req: Request, group: int, front: bool = False) -> None:
        """`req` joined the waiting queue (at its back, or `front`) or the swapped list."""
        self.remove(req)
        if group == SWAPPED:
            self._swapped += 1
            place = self._swapped
        elif front:
            self._front -= 1
            place = self._front
        else:
            self._back += 1
            place = self._back
        s = self.sched
        arrival, ttft, tds, _ = s._qoe_of(req)
        n = req.num_output_tokens
        weight = round((req.prompt_len + n + 1) / s.kv.block_size + 0.5)  # `weight`
        key = arrival + ttft + n / tds  # `slack_s` + now
        self.info[req] = [group, place, weight, key, None, None]
        insort(self.slack_keys, key)
        self.total_weight += weight
        self._new.append(req)

    def remove(self, req: Request) -> None:
        info = self.info.pop(req, None)
        if info is None:
            return
        where = info[4]
        if where is DYNAMIC:
            del self.dynamic[bisect_left(self.dynamic, info[5])]
        elif where is not None:
            del self.static[bisect_left(self.static, where)]
        del self.slack_keys[bisect_left(self.slack_keys, info[3])]
        self.total_weight -= info[2]

    def clear(self) -> None:
        self.__init__(self.sched)

    # ---- valuation -------------------------------------------------------------------
    def refresh(self, now_s: float) -> None:
        """Value what was added, re-check the static requests whose boundary has come, and
        lower the bounds of the dynamic ones `order` valued."""
        info = self.info
        if self._valued:
            self._tighten()
        todo = [r for r in dict.fromkeys(self._new) if r in info and info[r][4] is None]
        self._new = []
        checks = self.checks
        while checks and checks[0][0] <= now_s:
            _, _, req, entry = heappop(checks)
            i = info.get(req)
            if i is not None and i[4] is entry:  # (else removed or re-valued since)
                del self.static[bisect_left(self.static, entry)]
                i[4] = None
                todo.append(req)
        for req in todo:
            self._place(req, info[req], now_s)

    def _place(self, req: Request, i: list, now_s: float) -> None:
        value = self._constant(req, i[2], now_s)
        if value is None:
            i[4] = DYNAMIC
            i[5] = (-self._bound(req, i[2]), i[0], i[1], req, i[2])
            insort(self.dynamic, i[5])
            return
        density, until_s = value
        entry = i[4] = (-density, i[0], i[1], req, i[2])
        insort(self.static, entry)
        if until_s < inf:
            heappush(self.checks, (until_s, next(self._seq), req, entry))

    def _bound(self, req: Request, weight: int) -> float:
        """A bound of the density of dynamic `req` while it is pending: 1 / weight (Q_serve <= 1,
        Q_wait >= 0); for one that has emitted n tokens, the last long enough ago that Q_serve
        is not 1.0 by its pace (a condition on constants while it waits), Q_serve - Q_wait with
        a = horizon / token latency is ((E - n)^2 - (E - n - a)^2) / E^2 where the expected length
        E passes n + a, at most a / (2n + a) (at E = 2n + a), and below that before (with a
        margin far above the float error of the terms)."""
        bound = 1.0 / weight
        n = req.num_output_tokens
        if n:
            s = self.sched
            last = s._last_token_s.get(req.id)
            arrival, ttft, _, lat = s._qoe_of(req)
            tok_lat = s.params.token_latency_s
            if last is not None and not keeps_pace(last, arrival, ttft, n, lat, tok_lat):
                a = s.params.horizon_s / tok_lat
                bound = min(bound, a / (2 * n + a) * (1.0 + 1e-9) / weight + 1e-12)
        return bound

    def _constant(self, req: Request, weight: int, now_s: float) -> tuple[float, float] | None:
        """(density, time before which it surely stays this) if `densities` gives `req` a
        value that is constant from `now_s` on for a while, else None (it varies for good)."""
        s = self.sched
        p = s.params
        horizon, tok_lat = p.horizon_s, p.token_latency_s
        arrival, ttft, _, lat = s._qoe_of(req)
        n = req.num_output_tokens
        t = now_s - arrival
        exp_len = (t + horizon) / lat
        bounds = []
        last = s._last_token_s.get(req.id)
        if n > 0 and last is None:
            return None  # its last token time reads as `now`: not constant
        if n > 0 and keeps_pace(last, arrival, ttft, n, lat, tok_lat):
            q_serve = 1.0
        elif exp_len <= n + horizon / tok_lat:
            q_serve = 1.0  # (E - min(n + ahead, E)) / E = 0: until E passes n + ahead
            bounds.append(arrival + (n + horizon / tok_lat) * lat - horizon)
        else:
            return None
        if n == 0:
            if t + horizon <= ttft:
                q_wait = 1.0
                bounds.append(arrival + ttft - horizon)
            else:
                q_wait = 0.0
        elif exp_len <= n:
            q_wait = 1.0  # until E passes n
            bounds.append(arrival + n * lat - horizon)
        else:
            return None
        until_s = min(bounds, default=inf)
        # margin far above the float error of the conditions (a few ulps of the times)
        until_s -= 1e-6 + 1e-9 * abs(until_s) if until_s < inf else 0.0
        return (q_serve - q_wait) * 1.0 / weight, until_s  # as `densities` (boost 1.0)

    # ---- reading ---------------------------------------------------------------------
    def order(self, now_s: float) -> Iterator[tuple]:
        """(-density, group, place, request, weight) of every pending request, densest first,
        ties in queue order; lazily, from a snapshot taken now (admissions while reading, or
        evictions, do not disturb it)."""
        if not self.dynamic:
            return iter(self.static.copy())
        return self._merge(self.static.copy(), self.dynamic.copy(), now_s)

    def _merge(self, static: list[tuple], dynamic: list[tuple], now_s: float) -> Iterator[tuple]:
        """A dynamic request is valued only when it could come next: its density is at most its
        bound (1 / weight: Q_serve <= 1, Q_wait >= 0, and rounding is monotone; lower where
        `_bound` and `_tighten` know more), so the requests are valued in order of their bounds,
        those whose bound reaches the next request's density together (a tie too: a request
        earlier in the queue may have exactly that density)."""
        densities, valued_now = self.sched.densities, self._valued
        valued: list[tuple] = []  # a heap of valued dynamic requests
        i = j = 0
        while True:
            s_head = static[i] if i < len(static) else None
            v_head = valued[0] if valued else None
            head = v_head if v_head is not None and (s_head is None or v_head < s_head) else s_head
            if j < len(dynamic) and (head is None or dynamic[j][0] <= head[0]):
                reach = head[0] if head is not None else dynamic[j][0]  # (nothing else: the first bound's)
                k = j + 1
                while k < len(dynamic) and dynamic[k][0] <= reach:
                    k += 1
                batch = dynamic[j:k]
                for d, e in zip(densities([e[3] for e in batch], now_s, False), batch):
                    heappush(valued, (-d, e[1], e[2], e[3], e[4]))
                    valued_now.append((e, d, now_s))
                j = k
                continue
            if head is None:
                return
            if head is v_head:
                heappop(valued)
            else:
                i += 1
            yield head

    def _tighten(self) -> None:
        """A request never served that waits with a varying density has Q_wait 0 or 1 (by a
        threshold on its waiting time, falling to 0 for good) and Q_serve falling with the
        time (the expected length grows, the tokens it would be served within the horizon do
        not): its density stays below Q_serve / weight as valued at any time before. That bound,
        from its last valuations (`order`'s), with a margin far above the float error of the
        terms, replaces 1 / weight; `order` then values it only when it may come next. (One
        that has emitted tokens keeps its `_bound`: its Q_serve - Q_wait may grow.)"""
        info, dynamic = self.info, self.dynamic
        qoe, horizon = self.sched._qoe, self.sched.params.horizon_s
        for e, d, t in self._valued:
            req = e[3]
            i = info.get(req)
            if i is None or i[5] is not e or req.num_output_tokens:
                continue  # (left, or re-placed, since; or not never served)
            arrival, ttft, _, _ = qoe[req]
            w = e[4]
            q_serve = d * w + (1.0 if t - arrival + horizon <= ttft else 0.0)  # (Q_wait then: 1, or 0 for good)
            bound = q_serve * (1.0 + 1e-9) / w + 1e-12
            if bound >= -e[0]:
                continue
            del dynamic[bisect_left(dynamic, e)]
            i[5] = (-bound, e[1], e[2], req, w)
            insort(dynamic, i[5])
        self._valued = []

    def kth_slack_key(self, k: int, running_keys: list[float]) -> float:
        """The k-th smallest (from 0) of the pending slack keys and sorted `running_keys`."""
        return sorted(self.slack_keys[:k + 1] + running_keys[:k + 1])[k]
