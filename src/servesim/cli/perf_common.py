"""Shared by the perf CLI modules: one-line errors and atomic file writes."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


from servesim.errors import InputError


def write_atomic(path: Path, text: str) -> None:
    """Write all of `text` or nothing: a temporary file in the same folder, then a rename."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_marked_block(docs: Path, begin: str, end: str, block: str) -> None:
    """Rewrite the text between the `begin` and `end` markers of a docs file (atomically)."""
    try:
        text = docs.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {str(docs)!r}: {exc.strerror}") from None
    if begin not in text or end not in text:
        raise InputError(f"{docs}: missing the markers {begin} ... {end}")
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    write_atomic(docs, pattern.sub(lambda _: f"{begin}\n{block}\n{end}", text))


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))
