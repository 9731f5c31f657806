"""Power management of a row of replicas: a static GPU power cap, and POLCA-style capping
when the row draws more than its budget (shared/specs/cluster.md §7.2).

Every `control_period_s` (while the run is active) the manager reads each replica's power
from its view at that instant (idle when it holds nothing, prefill power while prompt
tokens are outstanding, decode power otherwise; stopped replicas draw nothing), sums the
row, and moves between three levels: none, clocks locked to `clock_low` (above T1 of the
budget), and a brake to `clock_brake` (above T2); caps are released one level per period
once the row is below T1 - hysteresis. A clock change re-times the steps that start after
it through the perf model at that clock (`PerfConfig.gpu_clock_ratio`).
"""

from __future__ import annotations

from typing import Callable

from servesim.cluster.cluster import Cluster
from servesim.cluster.config import PowerConfig
from servesim.cluster.power import clock_for_cap, gpu_power_w, power_at_clock_w
from servesim.core.loop import PRIO_ARRIVAL, EventLoop
from servesim.errors import InputError
from servesim.perf import build_perf_model
from servesim.replica.replica import STOPPED, Replica
from servesim.sums import left_sum


def check_power(cfg: PowerConfig, pools) -> None:
    """Refuse a power cap or row budget at or below what the pools' GPUs draw idle."""
    for p in pools:
        idle = gpu_power_w(p.perf.gpu_spec)[0]
        cap = cfg.gpu_power_cap_w
        if cap is not None and cap <= idle:
            raise InputError(f"power.gpu_power_cap_w: {cap:g} W is not above the idle power of {p.gpu} "
                             f"({idle:g} W); allowed: {idle:g} W < cap")
        budget, idle_w = cfg.row_power_budget_w, p.tp * idle
        if budget is not None and budget <= idle_w:
            # One idle replica alone would keep the brake on for the whole run.
            raise InputError(f"power.row_power_budget_w: {budget:g} W is not above the idle power of one "
                             f"{p.name} replica ({p.tp} x {p.gpu} at {idle:g} W = {idle_w:g} W); "
                             f"allowed: {idle_w:g} W < budget")


class PowerManager:
    """Clock caps for every replica of the cluster."""

    def __init__(self, cfg: PowerConfig, scenario_perf, pools, cluster: Cluster, loop: EventLoop,
                 active: Callable[[], bool]) -> None:
        self.cfg, self.cluster, self.loop, self.active = cfg, cluster, loop, active
        self._pools = {p.name: p for p in pools}
        self._scenario_perf = scenario_perf
        self._perfs: dict[tuple[str, float], object] = {}
        check_power(cfg, pools)
        cap = cfg.gpu_power_cap_w
        # clock ratio of the static cap, per pool
        self.base: dict[str, float] = {p.name: 1.0 if cap is None else
                                       clock_for_cap(gpu_power_w(p.perf.gpu_spec), cap, cfg.frequency_exponent)
                                       for p in pools}
        self.level = 0  # 0: no cap beyond the static one, 1: clock_low, 2: brake
        self.clock_logs: list[list[tuple[float, float]]] = [[] for _ in cluster.replicas]
        self.row_w: list[tuple[float, float]] = []  # (time, row power read)
        self.num_throttle_events = 0  # times the level went up

    def start(self) -> None:
        for r in self.cluster.replicas:
            if self.base[r.pool] < 1.0:
                self._set_clock(r, self.base[r.pool], 0.0)
        if self.cfg.row_power_budget_w is not None:
            self.loop.schedule(self.cfg.control_period_s, self._tick, None, PRIO_ARRIVAL)

    def _perf(self, pool: str, ratio: float):
        key = (pool, ratio)
        if key not in self._perfs:
            p = self._pools[pool]
            cfg = self._scenario_perf.model_copy(update={"gpu_clock_ratio": ratio})
            self._perfs[key] = p.perf if ratio == 1.0 else build_perf_model(p.model, p.gpu, p.tp, p.dtype, cfg)
        return self._perfs[key]

    def _set_clock(self, r: Replica, ratio: float, now_s: float) -> None:
        log = self.clock_logs[r.index]
        if (log[-1][1] if log else 1.0) != ratio:
            r.engine.set_perf(self._perf(r.pool, ratio), now_s)
            log.append((now_s, ratio))

    def replica_w(self, r: Replica, now_s: float) -> float:
        """What the row's meter reads for one replica at `now_s`."""
        if r.state == STOPPED or not r.alive:
            return 0.0
        p = self._pools[r.pool]
        power = gpu_power_w(p.perf.gpu_spec)
        v = r.view(now_s)
        log = self.clock_logs[r.index]
        ratio = log[-1][1] if log else 1.0
        if v.num_running + v.num_waiting == 0:
            phase = power[0]
        else:
            phase = power[1] if v.outstanding_prefill_tokens > 0 else power[2]
        return p.tp * power_at_clock_w(power, phase, ratio, self.cfg.frequency_exponent)

    def _tick(self, now_s: float, _) -> None:
        if not self.active():
            return
        c = self.cfg
        self.row_w.append((now_s, left_sum(self.replica_w(r, now_s) for r in self.cluster.replicas)))
        recent = [w for t, w in self.row_w[-int(c.telemetry_window_s / c.control_period_s) - 1:]
                  if t > now_s - c.telemetry_window_s]
        row = left_sum(recent) / len(recent)  # the averaged meter
        budget = c.row_power_budget_w
        level = self.level
        if row > c.threshold_high * budget:
            level = 2
        elif row > c.threshold_low * budget:
            level = max(level, 1)
        elif row < (c.threshold_low - c.hysteresis) * budget:
            level = max(level - 1, 0)
        if level != self.level:
            self.num_throttle_events += level > self.level
            self.level = level
            cap = (1.0, c.clock_low, c.clock_brake)[level]
            for r in self.cluster.replicas:
                self._set_clock(r, min(self.base[r.pool], cap), now_s)
        self.loop.schedule(now_s + c.control_period_s, self._tick, None, PRIO_ARRIVAL)
