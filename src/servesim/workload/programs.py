"""Agent programs: a DAG of LLM calls with tool calls between them, run closed loop.

A call is issued when all its parents have reached a terminal state, after its tool time.
With `inherit_context`, a call's prompt is its first parent's prompt + answer + new tokens and
its hash ids extend the parent's, so the parent's KV prefix can be reused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from servesim.workload.config import ProgramsConfig
from servesim.workload.prefix import HashIds
from servesim.workload.request import Request
from servesim.workload.sampling import int_spec_stream, think_time_stream


@dataclass(slots=True)
class CallSpec:
    """One call ready to be issued (the driver turns it into a Request)."""

    call_index: int
    arrival_s: float
    prompt_len: int
    output_len: int
    hash_ids: tuple[int, ...]
    parent_calls: tuple[int, ...]
    is_last: bool = False  # no call depends on this one (policies such as Continuum read it)


@dataclass(slots=True)
class ProgramState:
    """A running program: the request of each issued call and which calls are done."""

    program_id: int
    requests: dict[int, Request] = field(default_factory=dict)  # call index -> request
    done: set[int] = field(default_factory=set)
    outstanding: int = 0  # issued, not yet terminal; 0 with nothing new issued = program over


class ProgramPlanner:
    """Pure DAG bookkeeping; the driver owns request ids, limits and attributes."""

    def __init__(self, cfg: ProgramsConfig, lengths: Callable[[], tuple[int, int]], hashes: HashIds | None,
                 seed: np.random.SeedSequence, follow_lengths: Callable[[], tuple[int, int]] | None = None,
                 follow_hashes: HashIds | None = None):
        # Calls issued after a parent finishes draw lengths and ids from their own streams, so a
        # program's root calls do not depend on the simulation (`trace generate` writes them).
        self._cfg = cfg
        self._hashes = hashes
        self._follow_hashes = follow_hashes or hashes
        self._follow_lengths = follow_lengths or lengths
        rngs = [np.random.default_rng(s) for s in seed.spawn(3)]
        self._children = [[j for j, c in enumerate(cfg.calls) if i in c.parents] for i in range(len(cfg.calls))]
        self._tool_s = [think_time_stream(c.tool_s, cfg.tool_time_dist, rngs[0]) for c in cfg.calls]
        self._lengths = lengths
        # Per-call fixed/uniform overrides draw from their own streams (deterministic per call).
        self._prompt = [int_spec_stream(c.prompt_tokens, rngs[1]) if c.prompt_tokens is not None else None
                        for c in cfg.calls]
        self._output = [int_spec_stream(c.output_tokens, rngs[2]) if c.output_tokens is not None else None
                        for c in cfg.calls]

    def _sizes(self, index: int) -> tuple[int, int]:
        prompt, output = (self._follow_lengths if self._cfg.calls[index].parents else self._lengths)()
        p_override, o_override = self._prompt[index], self._output[index]
        return (next(p_override) if p_override else prompt), (next(o_override) if o_override else output)

    def roots(self, arrival_s: float, base_ids: tuple[int, ...], base_tokens: int) -> list[CallSpec]:
        """The calls without parents, issued at the program's arrival (base = shared prefix)."""
        out = []
        for i, call in enumerate(self._cfg.calls):
            if call.parents:
                continue
            new, output = self._sizes(i)
            prompt = base_tokens + new
            ids = self._hashes.extend(base_ids, prompt + output) if self._hashes else ()
            # Roots start with the program (their tool_s is ignored) so that open-loop starts stay in order.
            out.append(CallSpec(i, arrival_s, prompt, output, ids, (), not self._children[i]))
        return out

    def on_done(self, state: ProgramState, req: Request, now_s: float) -> list[CallSpec]:
        """Calls that become ready because `req` (call req.call_index) reached a terminal state."""
        state.done.add(req.call_index)
        state.outstanding -= 1
        ready = []
        for j in self._children[req.call_index]:
            parents = self._cfg.calls[j].parents
            if not all(p in state.done for p in parents):
                continue
            new, output = self._sizes(j)
            first = state.requests[parents[0]]
            if self._cfg.inherit_context:
                prompt = first.prompt_len + first.output_len + new
                ids = self._follow_hashes.extend(first.hash_ids, prompt + output) if self._follow_hashes else ()
            else:
                prompt = new
                ids = ()
            ready.append(CallSpec(j, now_s + next(self._tool_s[j]), prompt, output, ids, tuple(parents),
                                  not self._children[j]))
        return ready

