"""Build the parsed copies of the catalogues in `perf/data/` (`perf/_catalog.py` says why):

    python -m servesim.perf.catalogue_copies

after editing any `perf/data/*.yaml`. A copy is the YAML's document as JSON with the CRC-32 of
the YAML bytes; a YAML holding what JSON cannot keep as it is (a date, a non-string key) is
refused.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import yaml

from servesim.perf._catalog import SafeLoader, parsed_name

DATA = Path(__file__).resolve().parent / "data"


def _same(a: Any, b: Any) -> bool:
    """Equal with the same types and key order (1 is not 1.0; a dict's keys in file order)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)  # (NaN)


def build_parsed_copies(folder: Path = DATA) -> list[Path]:
    """Write `<name>.parsed.json` beside every `<name>.yaml` of `folder` (the package's data)."""
    written = []
    for path in sorted(folder.glob("*.yaml")):
        source = path.read_bytes()
        document = yaml.load(source.decode("utf-8"), Loader=SafeLoader)
        try:
            text = json.dumps({"source": path.name, "source_crc32": zlib.crc32(source), "document": document},
                              indent=1, ensure_ascii=False)
        except TypeError:  # (a date)
            text = None
        if text is None or not _same(json.loads(text)["document"], document):  # (or a non-string key)
            raise ValueError(f"{path.name} holds values JSON does not keep as they are")
        target = path.with_name(parsed_name(path.name))
        target.write_text(text + "\n", encoding="utf-8")
        written.append(target)
    return written


if __name__ == "__main__":
    for p in build_parsed_copies():
        print(f"wrote {p}")
