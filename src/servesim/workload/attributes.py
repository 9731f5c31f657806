"""Per-request attributes (tenant, priority, SLO class, offline, LoRA adapter) drawn from configured shares.

Each attribute has its own random stream, so adding e.g. an SLO mix does not change which
tenant each request gets. Trace columns, when present, override the mix (applied after).
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from servesim.workload.config import AttributesConfig
from servesim.workload.sampling import choice_stream, stream


class AttributeMix:
    """draw() -> dict of Request fields to set on one request (or all calls of one unit)."""

    def __init__(self, cfg: AttributesConfig, seed: np.random.SeedSequence):
        loras = cfg.loras.mix()
        # (a fifth stream only when adapters are drawn, so runs without them keep their draws)
        rngs = [np.random.default_rng(s) for s in seed.spawn(5 if loras else 4)]
        self._tenants = choice_stream(cfg.tenants, rngs[0]) if cfg.tenants else None
        self._priorities = choice_stream(cfg.priorities, rngs[1]) if cfg.priorities else None
        self._slo_classes = cfg.slo_classes
        shares = {name: c.share for name, c in cfg.slo_classes.items()}
        self._slos = choice_stream(shares, rngs[2]) if cfg.slo_classes else None
        self._offline: Iterator[float] | None = None
        self._offline_share = cfg.offline_share
        if cfg.offline_share > 0:
            self._offline = stream(lambda n: rngs[3].random(size=n))
        self._loras: Iterator | None = None
        self._lora_share = cfg.loras.share
        if loras and cfg.loras.share > 0:
            # one draw per request: a uniform for the share, then the adapter (independent of order)
            names = list(loras)
            p = np.array([loras[k] for k in names], dtype=float)
            cdf = np.cumsum(p / p.sum())
            rng = rngs[4]

            def draws(n: int):
                u = rng.random(size=(n, 2))
                picks = np.minimum(np.searchsorted(cdf, u[:, 1], side="right"), len(names) - 1)
                return np.array([names[k] if a < self._lora_share else None for a, k in zip(u[:, 0], picks)],
                                dtype=object)

            self._loras = stream(draws)
        self.active = any(x is not None for x in (self._tenants, self._priorities, self._slos, self._offline,
                                                  self._loras))

    def draw(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._tenants is not None:
            out["tenant"] = next(self._tenants)
        if self._priorities is not None:
            out["priority"] = next(self._priorities)
        if self._slos is not None:
            name = next(self._slos)
            slo = self._slo_classes[name]
            out["slo_class"] = name
            out["ttft_slo_s"] = slo.ttft_s
            out["tpot_slo_s"] = slo.tpot_s
        if self._offline is not None:
            out["is_offline"] = next(self._offline) < self._offline_share
        if self._loras is not None:
            out["lora"] = next(self._loras)
        return out
