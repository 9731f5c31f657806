"""`servesim catalog gpus|models|engines|constants|schedulers|routers|autoscalers`: what servesim knows."""

from __future__ import annotations

import sys
from dataclasses import fields

import typer

from servesim.cli.common import user_errors

from servesim.cli.perf_common import print_json
from servesim.errors import InputError

KINDS = ("gpus", "models", "engines", "constants", "schedulers", "routers", "autoscalers")


def _gpus() -> list[dict]:
    from servesim.perf.hardware import gpu_names, gpu_spec

    rows = []
    for name in gpu_names():
        g = gpu_spec(name)
        rows.append({"name": g.name, "bf16_tflops": g.peak_flops.get("bf16", 0) / 1e12,
                     "fp8_tflops": g.peak_flops.get("fp8", 0) / 1e12, "hbm_gb": round(g.hbm_bytes / 1e9, 1),
                     "hbm_tb_s": g.hbm_bw_bytes_s / 1e12, "scaleup": g.scaleup, "scaleup_gb_s": g.scaleup_bw_bytes_s / 1e9,
                     "tdp_w": g.tdp_w, "usd_h": g.price_usd_h, "price_date": g.price_date})
    return rows


def _models() -> list[dict]:
    from servesim.perf.models import active_params, kv_elements_per_token_layer, model_names, model_spec, total_params

    rows = []
    for name in model_names():
        m = model_spec(name)
        features = [f for f, on in (("moe", m.moe), ("mla", m.mla), ("sliding-window", m.sliding_window),
                                    ("linear-attention", m.linear_attention)) if on]
        if m.num_kv_heads < m.num_heads and m.mla is None:
            features.insert(0, "gqa")
        rows.append({"name": m.name, "layers": m.num_layers, "hidden": m.hidden_size, "heads": m.num_heads,
                     "kv_heads": m.num_kv_heads, "params_b": round(total_params(m) / 1e9, 2),
                     "active_b": round(active_params(m) / 1e9, 2),
                     "kv_kib_per_token_bf16": kv_elements_per_token_layer(m, 1) * m.num_attention_layers * 2 / 1024,
                     "features": ",".join(features) or "-"})
    return rows


def _engines() -> list[dict]:
    from servesim.perf.engines import engine_names, engine_profile

    rows = []
    for name in engine_names():
        e = engine_profile(name)
        rows.append({"name": e.name, "step_overhead_ms": e.constants.get("step_overhead_s", 0) * 1e3,
                     "overlap_cpu": bool(e.constants.get("overlap_cpu", 0)), "max_batch_size": e.max_batch_size,
                     "max_num_tokens": e.max_num_tokens, "description": e.description})
    return rows


def _constants() -> list[dict]:
    from servesim.perf.calibration import Constants

    return [{"name": f.name, "default": f.default} for f in fields(Constants)]


def _schedulers() -> list[dict]:
    from servesim.replica.schedulers import available, get_scheduler

    return [_policy_row(name, get_scheduler(name)) for name in available()]


def _routers() -> list[dict]:
    from servesim.cluster.routers import available, get_router

    return [_policy_row(name, get_router(name)) for name in available()]


def _autoscalers() -> list[dict]:
    from servesim.cluster.autoscalers import available, get_autoscaler

    return [{**_policy_row(name, get_autoscaler(name)), "interval_s": get_autoscaler(name).default_interval_s}
            for name in available()]


def _policy_row(name: str, cls: type) -> dict:
    """A registered policy: its name, parameters with defaults, and its module's one-line summary."""
    doc = (sys.modules[cls.__module__].__doc__ or "").strip()
    params = ", ".join(f"{k}={f.default!r}" for k, f in cls.Params.model_fields.items())
    return {"name": name, "parameters": params or "-", "description": doc.splitlines()[0] if doc else ""}


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    headers = list(rows[0])
    cells = [[_fmt(r[h]) for h in headers] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)).rstrip())


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def register(app: typer.Typer) -> None:
    @app.command("catalog")
    @user_errors
    def catalog(
        kind: str = typer.Argument("gpus", help="What to list: gpus, models, engines, constants, schedulers, routers or autoscalers."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """List the catalogued GPUs, models, engine profiles, calibration constants, schedulers, routers or autoscalers."""
        builders = {"gpus": _gpus, "models": _models, "engines": _engines, "constants": _constants,
                    "schedulers": _schedulers, "routers": _routers, "autoscalers": _autoscalers}
        key = kind.strip().lower()
        if key not in builders:
            raise InputError(f"unknown catalog {kind!r}; allowed: {', '.join(KINDS)}")
        rows = builders[key]()
        print_json(rows) if as_json else _print_table(rows)
