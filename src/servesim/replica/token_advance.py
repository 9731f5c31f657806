"""What a stretch's steps do to its requests: their computed and output tokens, their token-step
runs and first-token times, applied in bulk when the stretch is (`replica/fast_forward.py`,
admission and chunk stretches). Pure updates of the requests, the same as stepping one by one
leaves them (tests/replica/test_stretch_departures.py, tests/golden)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from servesim.workload.request import Request

if TYPE_CHECKING:
    from servesim.replica.kv_cache import KVCacheManager
    from servesim.replica.stretch import Stretch


def apply_step0_prompts(prefills: list, steps_of: Iterable[int], first: int, ends) -> int:
    """Advance the prompts (or recomputes) finished in a stretch's step 0, each then decoding
    for the rest of its `steps_of`; returns their prompt tokens, for the step log. (`ends`:
    the stretch's `ends_view`, whose items are Python floats.)"""
    prefill_tokens = 0
    for (req, n), m in zip(prefills, steps_of):
        prefill_tokens += n
        req.num_computed_tokens += n + m - 1
        req.num_output_tokens += m
        req.token_steps += (first, first + m - 1)
        if req.first_token_s is None:
            req.first_token_s = ends[0]
    return prefill_tokens


def apply_joins(st: Stretch, steps_of: list[int], first: int, frees: list[tuple[int, int]],
                blocks: list[int]) -> list[tuple[int, int]]:
    """Advance the requests that joined the stretch (`replica/stretch_join.py`, admission
    stretches): each computed its prompt in its join step s and emitted a token in each of its
    steps from s on. `blocks`, the blocks each took when it joined (its prompt's, or a
    policy's whole reservation: all it holds before the stretch's growth is granted), are
    logged as blocks in use from step s (a negative free); returns the (step, prompt tokens)
    of the join steps, for the step log."""
    k = st.k
    ends = st.ends_view  # (Python floats: no numpy scalar made per join)
    prefill_at: dict[int, int] = {}
    for (s, req, n), m_end, base in zip(st.joins, steps_of[len(steps_of) - len(st.joins):], blocks):
        if s >= k:  # (a crash settled the stretch before the step it joined in ended)
            continue
        m = m_end - s  # the steps it ran: s .. m_end - 1
        req.num_computed_tokens += n + m - 1
        req.num_output_tokens += m
        req.token_steps += (first + s, first + m_end - 1)
        if req.first_token_s is None:
            req.first_token_s = ends[s]
        prefill_at[s] = prefill_at.get(s, 0) + n
        frees.append((s, -base))
    return list(prefill_at.items())


def advance_decodes(decodes: list[Request], steps: Iterable[int], first: int) -> None:
    """Each decoding request emitted one token at the end of each of its next `steps` engine
    steps, from step `first` on (the hot loop of the engine)."""
    prev = first - 1
    for req, m in zip(decodes, steps):
        req.num_computed_tokens += m
        req.num_output_tokens += m
        runs = req.token_steps
        if runs[-1] == prev:
            runs[-1] = prev + m
        else:
            runs.append(first)
            runs.append(prev + m)


def advance_decodes_by(decodes: list[Request], m: int, first: int) -> None:
    """`advance_decodes` with the same `m` steps for every request (a stretch nobody left)."""
    prev, last = first - 1, first - 1 + m
    for req in decodes:
        req.num_computed_tokens += m
        req.num_output_tokens += m
        runs = req.token_steps
        if runs[-1] == prev:
            runs[-1] = last
        else:
            runs += (first, last)


def advance_decodes_step(decodes: list[Request], step: int, kv: KVCacheManager | None = None,
                         keyed: bool = False, in_order: bool = True) -> list[Request]:
    """`advance_decodes_by(decodes, 1, step)` for one stepped step, returning those that emitted
    their last token, in order: the engine's one pass over the batch where it took two. With
    `kv`, also tells it what its next allocation will find (`advance_and_tell`)."""
    if kv is not None:
        return advance_and_tell(decodes, step, kv, keyed, in_order)
    prev = step - 1
    finished = []
    for req in decodes:
        req.num_computed_tokens += 1
        n = req.num_output_tokens = req.num_output_tokens + 1
        runs = req.token_steps
        if runs[-1] == prev:
            runs[-1] = step
        else:
            runs += (step, step)
        if n >= req.output_len:
            finished.append(req)
    return finished


def advance_and_tell(decodes: list[Request], step: int, kv: KVCacheManager, keyed: bool = False,
                     in_order: bool = True) -> list[Request]:
    """`advance_decodes_step`, telling `kv` which of the decodes go on (all but those that
    finished) and which of those start a block with their next token (`edges`): in the next
    step's allocation only these may need a block, the others' tokens fall in blocks they hold
    (`KVCacheManager.expected`). `keyed` (each decode with its full keyed blocks registered:
    `Engine._told_kv`): those whose next token completes a block are edges too, the only ones
    that may register one. One look per request here saves the allocation's pass over
    the batch (a stepped step's largest cost under overload). A loop of its own: the edge test
    in `advance_decodes_step`'s, for batches not told, cost vllm mooncake 1 1 % of its instructions.
    Not `in_order` (a policy that sorts its batch again before the next allocation, Autellix's
    levels): told as the set of those going on that are not edges (`quiet_decodes`)."""
    prev, bs = step - 1, kv.block_size
    finished, edges = [], []
    # (two loops that differ in the edge test alone: one with a test of `keyed`'s offset per
    # decode took about 4 % more instructions at andes azure-conv-10x 1, a batch without keys)
    if keyed:
        for req in decodes:
            nc = req.num_computed_tokens = req.num_computed_tokens + 1
            n = req.num_output_tokens = req.num_output_tokens + 1
            runs = req.token_steps
            if runs[-1] == prev:
                runs[-1] = step
            else:
                runs += (step, step)
            if n >= req.output_len:
                finished.append(req)
            elif (nc + 1) % bs <= 1:  # (nc % bs is 0 or bs - 1)
                edges.append(req)
    else:
        for req in decodes:
            nc = req.num_computed_tokens = req.num_computed_tokens + 1
            n = req.num_output_tokens = req.num_output_tokens + 1
            runs = req.token_steps
            if runs[-1] == prev:
                runs[-1] = step
            else:
                runs += (step, step)
            if n >= req.output_len:
                finished.append(req)
            elif not nc % bs:
                edges.append(req)
    if len(finished) < len(decodes):  # (a copy: the engine adds the step's other finishes to its list)
        kv.expected = (decodes, tuple(finished), edges) if in_order else quiet_decodes(decodes, finished, edges)
    return finished


def quiet_decodes(decodes: list[Request], finished: list[Request], edges: list[Request]) -> set[Request]:
    """The decodes going on whose next token falls in a block they hold (none to grow or
    register): what a batch whose order changes is told (`KVCacheManager._allocate_decodes`
    passes over them in C, in whatever order the allocation lists them). Made in C too."""
    quiet = set(decodes)  # (requests hash by identity)
    quiet.difference_update(finished, edges)
    return quiet


def delivered_at(prefills: list, finished: list[Request], client_s: float, now_s: float) -> None:
    """The client sees a step's tokens at `client_s`: first tokens and finishes take that time
    (a first token made now has `first_token_s == now_s`: earlier ones are earlier)."""
    for req, _ in prefills:
        if req.first_token_s == now_s:
            req.first_token_s = client_s
    for req in finished:
        req.finish_s = client_s
