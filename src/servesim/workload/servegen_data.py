"""Loading the shipped ServeGen data: per-client arrival fits and length PMFs.

Traces: per client one CSV row per 10-minute window: start_s, rate, cv, family, shape, scale.
Datasets: per client {window start: {field: "{tokens: probability, ...}"}}; we mix them into one
request-weighted PMF per field (weight = the client's request count in those windows).
"""

from __future__ import annotations

import csv
import io
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from servesim.errors import InputError
from servesim.workload.sampling import stream
from servesim.workload.traces.registry import servegen_paths

WINDOW_S = 600.0
FAMILIES = {"": 0, "Gamma": 1, "Weibull": 2}  # 0 = idle window (or no fit: Poisson)
_CLIENT = re.compile(r"chunk-(\d+)-(trace\.csv|dataset\.json)$")


@dataclass(frozen=True)
class ServeGenTraces:
    """Arrival fits as [client, window] arrays (rates in req/s)."""

    name: str
    client_ids: np.ndarray  # [C]
    rate: np.ndarray  # [C, W]
    family: np.ndarray  # [C, W] 0 none/poisson, 1 gamma, 2 weibull
    shape: np.ndarray  # [C, W]
    scale: np.ndarray  # [C, W]

    @property
    def num_windows(self) -> int:
        return self.rate.shape[1]


def _members(path: Path, suffix: str) -> Iterator[tuple[int, bytes]]:
    try:
        with tarfile.open(path, "r:xz") as tar:
            for member in tar.getmembers():
                match = _CLIENT.search(member.name)
                if member.isfile() and match and match.group(2) == suffix:
                    fh = tar.extractfile(member)
                    assert fh is not None
                    yield int(match.group(1)), fh.read()
    except (OSError, tarfile.TarError) as exc:
        raise InputError(f"cannot read ServeGen archive {path}: {exc}") from None


def load_traces(model: str) -> ServeGenTraces:
    traces_path, _, name = servegen_paths(model)
    rows: dict[int, list[list[str]]] = {}
    for client, data in _members(traces_path, "trace.csv"):
        rows[client] = list(csv.reader(io.StringIO(data.decode())))
    if not rows:
        raise InputError(f"{traces_path}: no chunk-<id>-trace.csv files inside")
    ids = sorted(rows)
    width = max(len(r) for r in rows.values())
    rate = np.zeros((len(ids), width))
    family = np.zeros((len(ids), width), dtype=np.int8)
    shape = np.ones((len(ids), width))
    scale = np.ones((len(ids), width))
    for c, client in enumerate(ids):
        for line, row in enumerate(rows[client], start=1):
            try:
                w = int(float(row[0]) // WINDOW_S)
                rate[c, w] = float(row[1])
                family[c, w] = FAMILIES[row[3]]
                if family[c, w]:
                    shape[c, w], scale[c, w] = float(row[4]), float(row[5])
            except (ValueError, IndexError, KeyError):
                raise InputError(f"{name} chunk-{client}-trace.csv line {line}: not 'start_s,rate,cv,family,shape,scale'") from None
    return ServeGenTraces(name, np.array(ids), rate, family, shape, scale)


def _parse_pmf(text: str) -> tuple[np.ndarray, np.ndarray]:
    # '{224: 0.0003, 225: 0.0008}' -> values, probabilities (no eval of file content).
    body = text.strip().strip("{}").strip()
    if not body:
        return np.zeros(0), np.zeros(0)
    flat = np.array(body.replace(":", ",").split(","), dtype=float).reshape(-1, 2)
    return flat[:, 0], flat[:, 1]


def mixed_pmfs(model: str, fields: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """field -> (values, probabilities): the request-weighted mix over clients and windows."""
    traces_path, datasets_path, name = servegen_paths(model)
    if datasets_path is None:
        raise InputError(f"ServeGen model {name!r} has no shipped length data; use deepseek-r1 or mm-image")
    traces = load_traces(model)
    row_of = {int(c): i for i, c in enumerate(traces.client_ids)}
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {f: [] for f in fields}
    for client, data in _members(datasets_path, "dataset.json"):
        windows = json.loads(data)
        starts = sorted(int(k) for k in windows)
        bounds = [int(s // WINDOW_S) for s in starts] + [traces.num_windows]
        for k, start in enumerate(starts):
            entry = windows[str(start)]
            c = row_of.get(client)
            weight = traces.rate[c, bounds[k]:bounds[k + 1]].sum() if c is not None else 0.0
            if weight <= 0 or not entry:
                continue
            for f in fields:
                values, probs = _parse_pmf(entry.get(f, "{0: 1.0}"))
                if len(values):
                    parts[f].append((values, probs / probs.sum() * weight))
    out = {}
    for f, chunks in parts.items():
        if not chunks:
            raise InputError(f"ServeGen {name}: no data for length field {f!r}")
        values = np.concatenate([v for v, _ in chunks])
        weights = np.concatenate([w for _, w in chunks])
        uniq, inverse = np.unique(values, return_inverse=True)
        total = np.bincount(inverse, weights=weights)
        out[f] = (uniq.astype(np.int64), total / total.sum())
    return out


PMF_FIELDS = {
    "deepseek-r1": (("input_tokens",), "output_tokens"),
    "mm-image": (("text_tokens", "image_tokens", "audio_tokens", "video_tokens"), "output_tokens"),
}


def pmf_length_pairs(name: str, rng: np.random.Generator) -> Iterator[tuple[int, int]]:
    """(prompt, output) drawn independently from the mixed PMFs (multimodal: prompt = text +
    image + audio + video tokens, each drawn from its own mix)."""
    prompt_fields, output_field = PMF_FIELDS[name]
    pmfs = mixed_pmfs(name, (*prompt_fields, output_field))

    def draw(field: str):
        values, probs = pmfs[field]
        cdf = np.cumsum(probs)
        return lambda n: values[np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(values) - 1)]

    prompt_draws = [draw(f) for f in prompt_fields]
    prompts = stream(lambda n: sum(d(n) for d in prompt_draws))
    outputs = stream(draw(output_field))
    return zip(prompts, outputs)
