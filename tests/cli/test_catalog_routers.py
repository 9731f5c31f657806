"""`servesim catalog routers`: every registered router with its parameters and summary."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from servesim.cli import app


def test_catalog_routers_json_lists_every_router_with_defaults() -> None:
    out = CliRunner().invoke(app, ["catalog", "routers", "--json"])
    assert out.exit_code == 0, out.output
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert len(rows) == 14 and "round-robin" in rows and rows["llumnix"]["parameters"] == "block_size=16, watermark=0.01"
    assert rows["sglang-cache-aware"]["parameters"] == (
        "cache_threshold=0.3, balance_abs_threshold=64, balance_rel_threshold=1.5, "
        "eviction_interval_secs=120.0, max_tree_size=67108864")
    assert rows["dodoor"]["parameters"] == "beta=0.6, batch_size=1024, load='requests'"
    assert rows["random"]["parameters"] == "-"
    assert rows["mooncake"]["parameters"] == "cache_aware=True, tie_break='first'"
    assert rows["lora-affinity"]["parameters"] == "loaded_score=1.0, free_slot_score=0.8, lora_weight=2.0, queue_weight=1.0"
    assert rows["vllm-dp"]["description"].startswith("vLLM's internal data-parallel load balancer")


def test_catalog_routers_table_has_one_line_per_router() -> None:
    out = CliRunner().invoke(app, ["catalog", "routers"])
    assert out.exit_code == 0
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["name", "parameters", "description"]
    assert [line.split()[0] for line in lines[1:]][:3] == ["dodoor", "dynamo-kv", "least-kv"]
    assert len(lines) == 15
