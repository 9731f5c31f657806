"""The benchmark client of the silicon rows: how it is played (`ClientOptions`) and how many
requests each row sends (`RequestCounts`): warm-up, measured, then the unmeasured trailing round.

Why a trailing round. AIConfigurator's benchmark script (its generator's
`backend_templates/benchmark/bench_run.sh.j2`) runs `aiperf profile --num-requests c x
BENCH_MULTI_ROUND` (50 in the current template, 20 in the earlier one) at concurrency c, so the
measured requests are 20-50 rounds per user and only the last of them (2-5 %) decodes while no
other user sends a new prompt. servesim measures 4 rounds per user (fewer rounds, because more
dilute the first wave that the measured TTFTs show; docs/fidelity.md), and a run that stopped
there would make a quarter of the measured requests such a last round: their decodes would see
only the prompts of the users still in the same round, not the re-arrivals the real run keeps
sending. So each user sends `trailing_rounds` more requests after its measured ones; they load
the engine like the benchmark's later rounds and are left out of the means. A trailing request is
sent only when its user's last measured request has finished, so it can delay another user's
measured prompt only where that user is a whole round behind, as in the real run's later rounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ClientOptions:
    """How the closed-loop benchmark client is played for every row."""

    requests_per_user: float = 4.0  # measured requests = ceil(requests_per_user * concurrency), >= min_requests
    min_requests: int = 32
    warmup_per_user: float = 1.0  # warm-up requests excluded from the means, per user
    # AIPerf waits for every warm-up response before the profiling phase starts all its users at
    # once. The engine is then empty (prefix caching is off in these runs), so the profiling phase
    # plays exactly like a fresh start: the warm-up requests need not be simulated, and the
    # measured means include the first wave of `concurrency` simultaneous prompts. False: the
    # warm-up requests run in the same closed loop and the measured ones follow without a pause.
    warmup_drains: bool = True
    ramp_up_s: float = 0.0  # users start evenly over this time (AIPerf starts them all at once)
    ramp_cycles: float | None = None  # if set: the ramp is this share of one request's decode time instead (None: OUT_OF_STEP rows 1)
    frontend: bool = True  # play each engine's API server (perf/data/frontend.yaml)
    # The front end's per-request time spread (FrontendConfig.time_cv): None plays the fitted
    # FRONTEND_TIME_CV of the row's (GPU, engine); a number plays that value on every row (fitting).
    frontend_time_cv: float | None = None
    # Rows whose benchmark script is known (validation/inferencemax.py) play its engine flags and client
    # (10 requests per user, lengths over [0.8 x, 1 x]); False: the generator's flags and AIPerf's client.
    benchmark_recipes: bool = True
    # play ENGINE_SLOTS_HELD (batch slots held in the campaigns listed there; on since those rows play their
    # recorded request count and the API server's token-rate ceiling: docs/fidelity-history.md)
    engine_slots_held: bool = True
    # Campaigns whose means record their request count (silicon.RECORDED_ROUNDS), or whose runner's source
    # gives it (silicon.RUNNER_ROUNDS), play it, without a trailing round; False: every row plays
    # `requests_per_user` (and the trailing rounds).
    recorded_rounds: bool = True
    # Unmeasured requests per user after the measured ones (the benchmark's later rounds; module
    # docstring). 0: the run stops with the measured requests. Not played for the rows whose script
    # is known to send exactly the measured requests (InferenceMAX: 10 rounds, all measured).
    trailing_rounds: int = 1


@dataclass(frozen=True)
class RequestCounts:
    """Requests of one row in the order the closed loop sends them (request ids count up)."""

    warmup: int
    measured: int
    trailing: int

    @property
    def total(self) -> int:
        return self.warmup + self.measured + self.trailing

    @property
    def measured_end(self) -> int:
        """Id after the last measured request: the means take ids warmup .. measured_end - 1."""
        return self.warmup + self.measured


def request_counts(users: int, options: ClientOptions, warmup_in_loop: bool, script_rounds: int | None) -> RequestCounts:
    """The requests a row sends: warm-up ones only when they run in the same loop (else AIPerf's
    warm-up drains before the measurement and is not played); `script_rounds` per user when the
    row's benchmark script is known (then no trailing round: the script sends exactly those)."""
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users}")
    warmup = int(round(options.warmup_per_user * users)) if warmup_in_loop else 0
    if script_rounds is not None:
        return RequestCounts(warmup, script_rounds * users, 0)
    measured = max(options.min_requests, math.ceil(options.requests_per_user * users))
    return RequestCounts(warmup, measured, max(0, options.trailing_rounds) * users)
