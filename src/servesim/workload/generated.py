"""Generated workloads: an arrival process starts 'units' (a request, a session or a program);
follow-ups (next turn, next agent call, a closed-loop user's next unit) come from
on_request_done. Owns request ids, the request/duration limits and per-unit attributes."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from servesim.workload.arrivals import RENEWAL_PROCESSES, open_loop_times, renewal_blocks
from servesim.workload.attributes import AttributeMix
from servesim.workload.config import WorkloadConfig
from servesim.workload.lengths import dataset_table, length_streams, row_blocks
from servesim.workload.prefix import FOLLOW_UP_IDS, HashIds
from servesim.workload.programs import CallSpec, ProgramPlanner, ProgramState
from servesim.workload.request import Request
from servesim.workload.sampling import int_spec_stream, think_time_stream
from servesim.workload.sessions import SessionPlanner


@dataclass(slots=True)
class _Unit:
    """One started request / session / program, tracked while it has requests in flight."""

    uid: int
    user: int | None  # closed-loop user, else None
    attrs: dict[str, Any]
    turns: int = 1  # sessions: planned number of turns
    program: ProgramState | None = None


class GeneratedWorkload:
    """See the module docstring. Random streams are spawned from `seed` in a fixed order."""

    def __init__(self, config: WorkloadConfig, seed: np.random.SeedSequence):
        self._cfg = config
        s_arr, s_len, s_attr, s_turns, s_think, s_prog, s_prefix = seed.spawn(7)
        self._arrival_rng = np.random.default_rng(s_arr)
        # requests that start a unit, then follow-ups (one dataset table read for both)
        table, length_rng = dataset_table(config.lengths), np.random.default_rng(s_len)
        self._length_pairs, follow_pairs = length_streams(
            config.lengths, [length_rng, np.random.default_rng(s_len.spawn(1)[0])], table)
        self._lengths, self._follow_lengths = self._length_pairs.__next__, follow_pairs.__next__
        self._attrs = AttributeMix(config.attributes, s_attr)
        self._limit = config.request_limit
        self._duration = config.duration_s
        self._emitted = 0
        self._uids = itertools.count()
        self._units: dict[int, _Unit] = {}  # request id -> unit (only when a follow-up may come)
        arrival = config.arrival
        self._closed = arrival.process == "closed"
        self._warmup = arrival.warmup_requests if self._closed else 0
        self._think_s = think_time_stream(arrival.think_time_s, arrival.think_time_dist, np.random.default_rng(s_think))
        need_hashes = config.sessions is not None or config.shared_prefix is not None or (
            config.programs is not None and config.programs.inherit_context)
        self._hashes = HashIds(config.hash_block_tokens) if need_hashes else None
        self._follow_hashes = HashIds(config.hash_block_tokens, FOLLOW_UP_IDS) if need_hashes else None
        self._prefix_groups: list[tuple[int, ...]] = []
        self._prefix_tokens = 0
        self._prefix_choice: Iterator[int] | None = None
        if config.shared_prefix is not None and self._hashes is not None:
            sp = config.shared_prefix
            self._prefix_tokens = sp.tokens
            self._prefix_groups = [self._hashes.fresh(sp.tokens // config.hash_block_tokens) for _ in range(sp.groups)]
            self._prefix_choice = int_spec_stream((0, sp.groups - 1), np.random.default_rng(s_prefix))
        self._sessions = None
        if config.sessions is not None:
            sc = config.sessions
            self._sessions = SessionPlanner(
                sc, int_spec_stream(sc.turns, np.random.default_rng(s_turns)),
                think_time_stream(sc.think_time_s, sc.think_time_dist, np.random.default_rng(s_turns.spawn(1)[0])),
                self._follow_lengths, self._hashes, self._follow_hashes)  # type: ignore[arg-type]
        self._programs = ProgramPlanner(config.programs, self._lengths, self._hashes, s_prog, self._follow_lengths,
                                        self._follow_hashes) if config.programs else None
        self._tracked = self._closed or self._sessions is not None or self._programs is not None
        self.closed_loop = self._tracked
        # Nothing drawn or kept per unit: requests are made a block of arrivals at a time.
        self._plain = (not self._tracked and self._prefix_choice is None and not self._attrs.active
                       and arrival.process in RENEWAL_PROCESSES)
        # A plain workload of a dataset's rows draws a block of them per block of arrivals: the
        # stream's draws, from its generator (only one of the two is read), as two lists
        self._row_block = row_blocks(*table, length_rng) if self._plain and table is not None else None
        self.expected_num_requests: int | None = self._limit
        self.skipped_rows = 0

    # ---- the Workload protocol ----

    def arrivals(self) -> Iterator[Request]:
        """Open-loop starts (closed loop: each user's first unit at time 0)."""
        return self._plain_arrivals() if self._plain else self._unit_arrivals()

    def _unit_arrivals(self) -> Iterator[Request]:
        if self._closed:
            users, ramp_s = self._cfg.arrival.users, self._cfg.arrival.ramp_up_s
            for user in range(users):
                first = self._start_unit(user * ramp_s / users, user, None)
                if not first:
                    return
                yield from first
            return
        for t, tenant in self._open_loop_starts():
            started = self._start_unit(t, None, tenant)
            if not started:
                return  # a limit was reached
            yield from started

    def _plain_arrivals(self) -> Iterator[Request]:
        """The requests `_start_unit` makes one by one when nothing is drawn or tracked per unit
        (same ids, times, lengths and draws), a block of arrival times at a time: `map` builds
        them from the block's columns, with no Python frame per request but the Request's own."""
        limit, duration = self._limit, self._duration
        block_tokens = self._cfg.hash_block_tokens
        first = 0
        for times in renewal_blocks(self._cfg.arrival, self._arrival_rng):
            late = times == math.inf  # (a rate curve that ends)
            if duration is not None:
                late |= times > duration
            stop = int(late.argmax()) if late.any() else len(times)
            if limit is not None:
                stop = min(stop, limit - first)
            if stop > 0:
                if self._row_block is not None:  # (a block of arrivals takes a block of rows, as the stream does)
                    prompts, outputs = self._row_block()
                    if stop < len(prompts):
                        del prompts[stop:], outputs[stop:]
                else:
                    prompts, outputs = zip(*itertools.islice(self._length_pairs, stop))
                yield from map(Request, range(first, first + stop), times[:stop].tolist(), prompts, outputs,
                               itertools.repeat(()), itertools.repeat(block_tokens))
                first += stop
            if stop < len(times) or first == limit:
                return

    def on_request_done(self, req: Request, now_s: float) -> list[Request]:
        unit = self._units.pop(req.id, None) if self._tracked else None
        if unit is None:
            return []
        follow: list[Request] = []
        if self._sessions is not None:
            nxt = self._sessions.next_turn(req, now_s, unit.turns)
            if nxt is not None:
                r = self._emit(unit, nxt.arrival_s, nxt.prompt_len, nxt.output_len, nxt.hash_ids)
                if r is not None:
                    r.session_id, r.turn = unit.uid, nxt.turn
                    if self._sessions.is_last(nxt.turn, unit.turns, nxt.prompt_len, nxt.output_len):
                        r.num_shared_hash_ids = _last_turn_shared(req.hash_ids)  # (no turn extends its ids)
                    follow.append(r)
        elif unit.program is not None and self._programs is not None:
            follow = self._issue_calls(unit, self._programs.on_done(unit.program, req, now_s))
            if unit.program.outstanding > 0:
                return follow
        if not follow and unit.user is not None:
            follow = self._start_unit(now_s + next(self._think_s), unit.user, None)
        return follow

    # ---- internals ----

    def _open_loop_starts(self) -> Iterator[tuple[float, str | None]]:
        arrival = self._cfg.arrival
        if arrival.process == "servegen":
            from servesim.workload.servegen import servegen_arrivals

            return servegen_arrivals(arrival, self._cfg.duration_s, self._arrival_rng)
        return ((t, None) for t in open_loop_times(arrival, self._arrival_rng))

    def _emit(self, unit: _Unit, arrival_s: float, prompt: int, output: int, ids: tuple[int, ...]) -> Request | None:
        if (self._limit is not None and self._emitted >= self._limit) or (
            self._duration is not None and arrival_s > self._duration):
            return None
        req = Request(self._emitted, arrival_s, prompt, output, ids, self._cfg.hash_block_tokens)
        if self._emitted < self._warmup:
            req.extra["warmup"] = True
        self._emitted += 1
        for key, value in unit.attrs.items():
            setattr(req, key, value)
        if self._tracked:
            self._units[req.id] = unit
        return req

    def _start_unit(self, t: float, user: int | None, tenant: str | None) -> list[Request]:
        attrs = self._attrs.draw() if self._attrs.active else {}
        if tenant is not None and "tenant" not in attrs:
            attrs["tenant"] = tenant
        unit = _Unit(next(self._uids), user, attrs)
        base_ids: tuple[int, ...] = ()
        if self._prefix_choice is not None:
            base_ids = self._prefix_groups[next(self._prefix_choice)]
        if self._programs is not None:
            unit.program = ProgramState(unit.uid)
            return self._issue_calls(unit, self._programs.roots(t, base_ids, self._prefix_tokens))
        prompt, output = self._lengths()
        prompt += self._prefix_tokens
        if self._sessions is not None:
            unit.turns = self._sessions.num_turns()
            ids = self._sessions.first_hash_ids(base_ids, prompt, output)
        else:
            ids = base_ids
        req = self._emit(unit, t, prompt, output, ids)
        if req is None:
            return []
        if self._sessions is not None:
            req.session_id = unit.uid
            if ids and self._sessions.is_last(0, unit.turns, prompt, output):  # (a session of one turn)
                req.num_shared_hash_ids = _last_turn_shared(base_ids)
        return [req]

    def _issue_calls(self, unit: _Unit, specs: list[CallSpec]) -> list[Request]:
        state = unit.program
        assert state is not None
        out = []
        for spec in specs:
            req = self._emit(unit, spec.arrival_s, spec.prompt_len, spec.output_len, spec.hash_ids)
            if req is None:
                continue
            req.program_id, req.call_index = unit.uid, spec.call_index
            req.parents = tuple(state.requests[p].id for p in spec.parent_calls)
            if spec.is_last:
                req.extra["last_call"] = True
            state.requests[spec.call_index] = req
            state.outstanding += 1
            out.append(req)
        return out


def _last_turn_shared(base: tuple[int, ...]) -> int:
    """`Request.num_shared_hash_ids` of a session's turn that no turn can follow
    (`SessionPlanner.is_last`), whose ids are `base` (its previous turn's whole context, or a first
    turn's shared prefix) and then a fresh range.

    Why: the fresh ids (the new message and the answer) come from a counter no other request
    draws from, and only a next turn would extend them; a session's turn count is drawn when it
    starts (`SessionPlanner.num_turns`), so its last turn is known when it is emitted. Its fresh
    ids' blocks can then be hit by no other request (by itself only after a preemption, which
    finds them as its own surviving blocks either way), as a replay's own ids
    (`replay.shared_counts`): under `Engine.shared_keys_only` they are plain blocks, never
    registered, probed, evicted from the index or dropped. At least 1, as the replay's counts
    (policies test a request for prefix keys). A last turn is known when it is emitted where
    `SessionPlanner.is_last` says so; a session that ends for what is drawn or done later (the
    context limit passed by the next message, a turn not finished, the request limit) keeps
    every id keyed."""
    return max(len(base), 1)
