"""Rewrite hashes.json from the current code (only after a deliberate, documented change)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cases import HASHES, cases, digest  # noqa: E402

if __name__ == "__main__":
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (path, overrides) in cases().items():
            out[name] = digest(path, overrides, Path(tmp) / name)
            print(name, out[name]["summary"][:12], out[name]["requests"][:12], flush=True)
    HASHES.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
