"""SGLang's admissions while `new_token_ratio` decays (`sglang_admits.py`, `admit_step`): above
its floor the running requests' reserve falls every decode step, so a held queue head fits some
steps later with nothing departing. The admission stretch takes its next boundary at the first
such step, where the head is admitted as a prompt-only step; the run (every request's tokens,
token steps and times, the step log) is stepping's, and those boundaries really happen."""

from __future__ import annotations

import pytest

from servesim.replica.schedulers.sglang import SGLangScheduler
from tests.factories import ToyPerf, assert_same_run
from tests.replica.test_admission_stretch import FIELDS, llama, overload, run  # noqa: F401  (fixture)

# Many running requests (thousands of blocks), so that the reserve the decay frees each step
# outgrows the decodes' tokens. The default 600-step decay leaves the ratio above its floor for
# most of these runs; 5,000
# steps keep it there throughout; conservativeness 2 starts it higher; `max_prefill_tokens` 250
# stops the adder at the prompt budget too. Every reserve is clipped (a long `max_model_len`).
DECAYING = [{}, {"new_token_ratio_decay_steps": 5000},
            {"schedule_conservativeness": 2.0, "new_token_ratio_decay_steps": 2000},
            {"max_prefill_tokens": 250}]


@pytest.fixture
def decay_boundaries(monkeypatch):
    """The boundaries `admit_step` took before the next departure: (steps the head stayed held
    after the first step asked, the ratio there above its floor, a retraction before it)."""
    taken, retracted = [], []
    admit_step, retract = SGLangScheduler.admit_step, SGLangScheduler._retract

    def counted_admit_step(self, st, s, kmax):
        j = admit_step(self, st, s, kmax)
        if j < kmax:
            taken.append((j - s, self._ratio_at(j) > self.min_ratio, bool(retracted)))
        return j

    def counted_retract(self, decoding, out):
        retracted.append(self.num_engine_steps)
        return retract(self, decoding, out)

    monkeypatch.setattr(SGLangScheduler, "admit_step", counted_admit_step)
    monkeypatch.setattr(SGLangScheduler, "_retract", counted_retract)
    return taken, retracted


def fast_and_stepped(seed: int, num_blocks: int, perf, params: dict, max_model_len: int = 131072, **kw):
    a_reqs, b_reqs = overload(seed, **kw), overload(seed, **kw)
    a = run(a_reqs, True, num_blocks, perf, "sglang", params, max_model_len=max_model_len)
    b = run(b_reqs, False, num_blocks, perf, "sglang", params, max_model_len=max_model_len)
    assert_same_run(a, b, a_reqs, b_reqs, num_blocks, FIELDS + ("token_steps",))
    assert b.num_finish_admissions == 0
    return a, a_reqs


@pytest.mark.parametrize("params", DECAYING)
@pytest.mark.parametrize("seed,num_blocks", [(1, 20000), (3, 8000), (4, 4000)])
@pytest.mark.parametrize("perf_name", ["toy", "llama"])
def test_held_head_admits_where_the_decaying_ratio_lets_it_in(params, seed, num_blocks, perf_name, llama,
                                                              decay_boundaries):
    taken, _ = decay_boundaries
    a, reqs = fast_and_stepped(seed, num_blocks, ToyPerf() if perf_name == "toy" else llama, params)
    print(params, seed, num_blocks, perf_name, max(k for k, _, _ in taken), len(taken), a.num_finish_admissions,
          a.num_fast_forwarded_steps / a.num_steps)
    above = [k for k, above_floor, _ in taken if above_floor]
    assert len(above) >= 10  # heads admitted inside stretches with the ratio above its floor, nothing departing
    if params.get("new_token_ratio_decay_steps", 600) < 5000:
        # ... some after several more decays held them (decaying over 5,000 steps the reserve
        # falls by less than the decodes' token a step: a head fits only at a departure, or at
        # the step after a prompt-only step, whose prompts reserve less once they run)
        assert any(k >= 2 for k in above)


def test_a_retraction_resets_the_ratio_and_decay_admissions_go_on(decay_boundaries):
    # Long outputs on 2,000 blocks, a slow decay: once the ratio is low enough the decodes run
    # out of memory and SGLang retracts, resetting the ratio from the survivors' progress (every
    # reserve still clipped: `max_model_len` leaves each request 4,096 tokens past its output);
    # the stretches after it admit on the reset ratio's decay.
    taken, retracted = decay_boundaries
    a, reqs = fast_and_stepped(2, 2000, ToyPerf(), {"new_token_ratio_decay_steps": 5000}, n=200, max_output=3000,
                               max_model_len=7400)
    print(len(retracted), len(taken), a.num_finish_admissions, a.num_fast_forwarded_steps / a.num_steps)
    assert len(retracted) >= 2
    assert sum(1 for _, above_floor, after in taken if above_floor and after) > 10
