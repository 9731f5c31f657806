"""Shipped data, loadable by name. Files live in `servesim/workload/data/` with their licenses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from servesim.errors import InputError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class ShippedTrace:
    """One named request-level file."""

    name: str
    relpath: str  # under DATA_DIR
    rows: int
    has_arrival: bool  # length tables have no timestamps (use them as `lengths: {dataset: ...}`)
    license: str
    description: str

    @property
    def path(self) -> Path:
        return DATA_DIR / self.relpath


SHIPPED_TRACES: dict[str, ShippedTrace] = {
    t.name: t
    for t in (
        ShippedTrace("azure-conv", "azure_llm_2023/AzureLLMInferenceTrace_conv.csv.gz", 19366, True,
                     "CC-BY-4.0", "Azure LLM inference 2023, conversation: 1 h, 5.5 req/s, near-Poisson"),
        ShippedTrace("azure-code", "azure_llm_2023/AzureLLMInferenceTrace_code.csv.gz", 8819, True,
                     "CC-BY-4.0", "Azure LLM inference 2023, code: 1 h, 2.6 req/s, very bursty"),
        ShippedTrace("mooncake-conversation", "mooncake_fast25/conversation_trace.jsonl.gz", 12031, True,
                     "Apache-2.0", "Mooncake/Kimi FAST'25 conversation: 1 h, long prompts, 512-token prefix hashes"),
        # Sarathi-Serve's filtered ShareGPT (whole conversations up to 8K tokens: long prompts, mean
        # 2,340). Not what `vllm bench serve --dataset-name sharegpt` samples (first turn of
        # ShareGPT_V3, prompts <= 1,024 tokens, prompt + output <= 2,048); see docs/workloads.md.
        ShippedTrace("sharegpt-sarathi-8k", "length_distributions/sharegpt_8k_filtered_stats_llama2_tokenizer.csv.gz",
                     30731, False, "Apache-2.0",
                     "Sarathi-Serve's filtered ShareGPT lengths (Llama-2 tokenizer, total <= 8K), no timestamps"),
        # the historical name of the same table, kept so that existing scenarios run unchanged
        ShippedTrace("sharegpt", "length_distributions/sharegpt_8k_filtered_stats_llama2_tokenizer.csv.gz",
                     30731, False, "Apache-2.0", "same table as sharegpt-sarathi-8k (the older name)"),
        ShippedTrace("arxiv", "length_distributions/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv.gz",
                     28257, False, "MIT", "arXiv summarization prompt/output lengths, no timestamps"),
    )
}

# ServeGen client models: per-client, per-10-minute-window arrival fits (and length PMFs).
SERVEGEN_MODELS: dict[str, tuple[str, str | None]] = {
    # name -> (traces tarball, datasets tarball or None)
    "m-small": ("servegen/traces_m-small.tar.xz", None),
    "deepseek-r1": ("servegen/traces_deepseek-r1.tar.xz", "servegen/datasets_deepseek-r1.tar.xz"),
    "mm-image": ("servegen/traces_mm-image.tar.xz", "servegen/datasets_mm-image.tar.xz"),
}


def resolve_trace(name_or_path: str) -> tuple[Path, str, ShippedTrace | None]:
    """(path, display name for messages, shipped entry or None) for a shipped name or a file."""
    shipped = SHIPPED_TRACES.get(name_or_path)
    if shipped is not None:
        return shipped.path, shipped.name, shipped
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        raise InputError(f"trace {name_or_path!r} is a folder; give a .csv or .jsonl(.gz) file")
    if not path.is_file():
        raise InputError(
            f"unknown trace {name_or_path!r}: not a file and not a shipped name "
            f"({', '.join(SHIPPED_TRACES)})"
        )
    return path, path.name, None


def servegen_paths(model: str) -> tuple[Path, Path | None, str]:
    """(traces tarball, datasets tarball or None, display name) of a ServeGen model name or path."""
    key = model.removeprefix("servegen-")
    if key in SERVEGEN_MODELS:
        traces, datasets = SERVEGEN_MODELS[key]
        return DATA_DIR / traces, (DATA_DIR / datasets if datasets else None), key
    path = Path(model).expanduser()
    if path.is_file():
        return path, None, path.name
    raise InputError(
        f"unknown ServeGen model {model!r}: use one of {', '.join(SERVEGEN_MODELS)} "
        "or the path of a ServeGen traces_<model>.tar.xz"
    )
