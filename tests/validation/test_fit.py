"""The coordinate-descent fit of the serving constants (pure; exact on synthetic objectives)."""

from __future__ import annotations

import pytest

from servesim.validation.fit import Errors, coordinate_descent, spread_sample


def test_errors_score_is_weighted_median_abs():
    e = Errors(ttft=(-0.5, 0.1, 0.2), tpot=(0.3, -0.3, 0.0))
    assert e.score(1.0, 0.0) == pytest.approx(0.2)
    assert e.score(1.0, 2.0) == pytest.approx(0.2 + 0.6)
    assert Errors((), ()).score(1.0, 1.0) == float("inf")


def test_descent_finds_the_grid_optimum_one_constant_at_a_time():
    # simulated = value / truth: error 0 at a = 2 (x start 1) and b = 0.005 (absolute grid)
    def objective(v):
        return Errors(ttft=(v["a"] / 2.0 - 1.0,), tpot=(v["b"] / 0.005 - 1.0,))

    best, score = coordinate_descent({"a": 1.0, "b": 0.0}, {"a": (0.5, 1.0, 2.0, 3.0), "b": (0.0, 0.005, 0.01)},
                                     objective, weights=(1.0, 0.0), relative=True)
    assert best["a"] == 2.0 and score == 0.0
    best, score = coordinate_descent({"a": 1.0, "b": 0.0}, {"b": (0.0, 0.005, 0.01)}, objective,
                                     weights=(0.0, 1.0), relative=False)
    assert best == {"a": 1.0, "b": 0.005} and score == 0.0


def test_descent_caps_efficiencies_and_keeps_start_on_ties():
    calls = []

    def flat(v):
        calls.append(dict(v))
        return Errors((0.1,), (0.1,))

    best, _ = coordinate_descent({"eta_memory": 0.9}, {"eta_memory": (1.0, 1.2)}, flat, (1.0, 1.0), relative=True)
    assert best == {"eta_memory": 0.9}  # nothing better: the start stays
    assert {"eta_memory": 0.98} in calls  # 0.9 * 1.2 capped below the peak


def test_spread_sample_is_even_and_deterministic():
    assert spread_sample(list(range(10)), 3) == [0, 3, 6]
    assert spread_sample([1, 2], 5) == [1, 2]


def test_frontend_only_refit_changes_one_profile_and_never_worsens_it():
    from servesim.perf._catalog import catalogue
    from servesim.replica.frontend import FRONTEND_FILE
    from servesim.validation.calibrate import refit_frontends
    from servesim.validation.run import simulate_row
    from servesim.validation.silicon import DEFAULT_SILICON, ClientOptions, inexpressible_reason, read_rows

    rows = [r for r in read_rows(DEFAULT_SILICON) if inexpressible_reason(r) is None and r.backend == "vllm"
            and r.system == "h100_sxm" and r.concurrency == 4 and r.isl == 1024][:1]
    assert len(rows) == 1
    options = ClientOptions(min_requests=4)
    fitted = refit_frontends(rows, options, per_group=1)
    shipped = catalogue(FRONTEND_FILE)
    assert set(fitted) == set(shipped)
    assert all(fitted[n] == {k: float(shipped[n][k]) for k in fitted[n]} for n in fitted if n != "vllm@h100-sxm")

    def err(fe):
        return abs(simulate_row(rows[0], options, frontend=fe).ttft_error)

    before = {k: float(v) for k, v in shipped["vllm@h100-sxm"].items()}
    after, start = err(fitted["vllm@h100-sxm"]), err(before)
    assert after < start if fitted["vllm@h100-sxm"] != before else after == start  # moves only when strictly better


def test_frontend_refit_restricted_to_one_engine_keeps_the_others_as_shipped():
    from servesim.perf._catalog import catalogue
    from servesim.replica.frontend import FRONTEND_FILE
    from servesim.validation.calibrate import refit_frontends
    from servesim.validation.silicon import DEFAULT_SILICON, ClientOptions, inexpressible_reason, read_rows

    ok = [r for r in read_rows(DEFAULT_SILICON) if inexpressible_reason(r) is None and r.system == "h100_sxm"
          and r.concurrency <= 8 and r.osl <= 1024]
    rows = [next(r for r in ok if r.backend == "vllm"), next(r for r in ok if r.backend == "trtllm")]
    logged = []
    fitted = refit_frontends(rows, ClientOptions(min_requests=4), per_group=1, log=logged.append, engines=("trtllm",))
    shipped = catalogue(FRONTEND_FILE)
    assert all(fitted[n] == {k: float(shipped[n][k]) for k in fitted[n]} for n in fitted if n != "trtllm@h100-sxm")
    assert len(logged) == 1 and logged[0].startswith("stage 4 trtllm@h100-sxm")  # the vllm row was not fitted


def test_cli_refuses_an_unknown_engine_to_refit(tmp_path):
    from typer.testing import CliRunner

    from servesim.cli import app

    res = CliRunner().invoke(app, ["validate", "--fit-output", str(tmp_path), "--frontend-only", "--engine", "tgi"])
    assert res.exit_code == 2
    assert "--engine 'tgi' is not a measured engine; allowed: sglang, trtllm, vllm" in res.output
    assert not list(tmp_path.iterdir())
