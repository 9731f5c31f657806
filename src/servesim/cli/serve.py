"""`servesim serve`: an OpenAI-compatible server whose timing comes from the simulated replica."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from servesim.cli.common import lazy_help, schema_help, user_errors

_SUMMARY = ("Serve the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models, /health, /version,"
            " /metrics) with the timing SCENARIO's replica would have: continuous batching, chunked prefill,"
            " KV pressure, preemption and prefix caching as simulated. The scenario's workload is not used;"
            " the requests are. Needs the `serve` extra: pip install 'servesim\\[serve]'. See docs/serve.md.")


def _help_text() -> str:
    from servesim.serve.config import ServeConfig

    lines = [_SUMMARY, "", "Options (flags spell them with dashes, e.g. --time-scale):", ""]
    return "\n\n".join(lines + schema_help(ServeConfig))


def register(app: typer.Typer) -> None:
    @app.command("serve", help=_SUMMARY, cls=lazy_help(_help_text),
                 short_help="Serve the OpenAI API with the timing the scenario's replica would have.")
    @user_errors
    def serve(
        scenario: Optional[Path] = typer.Argument(None, help="Scenario YAML file (default: the packaged default)."),
        set_: list[str] = typer.Option([], "--set", help="Override a scenario key, e.g. --set engine.max_num_seqs=64."),
        host: Optional[str] = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1)."),
        port: Optional[int] = typer.Option(None, "--port", help="TCP port (default 8000; 0 = any free port)."),
        time_scale: Optional[float] = typer.Option(None, "--time-scale", help="Wall seconds per simulated second."),
        api_key: Optional[str] = typer.Option(None, "--api-key", envvar="VLLM_API_KEY",
                                              help="Require this bearer token on /v1 routes."),
        served_model_name: Optional[str] = typer.Option(None, "--served-model-name", help="Model name clients send."),
        tokenizer: Optional[str] = typer.Option(None, "--tokenizer", help="auto | tiktoken | approx."),
        eos_mean_tokens: Optional[float] = typer.Option(None, "--eos-mean-tokens",
                                                        help="Mean output length when the model stops by itself."),
        trace_out: Optional[Path] = typer.Option(None, "--trace-out", help="Write the served requests to this CSV."),
    ) -> None:
        from servesim.serve.run import serve_forever

        given = dict(host=host, port=port, time_scale=time_scale, api_key=api_key,
                     served_model_name=served_model_name, tokenizer=tokenizer, eos_mean_tokens=eos_mean_tokens,
                     trace_out=trace_out)
        serve_forever(scenario, set_, {k: v for k, v in given.items() if v is not None})
