"""Start the server: check everything first (scenario, options, optional packages, the
address), so that bad input ends with one line and exit code 2 before anything listens."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from pydantic import ValidationError

from servesim.errors import InputError

SERVE_PACKAGES = ("fastapi", "uvicorn", "prometheus_client")


def load_config(options: dict):
    from servesim.serve.config import ServeConfig

    try:
        return ServeConfig(**options)
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']} (got {err.get('input')!r})") from None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (so a taken port is reported as input, not as a server crash)."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except (OSError, OverflowError) as e:
        raise InputError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None
    return sock


def serve_forever(scenario_path: Path | None, overrides: list[str], options: dict) -> None:
    missing = [m for m in SERVE_PACKAGES if not _importable(m)]
    if missing:
        raise InputError(f"servesim serve needs {', '.join(missing)}: pip install 'servesim[serve]'")
    import uvicorn

    from servesim.scenario import load_scenario
    from servesim.serve.app import create_app

    cfg = load_config(options)
    scenario = load_scenario(scenario_path, overrides)
    sock = bind(cfg.host, cfg.port)  # before the app opens its trace file: a taken port leaves nothing behind
    try:
        app = create_app(scenario, cfg)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    server = app.state.server if hasattr(app, "state") else app.app.state.server
    print(f"servesim serve: http://{host}:{port}/v1 (model {server.model_name}, time scale {cfg.time_scale}, "
          f"tokenizer {server.tokenizer})", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, backlog=2048)
    uvicorn.Server(config).run(sockets=[sock])


def _importable(name: str) -> bool:
    import importlib

    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True
