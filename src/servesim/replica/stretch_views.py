"""What a fast-forwarded stretch shows at a time or a step, read-only (a mixin of `Stretch`).

The engine's step log and the replica's views read a stretch's steps without applying it:
requests and tokens in each step (`batch_runs`, `tokens_before`), the step in flight at a time
(`steps_before`, `step_in_flight`, `timer_step`), and its finishes in stepping's order
(`departure_order`) and as the routers count them (`finished_by`, `finished_until`). The
state they read is `Stretch`'s (`replica/stretch.py`); nothing here changes it but the caches of
two answers (the departure order `_order`, the routers' scan position `_fin`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from servesim.metrics.recorder import BatchRuns

_INF = float("inf")


class StretchViews:
    """Reads of a stretch's steps and finishes (`Stretch` holds the state)."""

    __slots__ = ()

    def departure_order(self) -> list[int]:
        """Indices of the requests in increasing order of remaining, then in the order the
        policy runs them (`rank`): stepping's order of the finishes of one step."""
        if self._order is None:
            self._order = sorted(range(len(self.remaining)), key=self.finish_key())
        return self._order

    def finish_key(self):
        """The sort key of request indices in finish order (`departure_order`)."""
        rem, rank = self.remaining, self.rank
        if rank is None:
            return rem.__getitem__
        n = len(rank)
        return lambda i: (rem[i], rank[i] if i < n else i)

    def departed(self, n: int) -> list:
        """The first `n` requests to leave (`finished_by`'s count), in departure order."""
        return [self.reqs[i] for i in self.departure_order()[:n]]

    @property
    def first_finish(self) -> int:
        """The smallest `remaining`: the stretch's steps before the first request's last token
        (with fewer steps nobody finished in it)."""
        return self._sorted_rem[0] if self.through else self.kmax

    def batch_runs(self) -> BatchRuns:
        """Requests in each step, run by run of a constant batch: all of them, less
        (`through`) those whose last token was an earlier step's."""
        if self.joins:
            return self._batch_runs_joined()
        k, n = self.k, len(self.reqs)
        rem = self._sorted_rem
        if not self.through or k <= rem[0]:  # nobody left before the last step
            return BatchRuns([n], [k])
        sizes: list[int] = []
        lens: list[int] = []
        j = p = 0
        while j < k:
            p = bisect_right(rem, j, p)
            # (every request gone, p = n: a chunk stretch's prompt runs on alone; a decode
            # stretch never gets there, j < kmax, the largest remaining)
            stop = k if p >= n or k < (r := rem[p]) else r
            sizes.append(n - p)
            lens.append(stop - j)
            j = stop
        return BatchRuns(sizes, lens)

    def batch_sizes(self) -> list[int]:
        """Requests in each step (`batch_runs` expanded)."""
        sizes, lens = self.batch_runs()
        return [size for size, m in zip(sizes, lens) for _ in range(m)]

    def prompt_tokens_before(self, j: int) -> int:
        """Prompt tokens computed by steps 0..j-1 (1 <= j < k) beyond what the requests show,
        as the views count them: a prompt finished in step 0 (or when joining) is left with one
        token to compute."""
        total = sum(n - 1 for _, n in self.prefills) + sum(n - 1 for s, _, n in self.joins if s < j)
        for s0, chunks, _, _ in self.prompt_runs:  # (chunks before the join step; the join counts them all after it)
            if s0 < j <= s0 + len(chunks):
                total += sum(chunks[:j - s0])
        return total

    def tokens_before(self, j: int) -> int:
        """Tokens emitted by steps 0..j-1 (j < k): each request runs min(remaining, j) of them
        (a request that joined at step s, from s on)."""
        total = sum(r if r < j else j for r in self.remaining)
        for s, _, _ in self.joins:  # (their steps before they joined were counted above)
            total -= s if s < j else j
        for s, stalled in self.stalls:  # (prompt-only steps: the requests running emitted nothing)
            if s < j:
                total -= stalled
        return total

    def stalled_before(self, k: int) -> tuple[list[int], list[int]]:
        """(the prompt-only steps before step k, the requests stalled in each): the step log's
        running requests that emit nothing there (`silent_at`, `silent_n`)."""
        stalls = [(s, n) for s, n in self.stalls if s < k]
        return [s for s, _ in stalls], [n for _, n in stalls]

    def active_at(self, j: int) -> int:
        """Requests running in step j (`through`: less those whose last token was earlier)."""
        return len(self._sorted_rem) - bisect_right(self._sorted_rem, j)

    def steps_before(self, t: float) -> int:
        """Steps that ended before `t` (events at `t` come before a step ending at `t`)."""
        return bisect_left(self._endv, t, 0, self.k)

    def step_in_flight(self, t: float) -> int:
        """The step running at `t` (the last one if `t` is at or after the end)."""
        return min(bisect_left(self._endv, t, 0, self.k), self.k - 1)

    def timer_step(self, t: float) -> int:
        """The step whose `schedule` fires a timer due at `t`: the first that starts at or
        after `t` (step j >= 1 starts at ends[j - 1]); k if none of the stretch's does."""
        return bisect_left(self._endv, t, 0, self.k - 1) + 1

    def finished_by(self, t: float) -> int:
        """How many requests emitted their last token in steps that ended before `t`
        (`finished_before(step_in_flight(t))`, read at every routing decision)."""
        return self.finished_until(t)[0]

    def finished_until(self, t: float) -> tuple[int, float]:
        """`finished_by(t)`, and up to when it stays that without a change here: the end of
        the next departure's last step, which counts from then on once it is a taken step and
        not the last (the stretch's end event processes that one); else never (inf). One call
        for the router's kept counts (`Replica.outstanding_until`)."""
        rem = self._sorted_rem
        if rem is None:
            return 0, _INF
        # request r's last token is step r - 1's: it counts if that step ended before t and is
        # not the stretch's last (the step in flight at or after its end). Departures in order
        # of r end in that order, so those that count are a prefix of `rem`. The routers read
        # at later and later times (at each arrival) while a busy stretch keeps up to dozens
        # that left, so the count goes on from the last one read (`_fin`) when one read shows
        # it still holds (its last request counts, so every one before it does: a cut, join or
        # stall since keeps `rem` sorted and the steps that ended before t); else (an earlier
        # t, a cut before that step) from none. Then a short scan (none or one at 8 replicas),
        # or a search past four.
        k, ends = self.k, self._endv
        n = self._fin
        if n and (n > len(rem) or (r := rem[n - 1]) >= k or ends[r - 1] >= t):
            n = 0
        last, scan = len(rem), n + 4
        while n < last:
            r = rem[n]
            if r >= k:
                break
            if (end := ends[r - 1]) >= t:
                self._fin = n
                return n, end
            n += 1
            if n == scan:
                n = bisect_left(rem, self.step_in_flight(t) + 1)
                self._fin = n
                if n < last and (r := rem[n]) < k:
                    return n, ends[r - 1]
                return n, _INF
        self._fin = n
        return n, _INF

    def finished_before(self, j: int) -> int:
        """How many requests emitted their last token in steps 0..j-1."""
        if not self.through:
            return 0
        return bisect_left(self._sorted_rem, j + 1)
