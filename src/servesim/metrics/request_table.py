"""What a run keeps of a request once it is over: one row of typed columns.

A request is registered when it first reaches the cluster (its row number is its arrival
order) and reduced to its row when it reaches a terminal state: the fields `requests.csv`
writes, what the summary and its sections read (SLO targets, LoRA adapter, a few tags from
`extra`) and its token step runs (two integers per run, with the replica whose step log they
index). The `Request` object itself is then released (unless the caller asked to keep them),
so memory grows by about 180 bytes per finished request, not by the object graph of a live
one (dicts, lists, prefix keys: several kilobytes). Requests still held when the run stops
(dropped) are reduced at the end. `close()` puts the rows in arrival order.

Given a spill folder (the CLI's runs), rows do not stay in memory either: every FLUSH_ROWS
rows go to a scratch file (row_spill.py), and after `close()` the columns are files in arrival
order, mapped when read, so what a run holds does not grow with its finished requests until
the outputs read them.
"""

from __future__ import annotations

import numpy as np

from servesim.metrics.recorder import Column, positions
from servesim.metrics.row_spill import RowSpill
from servesim.metrics.summary import RequestColumns
from servesim.workload.request import Request

NONE_ID = np.iinfo(np.int64).min  # an absent session or program id
#: Tags of `Request.extra` that outputs and summary sections read; others are not kept.
EXTRA_KEYS = ("reject_reason", "lora_hit", "lora_load_s", "lora_num_loads", "lora_num_storage_loads",
              "qoe_tds", "qoe_ttft_s")
# Row fields in the order `_row` builds them; None in a float column becomes NaN, and back.
FIELDS = (("seq", np.int64), ("id", np.int64), ("tenant", np.int32), ("priority", np.int64),
          ("slo_class", np.int32), ("is_offline", np.bool_), ("session_id", np.int64), ("program_id", np.int64),
          ("arrival_s", np.float64), ("prompt_len", np.int64), ("output_len", np.int64),
          ("num_output_tokens", np.int64), ("state", np.int8), ("first_scheduled_s", np.float64),
          ("first_token_s", np.float64), ("finish_s", np.float64), ("num_preemptions", np.int32),
          ("num_cached_tokens", np.int64), ("replica", np.int32), ("num_reroutes", np.int32),
          ("ttft_slo_s", np.float64), ("tpot_slo_s", np.float64), ("lora", np.int32), ("num_runs", np.int32))
FLUSH_ROWS = 8192
#: Rows a pass over the closed table reads at a time (summary, invariants, time series).
ROWS_PER_PASS = 1 << 16
_SUMMARY_FIELDS = ("id", "state", "arrival_s", "prompt_len", "output_len", "num_output_tokens", "first_token_s",
                   "finish_s", "num_preemptions", "ttft_slo_s", "tpot_slo_s")


class _Labels:
    """Strings (tenants, SLO classes, adapters) as small integer codes; None is -1."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def code(self, label: str | None) -> int:
        if label is None:
            return -1
        c = self.codes.get(label)
        if c is None:
            c = self.codes[label] = len(self.codes)
        return c

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Object array of the labels (None for -1, the last entry)."""
        return np.array(list(self.codes) + [None], dtype=object)[codes]


class RequestTable:
    """Rows of the run's requests, filled as they end; columns in arrival order after `close`."""

    def __init__(self, keep_requests: bool = False, folder: str | None = None) -> None:
        self.kept: list[Request] | None = [] if keep_requests else None  # the objects, in arrival order
        self._live: dict[int, tuple[int, Request]] = {}  # id(req) -> (row, req) of requests not yet over
        self._n = 0
        self._rows: list[tuple] = []
        self._parts = {name: Column(dtype) for name, dtype in FIELDS}
        self._run_bounds = Column(np.int64)  # start, end of each run (replica-local steps), flat
        self._run_replica = Column(np.int32)
        self._labels = {"tenant": _Labels(), "slo_class": _Labels(), "lora": _Labels()}
        self.extras: dict[int, dict] = {}  # row -> the EXTRA_KEYS tags it carries
        self._spill = None if folder is None else RowSpill(folder, FIELDS)
        self.cols: dict[str, np.ndarray] = {}  # (a MappedColumns of files when spilled)
        self._runs = {key: np.empty(0, dtype=np.int64) for key in ("run_starts", "run_ends", "first_run")}
        self._num_runs_total = 0

    def __len__(self) -> int:
        return self._n

    def append(self, req: Request) -> None:
        """`req` reaches the cluster for the first time (its row is its arrival order)."""
        self._live[id(req)] = (self._n, req)
        self._n += 1
        if self.kept is not None:
            self.kept.append(req)

    def done(self, req: Request) -> None:
        """`req` may have reached a terminal state: reduce it to its row and let it go."""
        if req.state.terminal:
            entry = self._live.pop(id(req), None)
            if entry is not None:
                self._reduce(*entry)

    def _reduce(self, seq: int, r: Request) -> None:
        lab = self._labels
        runs = r.token_steps
        extra = r.extra
        tenant, slo_class, lora = r.tenant, r.slo_class, r.lora  # (mostly None: no call for those)
        self._rows.append((
            seq, r.id, -1 if tenant is None else lab["tenant"].code(tenant), r.priority,
            -1 if slo_class is None else lab["slo_class"].code(slo_class), r.is_offline,
            NONE_ID if r.session_id is None else r.session_id, NONE_ID if r.program_id is None else r.program_id,
            r.arrival_s, r.prompt_len, r.output_len, r.num_output_tokens, int(r.state), r.first_scheduled_s,
            r.first_token_s, r.finish_s, r.num_preemptions, r.num_cached_tokens, r.replica,
            extra.get("num_reroutes", 0) if extra else 0, r.ttft_slo_s, r.tpot_slo_s,
            -1 if lora is None else lab["lora"].code(lora), len(runs) // 2))
        if extra:
            tags = {k: extra[k] for k in EXTRA_KEYS if k in extra}
            if tags:
                self.extras[seq] = tags
        if runs:
            self._num_runs_total += len(runs) // 2
            self._run_bounds.extend(runs)
            self._run_replica.extend(_run_replicas(r))
        if len(self._rows) >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        if self._spill is not None:  # a chunk in arrival order (rows.sort: seq first and unique)
            order = sorted(range(len(self._rows)), key=lambda i: self._rows[i][0])
            rows = [self._rows[i] for i in order]
            counts = np.fromiter((r[-1] for r in self._rows), np.int64, len(self._rows))
            pick = positions((np.cumsum(counts) - counts)[order], counts[order])
            bounds = self._run_bounds.array().reshape(-1, 2)[pick].ravel()
            self._spill.write([np.array(v, dtype=d) for (_, d), v in zip(FIELDS, zip(*rows))], bounds,
                              self._run_replica.array()[pick])
            self._run_bounds, self._run_replica = Column(np.int64), Column(np.int32)
        else:
            for (name, _), values in zip(FIELDS, zip(*self._rows)):
                self._parts[name].extend(values)
        self._rows = []

    def close(self, offsets: list[int] | None = None) -> None:
        """End of run: reduce what is still held, order rows by arrival and make the runs index
        the concatenated step log (`offsets`: first step of each replica's log in it)."""
        for seq, req in sorted(self._live.values(), key=lambda e: e[0]):
            self._reduce(seq, req)
        self._live = {}
        self._flush()
        if self._spill is not None:  # merged out of core into files, mapped when read
            self._spill.merge(self._n, offsets)
            self.cols = self._spill.columns(self._n, self._num_runs_total)
            self._run_bounds = self._run_replica = None
            return
        seq = self._parts.pop("seq").array()
        order = np.empty(len(seq), dtype=np.int64)
        order[seq] = np.arange(len(seq))  # reduce position of each row
        del seq
        counts = self._parts["num_runs"].array().astype(np.int64)  # in reduce order
        for name, _ in FIELDS[1:]:  # one column at a time, so the table is never held twice
            self.cols[name] = self._parts.pop(name).array()[order]
        bounds, rep = self._run_bounds.array(), self._run_replica.array()
        if offsets is not None and any(offsets):
            bounds = bounds + np.repeat(np.asarray(offsets, dtype=np.int64)[rep], 2)
        first = np.cumsum(counts) - counts  # first run of each row, in reduce order
        pick = positions(first[order], counts[order])
        self._runs = {"run_starts": bounds[0::2][pick], "run_ends": bounds[1::2][pick]}
        self._run_bounds = self._run_replica = None
        num_runs = counts[order]
        self._runs["first_run"] = np.cumsum(num_runs) - num_runs

    # ------------------------------------------------------------------ reading (after close)
    @property
    def spilled(self) -> bool:
        """The columns are files mapped when read (rows were spilled during the run)."""
        return self._spill is not None

    @property
    def run_starts(self) -> np.ndarray:
        """First step of every token run (rows in arrival order, each row's runs in order)."""
        return self._run("run_starts")

    @property
    def run_ends(self) -> np.ndarray:
        """Last step of every token run."""
        return self._run("run_ends")

    @property
    def first_run(self) -> np.ndarray:
        """Index of each row's first run in `run_starts`."""
        return self._run("first_run")

    @property
    def num_runs(self) -> np.ndarray:
        """Token runs of each row."""
        return self.cols["num_runs"].astype(np.int64) if len(self.cols) else np.empty(0, dtype=np.int64)

    def _run(self, key: str) -> np.ndarray:
        return self.cols.run(key) if self.spilled else self._runs[key]

    def chunks(self, rows: int | None = None):
        """Row slices of the table for a pass over it: `rows` (ROWS_PER_PASS) at a time when
        the columns are spilled files (a pass holds one), one slice of every row when they are
        in memory already. Every pass is written once, over these slices."""
        rows = rows or (ROWS_PER_PASS if self.spilled else max(self._n, 1))
        for start in range(0, self._n, rows):
            yield slice(start, min(start + rows, self._n))

    def labels(self, name: str, rows: slice = slice(None)) -> np.ndarray:
        """`tenant`, `slo_class` or `lora` of the rows as an object array (None where absent)."""
        return self._labels[name].decode(self.cols[name][rows])

    def request_columns(self, rows: slice = slice(None)) -> RequestColumns:
        """The summary's columns of `rows` (every row by default)."""
        c = {name: self.cols[name][rows] for name in _SUMMARY_FIELDS}
        return RequestColumns(
            id=c["id"], tenant=self.labels("tenant", rows), slo_class=self.labels("slo_class", rows),
            state=c["state"].astype(np.int64), arrival_s=c["arrival_s"], prompt_len=c["prompt_len"],
            output_len=c["output_len"], num_output_tokens=c["num_output_tokens"], first_token_s=c["first_token_s"],
            finish_s=c["finish_s"], num_preemptions=c["num_preemptions"].astype(np.int64),
            ttft_slo_s=c["ttft_slo_s"], tpot_slo_s=c["tpot_slo_s"])

    def token_runs_of(self, rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(runs per row, run starts, run ends) of a slice of rows: the inclusive step ranges
        in which each request emitted one token per step (a pass reads them per `chunks()`)."""
        counts = self.cols["num_runs"][rows].astype(np.int64)
        if not len(counts):
            return counts, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        first = int(self.first_run[rows.start])
        stop = first + int(counts.sum())
        return counts, np.array(self.run_starts[first:stop]), np.array(self.run_ends[first:stop])

    def token_steps(self, row: int) -> np.ndarray:
        """Every step at whose end request `row` emitted a token."""
        _, s, e = self.token_runs_of(slice(row, row + 1))
        return positions(s, e - s + 1)

    @classmethod
    def from_requests(cls, requests: list[Request]) -> "RequestTable":
        """A closed table of `requests` as they are (tests and tools that hold Request objects)."""
        t = cls()
        for r in requests:
            t.append(r)
        t.close()
        return t


def _run_replicas(r: Request) -> list[int]:
    """The replica whose step log each of the request's runs indexes."""
    n = len(r.token_steps) // 2
    if not r.moves:
        return [r.replica] * n
    out = []
    marks = r.moves
    bounds = [m[0] for m in marks[1:]] + [len(r.token_steps)]
    for (start, rep), stop in zip(marks, bounds):
        out += [rep] * ((stop - start) // 2)
    return out

