"""`servesim estimate`: a quick static-batch estimate (all requests start together)."""

from __future__ import annotations

from typing import Optional

import typer

from servesim.cli.common import user_errors

from servesim.cli.perf_common import print_json


def register(app: typer.Typer) -> None:
    @app.command("estimate")
    @user_errors
    def estimate_cmd(
        model: str = typer.Option(..., help="Catalogue model name (any case) or a config.json path."),
        gpu: str = typer.Option(..., help="Catalogue GPU name (any case); see `servesim catalog gpus`."),
        tp: int = typer.Option(1, help="Tensor-parallel GPUs."),
        pp: int = typer.Option(1, help="Pipeline stages."),
        dtype: str = typer.Option("bf16", help="bf16, fp16, fp8, int8 (W8A8) or int4 (weight-only)."),
        engine: str = typer.Option("vllm", help="Engine profile; see `servesim catalog engines`."),
        kv_cache_dtype: str = typer.Option("auto", help="auto, bf16, fp16 or fp8."),
        calibration: Optional[str] = typer.Option(None, help="Calibration file from `servesim calibrate`."),
        batch: Optional[int] = typer.Option(None, help="Requests that start together (required unless --max-throughput)."),
        input_len: int = typer.Option(..., help="Prompt tokens per request."),
        output_len: int = typer.Option(..., help="Generated tokens per request."),
        max_throughput: bool = typer.Option(False, "--max-throughput", help="Use the largest batch whose full sequences fit in KV memory (capped at the engine's max batch)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Estimate TTFT, TPOT, E2E and throughput of a static batch, as vendor benchmarks run it."""
        from servesim.errors import InputError
        from servesim.perf import PerfConfig, build_perf_model
        from servesim.perf.engines import engine_profile
        from servesim.perf.estimate import estimate, max_batch_that_fits

        config = PerfConfig(engine=engine, calibration=calibration, kv_cache_dtype=kv_cache_dtype)
        pm = build_perf_model(model, gpu, tp=tp, dtype=dtype, config=config, pp=pp)
        profile = engine_profile(engine)
        for name, value in (("input-len", input_len), ("output-len", output_len)):
            if value < 1:
                raise InputError(f"--{name} must be >= 1, got {value}")
        if max_throughput:
            batch = max_batch_that_fits(pm, profile, input_len, output_len)
        elif batch is None:
            raise InputError("give --batch N or --max-throughput")
        result = estimate(pm, profile, batch, input_len, output_len).to_dict()
        if not result["fits_in_memory"]:  # the numbers would describe a batch the GPUs cannot hold
            largest = max_batch_that_fits(pm, profile, input_len, output_len)  # raises if not even one fits
            raise InputError(f"--batch {batch} of {input_len} + {output_len} tokens does not fit the KV cache of "
                             f"{model} on {tp * pp} x {gpu} ({result['kv_capacity_tokens']:,} tokens); "
                             f"allowed: --batch <= {largest}, --max-throughput, more GPUs or a smaller dtype")
        if as_json:
            print_json(result)
            return
        for key, value in result.items():
            print(f"{key:32} {value:.6g}" if isinstance(value, float) else f"{key:32} {value}")
