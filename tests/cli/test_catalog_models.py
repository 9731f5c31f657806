"""`servesim catalog models`: a hybrid linear-attention model's features and KV per token."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from servesim.cli import app


def test_catalog_models_count_kv_of_attention_layers_only() -> None:
    out = CliRunner().invoke(app, ["catalog", "models", "--json"])
    assert out.exit_code == 0, out.output
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    hybrid = rows["qwen3.5-397b-a17b-gdn"]
    # 15 full-attention layers x K and V x 2 KV heads x 256 x 2 bytes; the 45 DeltaNet layers hold a state, not KV
    assert hybrid["kv_kib_per_token_bf16"] == 15 * 2 * 2 * 256 * 2 / 1024 == 30
    assert hybrid["features"] == "gqa,moe,linear-attention"
    assert rows["llama-3.1-8b"]["kv_kib_per_token_bf16"] == 128 and rows["llama-3.1-8b"]["features"] == "gqa"
