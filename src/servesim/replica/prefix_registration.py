"""Registration in the prefix index (`PrefixIndex`, prefix_index.py): key runs entering and leaving it.

A request that computes keyed blocks registers them (`register`, or `register_appends` for a
stretch's or a step's decodes at once); a group whose blocks are all evicted stays indexed, a
dead group for a next turn to take back (`retire`), until the dead groups' capacity drops it
from the index (`drop`); `conflicts` tells the engine whether registering many requests in bulk
would differ from registering them step by step. These are the index's writes and their preconditions,
apart from the lookups in prefix_index.py (which only read it), and the usual cases here are
decided on runs (`_runs_from`: by diagonal for ids that are ranges, in C on run keys for the
others) with a search by position only when they fail. A
mixin: they share the index (its record by diagonal, prefix_diagonals.py) and `PrefixIndex.extents`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Hashable, Sequence

from servesim.replica.block_keys import BlockKeys, run_values, runs_of
from servesim.replica.copies import add_copies, has_copy
from servesim.replica.plan_runs import PlanRuns
from servesim.replica.prefix_diagonals import DiagonalRecord, diagonal_pieces
from servesim.replica.prefix_groups import NO_STAMP, ONE, Group
from servesim.workload.prefix import IdRanges

if TYPE_CHECKING:
    from servesim.replica.prefix_index import Held


class PrefixRegistration(DiagonalRecord):
    """`PrefixIndex`'s registration, dropping and conflict checks (see the module docstring).
    Every key enters the index through the record by diagonal (`_insert`) and leaves it through
    `_forget`; reads go through `_group_at`, `_groups` and `_absent` (prefix_diagonals.py)."""

    num_inserts: int  # calls that added keys to the index (a plan of `plan_appends` is valid while unchanged)
    _unindexed: tuple | None  # (keys, k0, k1, num_inserts, `_dead_lead`'s answer, the runs) of `unindexed`'s last True answer
    _dead: dict[Group, int]  # (`retire`)
    _num_dead: int
    dead_capacity: int
    num_taken_back: int
    _dead_lead: Any  # `PrefixIndex._dead_lead`

    def unindexed(self, keys: Sequence, k0: int, k1: int) -> Sequence | None:
        """The runs of positions [k0, k1) of `keys` (`_runs_from`) if none is indexed, or
        those indexed are a dead group's (`_dead_lead`: a context evicted whole, whose keys stay
        indexed, `retire`), else None. The answer holds until a key enters the index or the
        group is taken back (drops only remove keys), so `_register_new` of the same positions
        does not look them up again (a next turn joining a stretch is checked before its
        admission registers them: keyed_join.py)."""
        runs = _runs_from(keys, k0, k1)
        if runs is None:
            return None
        lead = None
        i0 = k0 // keys.starts.step
        if not self._absent(keys, runs, i0, i0 + len(runs)) and (
                k0 % keys.starts.step or (lead := self._dead_lead(keys, runs, k0, k1)) is None or lead[0].num_cached):
            return None  # (a live group's evicted slots: indexed, as they always were)
        self._unindexed = (keys, k0, k1, self.num_inserts, lead, runs)
        return runs

    def register(self, keys: Sequence, held: Held, k0: int, k1: int) -> None:
        """`held` computes keys [k0, k1): each key not cached gets a block held once; the
        positions already cached become `held.dups`. New runs go into the group `held` last
        registered into if it ends at their start (a prefix stays one group), else a new one."""
        if self._register_new(keys, held, k0, k1):
            return
        for g, p0, p1, i, j in self.extents(keys, k0, k1):
            if g is None:
                last = held.segs[-1][0] if held.segs else None
                g = last if last is not None and last.hi == p0 else Group(p0)
                self.num_inserts += 1
                self._insert(keys, runs_of(keys)[0][i:j], i, j, g)
            dups = g.register(p0, p1)
            if dups:
                held.dups = add_copies(held.dups, dups)
            held.add(g, p0, p1)

    def _register_new(self, keys: Sequence, held: Held, k0: int, k1: int) -> bool:
        """`register` in the usual case (a prefill chunk or a decode completes blocks of the
        request's own), without the search: the runs from k0 on are not indexed, except the
        first when k0 is inside it and `held` registered its first part into its last group,
        which ends at k0. Then no key is cached and every new one goes to that group (or a new
        one if `held`'s last group does not end at k0). Or the leading runs are a group's whose
        slots there are not cached (`_dead_lead`: a dead group, a next turn's context evicted
        whole): those slots are filled again and the new runs appended to that group. False
        (nothing done) otherwise."""
        u = self._unindexed
        if u is not None and u[0] is keys and u[1] == k0 and u[2] == k1 and u[3] == self.num_inserts:
            runs = u[5]  # (the same slice of the keys' list, which stays as it is while they are held)
        else:
            u = None
            runs = _runs_from(keys, k0, k1)
            if runs is None:
                return False
        segs = held.segs
        seg = segs[-1] if segs else None
        g = seg[0] if seg is not None and seg[0].lo + len(seg[0].ref) == k0 else None
        i1 = -(-k1 // keys.starts.step)  # (the runs from i0 to i1 are new, if any)
        if k0 % keys.starts.step:  # inside a run: held's last group must hold its first part
            if g is None or self._group_at(keys, k0 // keys.starts.step) is not g:
                return False
            runs = runs[1:]
        i0 = i1 - len(runs)
        if u is not None and (u[4] is None or (self._group_at(keys, i0) is u[4][0] and not u[4][0].num_cached)):  # (still dead)
            lead = u[4]
        elif self._absent(keys, runs, i0, i1):
            lead = None
        elif k0 % keys.starts.step or (lead := self._dead_lead(keys, runs, k0, k1)) is None:
            return False
        if lead is not None:  # a group's slots not cached, whose keys are indexed: filled again, the rest appended
            g, e, m = lead
            i, j = k0 - g.lo, e - g.lo
            dead = not g.num_cached
            if dead or k1 > e:
                # (as an insert: plans and answers made before are void, as they are where the group
                # was dropped at its eviction and its keys enter the index again; a live group's
                # evicted slots filled again void nothing, as `register`'s search by position)
                self.num_inserts += 1
            g.ref[i:j] = ONE * (j - i)  # (their stamps are 0: evicted)
            g.num_cached += j - i
            self.num_taken_back += 1
            if dead and j < len(g.ref) and g.num_runs == len(g.ref):
                # A dead group filled in part (a prompt's first chunk): its keys past the part leave
                # the index, as its drop at the eviction would have taken them, so that the later
                # chunks register as new keys (a stretch's plan, `plan_appends`, takes only keys not
                # indexed). (A key per slot: the group's runs are its slots' keys in order.)
                self._forget(g, g.num_runs - j)
                del g.ref[j:], g.stamp[j:]
            if k1 > e:
                runs = runs[m:]
                self._insert(keys, runs, i1 - len(runs), i1, g)
                g.append_held(k1 - e)
            held.add(g, k0, k1)
            return True
        if g is None:
            g = Group(k0)
            segs.append([g, k0, k1])
        elif seg[2] == k0:
            seg[2] = k1
        else:
            segs.append([g, k0, k1])
        self.num_inserts += 1
        self._insert(keys, runs, i0, i1, g)
        g.append_held(k1 - k0)
        return True

    def register_appends(self, items: list[tuple[Sequence, Held, int, int]]) -> bool:
        """`register(keys, held, k0, k1)` for each item, in order, then `held.num_keyed = k1`
        (its blocks [k0, k1) were plain), when every one is the usual case of `_register_new`
        and none can affect another (`plan_appends`); False, nothing done, otherwise."""
        planned = self.plan_appends(items)
        if planned is None:
            return False
        self.apply_appends(planned)
        return True

    def plan_appends(self, items: list[tuple[Sequence, Held, int, int]], base: tuple | None = None) -> tuple | None:
        """The checks of `register_appends(items)`, and what it would do: none of the items'
        new runs is indexed or listed twice, no two extend the same group, and a request
        holding unregistered copies (`dups`: its context computed again without a lookup, as
        `vtc`, `sarathi`, `orca` do) extends a group only where its last block there is its
        own. Then every group extended holds a block of its request, so
        no pop of the free queue can drop it, and these registrations give the same state
        before or after pops (a stretch's or a step's decodes: one call for all). The plan
        stays valid while no key enters the index (`num_inserts` unchanged: drops only remove
        keys) and the requests' keyed blocks do not change; None if a check fails.

        `base`: a plan still valid, of other requests, that this one extends (in place: it is
        not valid on its own any more): the items are checked against its runs and groups
        rather than all planned again (a request joining a stretch, `replica/keyed_join.py`)."""
        # (per item: what it registers; every run of the plan, by diagonal or as a set; the groups extended)
        plan, seen, groups = ([], None, set()) if base is None else base
        # (the plan's runs by diagonal while every item's ids are ranges of one run length, plan_runs.py)
        # (while keys are recorded by diagonal: with none recorded, a trace's or Mooncake's, the set)
        rec = (PlanRuns(self._run_len) if self._diags else None) if base is None else seen if type(seen) is PlanRuns else None
        fresh: set = set()  # these items' runs, as a set (without `rec`)
        num_runs = 0
        for keys, held, k0, k1 in items:
            if type(keys) is not BlockKeys:
                return None
            starts = keys.starts
            if type(starts) is not range:
                return None
            r = starts.step
            segs = held.segs
            seg = segs[-1] if segs else None
            g = seg[0] if seg is not None and seg[0].lo + len(seg[0].ref) == k0 else None
            runs = _runs_from(keys, k0, k1)
            if k0 % r:  # inside a run: held's last group must hold its first part
                if g is None or self._group_at(keys, k0 // r) is not g:
                    return None
                runs = runs[1:]
            if g is None:
                g = Group(k0)  # (nothing refers to it unless the plan is applied)
                seg = None
            elif g in groups:
                return None
            elif held.dups is not None and has_copy(held.dups, seg[2] - 1):
                return None  # (g may hold no block of this request: pops could drop it first)
            else:
                groups.add(g)
            i1 = -(-k1 // r)
            i0 = i1 - len(runs)
            pieces = None  # (the runs' pieces by diagonal, found once for the plan, the index and `_insert`)
            if rec is not None:
                ids = rec.takes(keys)
                if ids is None:  # (the plan's runs as a set from here on, those planned so far included)
                    prior = [run_values(item[7], item[5]) for item in plan]
                    fresh = set().union(*prior)
                    num_runs = sum(map(len, prior))
                    seen = rec = None
                elif not rec.add(pieces := diagonal_pieces(ids, i0, i1)):
                    return None  # (a run listed twice)
            if rec is None:
                fresh.update(run_values(keys, runs))
                num_runs += len(runs)
            if not (self._absent(keys, runs, i0, i1) if pieces is None else self._absent_on(pieces, runs, keys)):
                return None  # (a run indexed)
            plan.append((held, g, seg, k0, k1, runs, r, keys, pieces))
        if rec is not None:
            return plan, rec, groups
        if len(fresh) != num_runs:
            return None  # (a run listed twice)
        if seen is None:
            seen = fresh
        elif seen.isdisjoint(fresh):
            seen |= fresh
        else:
            return None
        return plan, seen, groups

    def apply_appends(self, planned: tuple) -> None:
        """Carry out a plan of `plan_appends` or `trim_appends` (still valid: see there)."""
        self.num_inserts += 1
        for held, g, seg, k0, k1, runs, r, keys, pieces in planned[0]:
            if runs:  # (none: blocks inside the request's last run, indexed already)
                i1 = -(-k1 // r)
                self._insert(keys, runs, i1 - len(runs), i1, g, pieces)
            n = k1 - k0
            if seg is not None and seg[2] == k0:
                seg[2] = k1
            else:  # (a new group, or held's last segment of g ends before k0)
                held.segs.append([g, k0, k1])
            g.ref += ONE * n  # (`Group.append_held`, inline: one call less per request)
            g.stamp += NO_STAMP * n
            g.num_cached += n
            held.num_keyed = k1
            held.num_plain -= n

    @staticmethod
    def trim_appends(planned: tuple, ends: list[int]) -> tuple:
        """A plan of `plan_appends` with item i registering keys up to `ends[i]` at most (a
        stretch cut short registers what its steps so far complete): still valid, as fewer
        new runs can meet nothing the whole ones did not. (Only for `apply_appends`: it keeps
        no set of its runs.)"""
        plan = []
        for item, e in zip(planned[0], ends):
            held, g, seg, k0, k1, runs, r, keys, pieces = item
            if e < k1:
                if e <= k0:
                    continue
                cut = -(-k1 // r) + e // -r  # (runs past e's last run: ceil(k1/r) - ceil(e/r))
                if cut:  # (fewer runs: `_insert` finds their pieces)
                    item = (held, g, seg, k0, e, runs[:len(runs) - cut], r, keys, None)
                else:
                    item = (held, g, seg, k0, e, runs, r, keys, pieces)
            plan.append(item)
        return plan, None, None

    def retire(self, group: Group) -> None:
        """The free queue evicted the group's last cached block. Its keys stay indexed (a dead
        group) while the dead groups' keys are at most `dead_capacity`, the oldest dead dropped
        first: a conversation's context evicted during its think time is then registered again
        by its next turn into the same group, its keys neither popped nor inserted again. Exact
        since a key indexed to a slot that is not cached answers every lookup as a key not
        indexed (no hit), as a live group's evicted slots always did."""
        if not self.dead_capacity or group.num_runs != len(group.ref):
            # (kept only with a key per block, a generated workload's: with runs of many blocks, a
            # Mooncake trace's 512-token hash blocks, keys kept indexed refused a join of vllm
            # mooncake at 1 replica, 2 steps of 107,236 stepped more, and next turns are few)
            self.drop(group)
            return
        dead = self._dead
        if group in dead:  # (died before, taken back by a next turn, and died again)
            self._num_dead -= dead.pop(group)
        n = dead[group] = group.num_runs
        self._num_dead += n
        while self._num_dead > self.dead_capacity:
            g = next(iter(dead))
            self._num_dead -= dead.pop(g)
            if not g.num_cached:  # (still dead: not taken back since)
                self.drop(g)

    def drop(self, group: Group) -> None:
        """A group with no cached block leaves the index (it may still be someone's extent).
        Its runs are exactly the keys indexed to it (a key is indexed only when absent, to the
        group whose runs then list it, and leaves only here; `test_kv_cache_equivalence.py`
        asserts it after every operation), so its pieces by diagonal leave their diagonals and
        its other keys are popped from the dict without looking at the owners (`_forget`)."""
        if group.num_runs:
            self._forget(group, group.num_runs)

    def conflicts(self, ranges: list[tuple[Sequence, int, int]]) -> bool:
        """Would registering keys [p0, p1) of each (keys, p0, p1) meet a cached key, or a key
        that an earlier one registers too? (`KVCacheManager.keys_conflict_many`)"""
        pending: list = []
        inside: list = []  # first runs of ranges starting inside a run indexed already
        # (none of `pending` indexed so far, told range by range while keys are recorded by
        # diagonal; else None: the dict probed for all of them at once, below)
        absent = True if self._diags else None
        for keys, p0, p1 in ranges:
            if type(keys) is not BlockKeys or type(keys.starts) is not range:
                return self._conflicts(ranges)
            r = keys.starts.step
            lst = keys.run_keys._list
            if lst is None:
                lst = keys.run_keys.as_list()
            i0 = p0 // r
            runs = lst[p0:p1] if r == 1 else lst[i0:-(-p1 // r)]  # (`_runs_from`, inline)
            if p0 % r and (g := self._group_at(keys, i0)) is not None:
                # (a decode inside the last run of a Mooncake prompt: the run is indexed to
                # the request's group, whose later slots are not cached, unless someone else's)
                if g.any_cached(p0, min(p1, p0 - p0 % r + r)):
                    return self._conflicts(ranges)
                inside.append(runs[0])
                runs = runs[1:]
                i0 += 1
            pending += runs
            if absent:
                absent = self._absent(keys, runs, i0, i0 + len(runs))
        # The usual case: no other run to register is indexed (so none of its blocks is
        # cached) and no run is registered twice. Otherwise the exact search below.
        every = pending + inside if inside else pending
        if absent is None:
            absent = not self._index or self._index.keys().isdisjoint(pending)
        if absent and len(set(every)) == len(every):
            return False
        return self._conflicts(ranges)

    def _conflicts(self, ranges: list[tuple[Sequence, int, int]]) -> bool:
        """`conflicts`, position by position where runs are shared."""
        seen: dict[Hashable, Any] = {}  # run key -> positions (a, b) to register, or a list of them
        for keys, p0, p1 in ranges:
            exts = self.extents(keys, p0, p1)
            if any(g is not None and g.any_cached(q0, q1) for g, q0, q1, _, _ in exts):
                return True
            run_keys, starts, ends = runs_of(keys)
            i, j = exts[0][3], exts[-1][4]
            if j - i == 1:
                spans = [(p0, p1)]
            else:
                spans = list(zip(starts[i:j], ends[i:j]))
                spans[0] = (p0, spans[0][1])
                spans[-1] = (spans[-1][0], p1)
            rks = run_keys[i:j]
            if seen.keys().isdisjoint(rks):  # the usual case: no run shared so far
                seen.update(zip(rks, spans))
                continue
            for rk, (a, b) in zip(rks, spans):
                prev = seen.get(rk)
                prev = [] if prev is None else [prev] if type(prev) is tuple else prev
                if any(x < b and a < y for x, y in prev):
                    return True
                seen[rk] = prev + [(a, b)]
        return False


def _runs_from(keys: Sequence, p0: int, p1: int) -> Sequence | None:
    """The runs of positions [p0, p1), from the run holding p0, if `keys` is a `BlockKeys` with
    runs of equal length, else None: their run keys, or for ids that are ranges (a generated
    conversation's) the range of the runs' indices, their keys not built (the index reads such
    keys by diagonal; `run_values` gives them where they are read one by one)."""
    if type(keys) is not BlockKeys:
        return None
    starts = keys.starts
    if type(starts) is not range:
        return None
    r = starts.step
    ids = keys._ids
    if type(ids) is IdRanges:
        e = -(-p1 // r)
        return range(p0 // r, e if e < ids.bounds[-1] else ids.bounds[-1])
    return keys.run_keys.as_list()[p0 // r:-(-p1 // r)]
