"""Reading the AIConfigurator silicon sample: the file's columns, parsed into `SiliconRow`s.

silicon.py maps a row to the scenario that plays it; this module owns only the measured file's
schema (the required columns, how empty parallelism cells read) and one clear InputError for a
missing file, a missing column or a bad value, so readers of the rows need none of the mapping.
"""

from __future__ import annotations

import csv
import gzip
import re
from dataclasses import dataclass, replace
from pathlib import Path

from servesim.errors import InputError

REQUIRED = ("id", "backend", "backend_version", "model_path", "system", "mode", "isl", "osl", "gemm_quant_mode",
            "batch_size", "tp_size", "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size",
            "silicon_ttft_ms", "silicon_tpot_ms", "concurrency")


@dataclass(frozen=True)
class SiliconRow:
    """One measured run (the columns servesim uses)."""

    id: str
    backend: str
    version: str
    model: str
    system: str
    mode: str
    isl: int
    osl: int
    gemm_quant: str
    batch_size: int
    tp: int
    pp: int
    attention_dp: int
    moe_tp: int
    moe_ep: int
    concurrency: int
    ttft_s: float  # measured mean
    tpot_s: float  # measured mean
    # False when attention_dp_size is empty: the runs recorded in AIConfigurator's own terms leave
    # it so, the ones recorded as the engine's tp x ep product fill it (recorded_parallelism.py).
    attention_dp_recorded: bool = True
    # False when the release was not in the row's own cells but taken from its deployment config or its
    # twins (`recover_versions`): those runs are older than the release's own (docs/fidelity-history.md,
    # "TensorRT-LLM B200 DeepSeek-R1: the InferenceMAX scripts of each release, and MTP").
    version_recorded: bool = True
    # True when a config export (`_cfg<N>` ids) records this row's deployment and point only with another
    # measurement: the campaign ran that point twice, and this run is not the one the export kept
    # (`unexported_runs`; the SGLang B200 DeepSeek-R1 MTP runs, validation/inferencemax.py).
    unexported_run: bool = False


def _int(raw: str, default: int = 1) -> int:
    """Parallelism columns: empty or 0 (dense models' MoE columns) mean 1."""
    return int(float(raw)) if raw.strip() and float(raw) > 0 else default


def parse_row(raw: dict[str, str]) -> SiliconRow:
    agg = raw["mode"] == "agg"
    return SiliconRow(
        id=raw["id"], backend=raw["backend"].strip().lower(), version=raw["backend_version"].strip(),
        model=raw["model_path"].strip(), system=raw["system"].strip().lower(), mode=raw["mode"].strip(),
        isl=int(raw["isl"]), osl=int(raw["osl"]), gemm_quant=raw["gemm_quant_mode"].strip().lower(),
        batch_size=_int(raw["batch_size"]) if agg else 0, tp=_int(raw["tp_size"]) if agg else 0,
        pp=_int(raw["pp_size"]), attention_dp=_int(raw["attention_dp_size"]), moe_tp=_int(raw["moe_tp_size"]),
        moe_ep=_int(raw["moe_ep_size"]), concurrency=_int(raw["concurrency"], default=0),
        ttft_s=float(raw["silicon_ttft_ms"]) / 1e3, tpot_s=float(raw["silicon_tpot_ms"]) / 1e3,
        attention_dp_recorded=bool(raw["attention_dp_size"].strip()),
    )


# The measured runs the package ships (data/README.md): `servesim validate`'s default file
DEFAULT_SILICON = Path(__file__).parent / "data" / "silicon_calibration.csv.gz"


def open_measured(path: str | Path):
    """The measured file's text, read as CSV (gzip-compressed if its name ends in .gz: the shipped one)."""
    p = Path(path)
    return gzip.open(p, "rt", newline="", encoding="utf-8") if p.suffix == ".gz" else p.open(newline="", encoding="utf-8")


def read_rows(path: str | Path) -> list[SiliconRow]:
    """All rows of a file in the schema of silicon_calibration.csv; a bad file is one InputError."""
    p = Path(path)
    try:
        with open_measured(p) as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"{p}: missing column {missing[0]!r}; required: {', '.join(REQUIRED)}")
            rows = []
            for line, raw in enumerate(reader, start=2):
                try:
                    rows.append(parse_row(raw))
                except (ValueError, TypeError, AttributeError) as exc:
                    raise InputError(f"{p}:{line}: bad value ({exc})") from None
            return recover_versions(rows)
    except FileNotFoundError:
        raise InputError(f"measured file {str(p)!r} not found") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # (a .gz that is not one, a truncated one)
        raise InputError(f"measured file {str(p)!r} cannot be read: {exc}") from None


# Rows named `..._cfg<N>` are one deployment config of a campaign (same model, quantization and
# parallelism) measured at several concurrencies; in the TensorRT-LLM B200 configs 75, 82 and 91 the
# file records the release (1.2.0rc6.post2) for some concurrencies and leaves it empty for the others.
CONFIG_ID = re.compile(r"_cfg(\d+)$")


def recover_versions(rows: list[SiliconRow]) -> list[SiliconRow]:
    """Rows without a version take the one release that the file records for the same deployment
    config (`_cfg<N>` id, same engine and system), then the one release of their twins (`twin_versions`);
    a config or a twin set recorded with several releases, or with none, leaves its empty cells empty
    (docs/fidelity-history.md, "TTFT of the worst groups" and "TensorRT-LLM B200 rows recorded twice")."""
    releases: dict[tuple[str, str, str], set[str]] = {}
    for r in rows:
        m = CONFIG_ID.search(r.id)
        if m and r.version:
            releases.setdefault((r.backend, r.system, m.group(1)), set()).add(r.version)
    out = []
    for r in rows:
        m = CONFIG_ID.search(r.id) if not r.version else None
        found = releases.get((r.backend, r.system, m.group(1)), set()) if m else set()
        out.append(replace(r, version=next(iter(found)), version_recorded=False) if len(found) == 1 else r)
    return unexported_runs(twin_versions(out))


def _measurement(r: SiliconRow) -> tuple:
    """What makes two rows one measurement: engine, system, mode, lengths, users and both means."""
    return (r.backend, r.system, r.mode, r.isl, r.osl, r.concurrency, r.ttft_s, r.tpot_s)


def twin_versions(rows: list[SiliconRow]) -> list[SiliconRow]:
    """A row without a version takes the one release of its twins: rows of the same measurement
    (`_measurement`, TTFT and TPOT equal to the last digit) under another id. The file holds some runs
    twice, once from the campaign's own export (AIConfigurator's `dsr1_..._cfg<N>`, release recorded or
    recovered) and once from InferenceMAX's (`2026_04_06_deepseek_r1_...`, no release): 18 TensorRT-LLM
    B200 rows. Twins recorded with several releases leave the row as it is, except a build named after
    its twins' release (`build_of_twins_release`)."""
    releases: dict[tuple, set[str]] = {}
    for r in rows:
        if r.version:
            releases.setdefault(_measurement(r), set()).add(r.version)
    out = []
    for r in rows:
        found = releases.get(_measurement(r), set())
        if r.version:
            found = {v for v in found if build_of_twins_release(r.version, v)}
        out.append(replace(r, version=next(iter(found)), version_recorded=False) if len(found) == 1 else r)
    return out


# The config exports record InferenceMAX's DeepSeek-R1 runs (`dsr1_*` ids) under DeepSeek-V3, the same architecture.
EXPORTED_AS = {"deepseek-ai/deepseek-v3": "deepseek-ai/deepseek-r1"}


def exported_model(r: SiliconRow) -> str:
    """The row's model, lower case, as the runs that recorded it name it (`EXPORTED_AS`)."""
    model = r.model.lower()
    return EXPORTED_AS.get(model, model)


def _point(r: SiliconRow) -> tuple:
    """A deployment and load point: engine, release, system, model, precision, parallelism, lengths and users."""
    return (r.backend, r.version, r.system, r.mode, exported_model(r), r.gemm_quant, r.tp, r.moe_tp, r.moe_ep,
            r.attention_dp, r.isl, r.osl, r.concurrency)


def _means(r: SiliconRow) -> tuple[str, str]:
    # the exports round-trip the same run's means differently in the last digit (199.4286597095197 /
    # ...197, 10.322922014878303 / ...305), so a run is told by its means to 12 digits
    return f"{r.ttft_s:.12g}", f"{r.tpot_s:.12g}"


def unexported_runs(rows: list[SiliconRow]) -> list[SiliconRow]:
    """Marks `unexported_run`: a row outside the config exports whose point an export records, but only with
    other means. InferenceMAX ran some points under two scripts (the SGLang B200 DeepSeek-R1 FP8 points at
    TP 8 and 4-64 users by `dsr1_fp8_b200.sh` and by its MTP variant); AIConfigurator's config export kept the
    plain script's run (`dsr1_b200_sglang_fp8_agg_*_cfg87`), the 2026-03 / 04 exports both, under two ids."""
    exported: dict[tuple, set[tuple[str, str]]] = {}
    for r in rows:
        if CONFIG_ID.search(r.id):
            exported.setdefault(_point(r), set()).add(_means(r))
    return [replace(r, unexported_run=True)
            if not CONFIG_ID.search(r.id) and _point(r) in exported and _means(r) not in exported[_point(r)] else r
            for r in rows]


def build_of_twins_release(version: str, twins_release: str) -> bool:
    """Whether `version` is one dated build of the release tag its twins record (`<tag>-<date>-<commit>`).
    The 15 SGLang B200 `nightly-dev-20260216-d3bae71e` rows (Qwen3.5 BF16 TP 8, `_cfg587`) are each the
    same measurement as `nightly-dev` rows of the 2026-03 / 04 exports (TTFT and TPOT equal to the last
    digit; no other twins in the file disagree on the release): one run, which the build's own name
    keys to no calibration or front-end entry while its tag does, so the build plays as its tag."""
    return version.startswith(twins_release + "-")


def held_out_ids(rows: list[SiliconRow]) -> frozenset[str]:
    """Ids of the held-out rows: those whose measurement (`_measurement`) first appears at an odd
    position of the file. Every copy of a measurement falls on the side of its first one, so a fit on
    the even side never scores its own measurements again as held out (the file holds 382 aggregated
    measurements twice or more, 183 of them once at an even and once at an odd position); a row
    without twins keeps the side of its own position, as in the split by file position."""
    first: dict[tuple, int] = {}
    for i, r in enumerate(rows):
        first.setdefault(_measurement(r), i)
    return frozenset(r.id for r in rows if first[_measurement(r)] % 2)
