"""The served-request trace: one CSV row per request as it arrives, flushed at once, in the
canonical trace schema, so `servesim run` can replay exactly what the server saw."""

from __future__ import annotations

import csv
from pathlib import Path

from servesim.errors import InputError
from servesim.workload.request import Request

COLUMNS = ("arrival_s", "prompt_len", "output_len", "hash_ids", "hash_block_tokens")


class ServedTrace:
    """Appends requests to a CSV trace file (arrival times in simulated seconds)."""

    def __init__(self, path: Path) -> None:
        try:
            self._file = open(path, "w", encoding="utf-8", newline="")
        except OSError as e:
            raise InputError(f"cannot write the served trace {path}: {e.strerror or e}") from None
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow(COLUMNS)
        self._file.flush()

    def add(self, req: Request) -> None:
        # every row is complete on disk when the request starts: a killed server leaves a valid trace
        self._writer.writerow([repr(req.arrival_s), req.prompt_len, req.output_len,
                               " ".join(map(str, req.hash_ids)), req.hash_block_tokens])
        self._file.flush()

    def close(self) -> None:
        self._file.close()
