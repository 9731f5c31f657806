"""`Recorder.log_steps` (a speculative stretch's steps at once) logs exactly what `log_step`
one by one would, handing its buffer on at the same steps."""

from __future__ import annotations

import numpy as np

from servesim.metrics.recorder import STEP_COLUMNS, Recorder


def test_steps_logged_at_once_equal_steps_logged_one_by_one(monkeypatch):
    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 7)  # (the 20-step stretch crosses three hand-overs)
    ends = [0.5 + 0.01 * j + 1e-3 * (j % 3) for j in range(20)]
    emitted = [3 + j % 4 for j in range(20)]
    running = [4] * 12 + [3] * 8
    waiting = [2] * 5 + [3] * 15
    kv = [40 + j // 2 for j in range(20)]
    one, bulk = Recorder(), Recorder()
    for rec in (one, bulk):
        rec.log_step(0.0, 0.4, 64, 2, 2, 1, 30)  # (a step before: the stretch starts mid-buffer)
    start = 0.4
    for j in range(20):
        one.log_step(start, ends[j], 128 if j == 0 else 0, emitted[j], running[j], waiting[j], kv[j])
        start = ends[j]
    bulk.log_steps(0.4, ends, 128, emitted, running, waiting, kv)
    assert [b.num_steps for b in bulk._kept] == [b.num_steps for b in one._kept] == [7, 7, 7]  # (21 steps)
    a, b = one.step_log(100), bulk.step_log(100)
    for c in STEP_COLUMNS:
        assert getattr(a, c).dtype == getattr(b, c).dtype
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c))
    assert b.prefill_tokens.tolist()[:3] == [64, 128, 0] and b.output_tokens.tolist()[1:] == emitted


def test_prompt_tokens_per_step_logged_at_once(monkeypatch):
    """A prompt's chunks (a chunk stretch): `prefill_tokens` given per step."""
    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 7)
    ends = [0.1 * (j + 1) for j in range(10)]
    prefill = [500 - j for j in range(10)]
    one, bulk = Recorder(), Recorder()
    start = 0.0
    for j in range(10):
        one.log_step(start, ends[j], prefill[j], 12, 13, j // 4, 90 + j)
        start = ends[j]
    bulk.log_steps(0.0, ends, prefill, [12] * 10, [13] * 10, [j // 4 for j in range(10)], [90 + j for j in range(10)])
    a, b = one.step_log(100), bulk.step_log(100)
    for c in STEP_COLUMNS:
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c))
    assert b.prefill_tokens.tolist() == prefill and [x.num_steps for x in bulk._kept] == [7, 3]


def test_a_lone_stretch_logged_as_its_batch_runs_and_block_growth(monkeypatch):
    """`log_lone` (a stretch of one request) logs what `log_decode_steps` does with the batch and
    KV use spelled out: the same buffers, handed on at the same steps, the same step log."""
    from servesim.metrics.recorder import BatchRuns, BlockGrowth

    monkeypatch.setattr(Recorder, "CHUNK_STEPS", 50)
    general, lone = Recorder(), Recorder()
    start = 0.0
    # (k, first new block, waiting count, arrivals kept from these steps on): the third crosses a hand-over
    for k, f, waiting, kept in ((12, 3, 0, []), (1, 1, 2, []), (40, 0, 1, [2, 5, 40, 41]), (7, 9, 0, [0])):
        ends = np.array([start + 0.01 * (j + 1) + 1e-4 * (j % 3) for j in range(k)])
        used0 = 20 + k
        general.log_decode_steps(start, ends, BatchRuns([1], [k]), waiting, BlockGrowth(used0, [f], [k], 16, []),
                                 300 + k, [j for j in kept if j < k])
        lone.log_lone(start, ends, 300 + k, waiting, used0, f, 16, kept)
        start = float(ends[-1]) + 0.5
    assert lone.num_steps == general.num_steps == 60
    assert [b.num_steps for b in lone._kept] == [b.num_steps for b in general._kept] == [53]
    a, b = general.step_log(100), lone.step_log(100)
    for c in STEP_COLUMNS:
        assert getattr(a, c).dtype == getattr(b, c).dtype
        np.testing.assert_array_equal(getattr(a, c), getattr(b, c))
    assert b.num_waiting.tolist()[11:20] == [0, 2, 1, 1, 2, 2, 2, 3, 3]  # (one more from steps 2 and 5 of the third)
