"""Engine profiles (`engines.yaml`): per-engine CPU/launch constants and benchmark settings.

An engine's defaults change between releases (TensorRT-LLM's PyTorch backend, default from 1.0,
overlaps CPU and GPU; vLLM turned async scheduling on by default in 0.14.0: both shipped as rules,
with the per-step and per-sequence time the serving runs show moved to the GPU side for the releases
that overlap, docs/fidelity-history.md, vasync26), so a profile may list `versions:` rules, each `{since: <release>, why: <source>, constants: {...}}`:
`engine_profile(name, version)` applies, in file order, every rule whose `since` is at or below
`version`. The empty version (not recorded) is the base profile, so scenarios that do not name a
version are unchanged. Versions that are not releases (`nightly-...`, custom builds such as
`glm5-hopper`) count as newer than every release: they are built from the main branch after the
last release (a documented choice; a rule can never be keyed on them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from servesim.errors import InputError
from servesim.perf._catalog import catalogue, resolve

ENGINE_FILE = "engines.yaml"
_RELEASE = re.compile(r"^v?(\d+(?:\.\d+)*)")


@dataclass(frozen=True)
class EngineProfile:
    """One serving engine as the performance model sees it."""

    name: str
    description: str
    max_batch_size: int  # most sequences per iteration (vLLM max_num_seqs)
    max_num_tokens: int  # token budget per iteration (vLLM max_num_batched_tokens)
    kv_fraction: float  # GPU memory share for weights + activations + KV (gpu_memory_utilization)
    constants: dict[str, float]  # engine-owned calibration constants, see calibration.Constants
    version: str = ""  # the release the version rules were applied for ("" = base profile)


def release_key(version: str) -> tuple[int, ...] | None:
    """Numeric release of a version string ('0.5.10.post1' -> (0, 5, 10); '1.1.0rc2' -> (1, 1, 0)),
    None for a non-release build (nightly, custom branch). Pre/post-release tags are ignored: the
    rules are about which release line a build belongs to."""
    m = _RELEASE.match(version.strip().lower())
    return tuple(int(p) for p in m.group(1).split(".")) if m else None


def version_at_least(version: str, since: str) -> bool:
    """Whether `version` includes a change first released in `since` (see the module docstring)."""
    if not version.strip():
        return False
    have, need = release_key(version), release_key(since)
    if need is None:
        raise InputError(f"engine version rule 'since: {since}' is not a release number such as 0.14.0")
    if have is None:  # nightly / custom builds are newer than every release
        return True
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))


def engine_profile(name: str, version: str = "") -> EngineProfile:
    """The profile of engine `name` as released in `version` ("" = the base profile)."""
    canonical, entry = resolve(ENGINE_FILE, "engine", name)
    constants = {k: float(v) for k, v in entry["constants"].items()}
    for rule in entry.get("versions") or []:
        if version_at_least(version, str(rule["since"])):
            constants.update({k: float(v) for k, v in (rule.get("constants") or {}).items()})
    return EngineProfile(
        name=canonical,
        description=str(entry["description"]),
        max_batch_size=int(entry["max_batch_size"]),
        max_num_tokens=int(entry["max_num_tokens"]),
        kv_fraction=float(entry["kv_fraction"]),
        constants=constants,
        version=version.strip(),
    )


def engine_names() -> list[str]:
    return list(catalogue(ENGINE_FILE))
