"""The policies' per-step passes over a long running batch (`batch_passes.py`) return
exactly what the per-request expressions they replace returned."""

from __future__ import annotations

import random

from servesim.replica.schedulers.batch_passes import (
    _ARRAY_MIN_RUNNING, CLIP_MAX_NEW_TOKENS, decoding_requests, reserved_tokens,
)
from tests.factories import make_request


def _running(rng: random.Random, n: int):
    reqs = []
    for i in range(n):
        prompt = rng.choice([1, 7, 300, 2000, 9000])
        r = make_request(i, prompt, rng.choice([1, 50, 5000]),
                         max_tokens=rng.choice([None, 0, 1, 64, 3000, 10000]))
        r.num_output_tokens = rng.choice([0, 1, 2, 40, 4000, 9000])
        # decoding (only the last token left), mid-prompt, or every token computed
        r.num_computed_tokens = max(r.num_tokens - rng.choice([1, 1, 1, 2, 100]), 0)
        reqs.append(r)
    return reqs


def _per_request(running, ratio, max_len):
    return sum([min(max((r.max_tokens or max_len - r.prompt_len) - r.num_output_tokens, 0),
                    CLIP_MAX_NEW_TOKENS) * ratio for r in running])


def test_reserve_is_bit_identical_to_the_per_request_sum():
    rng = random.Random(7)
    arrays = 0
    for _ in range(300):
        n = rng.choice([0, 1, 5, _ARRAY_MIN_RUNNING - 1, _ARRAY_MIN_RUNNING, 100, 400])
        running = _running(rng, n)
        ratio = rng.choice([0.7, 0.098, 1.0, rng.random()])
        max_len = rng.choice([4096, 131072])
        got, want = reserved_tokens(running, ratio, max_len), _per_request(running, ratio, max_len)
        assert type(got) is type(want) and got == want
        if isinstance(want, float):
            assert got.hex() == want.hex()
        arrays += n >= _ARRAY_MIN_RUNNING
    assert arrays > 100  # the numpy form ran, on batches of every kind of request


def test_decoding_requests_is_is_decoding():
    rng = random.Random(3)
    running = _running(rng, 500)
    got = decoding_requests(running)
    assert got == [r for r in running if r.is_decoding]
    assert 0 < len(got) < len(running)


def test_trtllm_reserved_is_the_per_request_sum():
    from tests.factories import make_engine

    _, sched, kv, *_ = make_engine(num_blocks=200_000, scheduler="trtllm")
    running = _running(random.Random(5), 200)
    for r in running[::2]:  # half hold blocks for their computed tokens
        assert kv.allocate_slots(r, 1 + r.id % 40)
    want = sum(sched.total_blocks(r) - kv.num_blocks_of(r.id) for r in running)
    assert sched._reserved(running) == want
    assert any(r.max_tokens and r.max_tokens > r.output_len for r in running)  # both sides of the max
    assert any(r.max_tokens and r.max_tokens < r.output_len for r in running)
