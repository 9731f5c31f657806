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

from itertools import chain
from operator import attrgetter

import numpy as np

from servesim.metrics.recorder import Column, positions
from servesim.metrics.row_spill import RowSpill
from servesim.metrics.row_tags import RowTags
from servesim.metrics.summary import RequestColumns
from servesim.metrics.token_runs import HeldRuns, SpilledRuns, row_slices, token_runs
from servesim.workload.request import Request, RequestState

NONE_ID = np.iinfo(np.int64).min  # an absent session or program id
# Row fields in the order `_row` builds them; None in a float column becomes NaN, and back.
FIELDS = (("seq", np.int64), ("id", np.int64), ("tenant", np.int32), ("priority", np.int64),
          ("slo_class", np.int32), ("is_offline", np.bool_), ("session_id", np.int64), ("program_id", np.int64),
          ("arrival_s", np.float64), ("prompt_len", np.int64), ("output_len", np.int64),
          ("num_output_tokens", np.int64), ("state", np.int8), ("first_scheduled_s", np.float64),
          ("first_token_s", np.float64), ("finish_s", np.float64), ("num_preemptions", np.int32),
          ("num_cached_tokens", np.int64), ("replica", np.int32), ("num_reroutes", np.int32),
          ("ttft_slo_s", np.float64), ("tpot_slo_s", np.float64), ("lora", np.int32), ("num_runs", np.int32))
#: What a row reads of its request, in one C call when the request ends (`_reduce`); the chunk's
#: values become typed columns a column at a time when it is flushed (`_columns`).
READ = ("id", "priority", "is_offline", "session_id", "program_id", "arrival_s", "prompt_len", "output_len",
        "num_output_tokens", "state", "first_scheduled_s", "first_token_s", "finish_s", "num_preemptions",
        "num_cached_tokens", "replica", "ttft_slo_s", "tpot_slo_s", "tenant", "slo_class", "lora", "token_steps")
_read = attrgetter(*READ)
_REPLICA, _TOKEN_STEPS = READ.index("replica"), READ.index("token_steps")
_FINISHED = RequestState.FINISHED  # the first terminal state (`RequestState.terminal`)
FLUSH_ROWS = 8192
#: Rows turned into columns at a time (`_columns`): a piece's values, read back from objects
#: scattered in memory, still sit in the cache (8,192 rows at once took 1.5x longer to turn).
PIECE_ROWS = 1024
#: Arrivals between two watermarks sent to a helper that reduces the inter-token gaps
WATERMARK_EVERY = 512
#: Rows a pass over the closed table reads at a time (summary, invariants, time series).
ROWS_PER_PASS = 1 << 16
_SUMMARY_FIELDS = ("id", "state", "arrival_s", "prompt_len", "output_len", "num_output_tokens", "first_token_s",
                   "finish_s", "num_preemptions", "ttft_slo_s", "tpot_slo_s")


class _Labels:
    """Strings (tenants, SLO classes, adapters) as small integer codes; None is -1."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self._of: dict = {None: -1}  # codes, and None

    def code(self, label: str | None) -> int:
        c = self._of.get(label)
        if c is None:
            c = self.codes[label] = self._of[label] = len(self.codes)  # type: ignore[index]
        return c

    def codes_of(self, labels: tuple) -> list[int]:
        """The code of each label; a new label gets the next code, in the order they come."""
        try:
            return list(map(self._of.__getitem__, labels))
        except KeyError:
            return [self.code(x) for x in labels]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Object array of the labels (None for -1, the last entry)."""
        return np.array(list(self.codes) + [None], dtype=object)[codes]


class RequestTable:
    """Rows of the run's requests, filled as they end; columns in arrival order after `close`."""

    def __init__(self, keep_requests: bool = False, folder: str | None = None) -> None:
        self.kept: list[Request] | None = [] if keep_requests else None  # the objects, in arrival order
        self._live: dict[int, tuple[int, Request]] = {}  # id(req) -> (row, req) of requests not yet over
        self._n = 0
        self._rows: list[tuple] = []  # READ of each request reduced since the last flush
        self._seqs: list[int] = []  # and its row
        self._reroutes: dict[int, int] = {}  # chunk position -> reroutes (from `extra`)
        self._moved: dict[int, list[int]] = {}  # chunk position -> replica of each run, if it moved
        self._pieces: list[tuple] = []  # the chunk's rows reduced before `_rows`, as `_columns`' output
        self._held = 0  # rows in `_pieces`
        self._piece_rows = min(PIECE_ROWS, FLUSH_ROWS)  # (a divisor of FLUSH_ROWS: the chunks keep their size)
        self._parts = {name: Column(dtype) for name, dtype in FIELDS}
        self._run_bounds = Column(np.int64)  # start, end of each run (replica-local steps), flat
        self._run_replica = Column(np.int32)
        self._labels = {"tenant": _Labels(), "slo_class": _Labels(), "lora": _Labels()}
        self.extras = RowTags()  # the tags of `extra` that sections read (row_tags.TAG_TYPES)
        self._spill = None if folder is None else RowSpill(folder, FIELDS)
        self.cols: dict[str, np.ndarray] = {}  # (a MappedColumns of files when spilled)
        self._runs = {key: np.empty(0, dtype=np.int64) for key in ("run_starts", "run_ends", "first_run")}
        self._num_runs_total = 0
        # A helper process reducing the inter-token gaps as the run goes (step_helper.py), and
        # the steps each replica has logged (`logged()`): see `_stream_runs`.
        self.itl_sink = None
        self.logged = None
        self._streamed = 0  # rows of the chunk whose runs went to the sink

    def __len__(self) -> int:
        return self._n

    def append(self, req: Request) -> None:
        """`req` reaches the cluster for the first time (its row is its arrival order)."""
        self._live[id(req)] = (self._n, req)
        self._n += 1
        if self.kept is not None:
            self.kept.append(req)
        if self.itl_sink is not None and not self._n % WATERMARK_EVERY:
            self._stream_runs()
            self._send_watermarks()

    def done(self, req: Request) -> None:
        """`req` may have reached a terminal state: reduce it to its row and let it go."""
        if req.state >= _FINISHED:  # (`state.terminal` without its property call: once per request)
            entry = self._live.pop(id(req), None)
            if entry is not None:
                self._reduce(*entry)

    def _reduce(self, seq: int, r: Request) -> None:
        # (the request is over: its fields, and its token_steps list, do not change any more)
        self._seqs.append(seq)
        self._rows.append(_read(r))
        extra = r.extra
        if extra:
            if "num_reroutes" in extra:
                self._reroutes[len(self._rows) - 1] = extra["num_reroutes"]
            self.extras.add(seq, extra)
        if r.moves:
            self._moved[len(self._rows) - 1] = _run_replicas(r)
            if self.itl_sink is not None:  # (runs on several replicas: the gaps are joined after the run)
                self.itl_sink.stream_itl = False
                self.itl_sink = None
        if len(self._rows) >= self._piece_rows:
            self._piece()
            if self._held >= FLUSH_ROWS:
                self._flush()

    def _piece(self) -> None:
        """The rows reduced since the last piece become columns (and their runs go to the helper)."""
        if self._rows:
            if self.itl_sink is not None:
                self._stream_runs()
            self._streamed = 0
            self._pieces.append(self._columns())
            self._held += len(self._pieces[-1][3])

    def _flush(self) -> None:
        self._piece()
        if not self._pieces:
            return
        pieces, self._pieces, self._held = self._pieces, [], 0
        if len(pieces) == 1:
            columns, bounds, replicas, counts = pieces[0]
        else:  # (each piece's positions are its own: the runs follow their rows piece by piece)
            columns = list(map(np.concatenate, zip(*(p[0] for p in pieces))))
            bounds, replicas, counts = (np.concatenate([p[k] for p in pieces]) for k in (1, 2, 3))
        self._num_runs_total += int(counts.sum())
        if self._spill is not None:  # a chunk in arrival order
            order = np.argsort(columns[0], kind="stable")
            pick = positions((np.cumsum(counts) - counts)[order], counts[order])
            self._spill.write([c[order] for c in columns], bounds.reshape(-1, 2)[pick].ravel(), replicas[pick])
        else:
            for (name, _), values in zip(FIELDS, columns):
                self._parts[name].extend(values)
            self._run_bounds.extend(bounds)
            self._run_replica.extend(replicas)

    def _columns(self) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """The chunk's rows as FIELDS' columns (in reduce order), its runs' bounds (flat) and
        replicas, and each row's number of runs; the chunk is emptied."""
        rows, n = self._rows, len(self._rows)
        v = dict(zip(READ, zip(*rows)))
        counts, bounds = _bounds(v["token_steps"])
        replica = np.array(v["replica"], dtype=np.int32)
        replicas = np.repeat(replica, counts)
        if self._moved:
            first = np.cumsum(counts) - counts
            for i, reps in self._moved.items():
                replicas[first[i]:first[i] + counts[i]] = reps
        reroutes = np.zeros(n, dtype=np.int32)
        for i, k in self._reroutes.items():
            reroutes[i] = k
        lab = self._labels
        made = {"seq": self._seqs, "tenant": lab["tenant"].codes_of(v["tenant"]),
                "slo_class": lab["slo_class"].codes_of(v["slo_class"]), "session_id": _ids(v["session_id"]),
                "program_id": _ids(v["program_id"]), "state": list(map(int, v["state"])), "replica": replica,
                "num_reroutes": reroutes, "lora": lab["lora"].codes_of(v["lora"]), "num_runs": counts}
        columns = [_column(made[name] if name in made else v[name], dtype) for name, dtype in FIELDS]
        self._rows, self._seqs, self._reroutes, self._moved = [], [], {}, {}
        return columns, bounds, replicas, counts

    def _stream_runs(self, live: bool = False) -> None:
        """Send the token runs of the rows reduced since the last call (and, with `live`, of
        the requests still held: the run is over) to the helper reducing the gaps."""
        rows = self._rows[self._streamed:]
        self._streamed = len(self._rows)
        reqs = [r for _, r in self._live.values() if r.token_steps] if live else []
        if reqs and any(r.moves for r in reqs):
            self.itl_sink.stream_itl = False
            return
        steps = [row[_TOKEN_STEPS] for row in rows] + [r.token_steps for r in reqs]
        counts, bounds = _bounds(steps)
        replica = np.array([row[_REPLICA] for row in rows] + [r.replica for r in reqs], dtype=np.int64)
        self.itl_sink.add_runs(bounds, np.repeat(replica, counts), counts)

    def _send_watermarks(self) -> None:
        """Per replica, the lowest step a run not sent yet can start at: the first step of the
        live requests' runs, and for those without a token yet, the steps logged so far.
        (Called as a request arrives: no replica is in the middle of logging steps.)"""
        marks = self.logged()
        for _, r in self._live.values():
            steps = r.token_steps
            if steps:
                if r.moves:
                    self.itl_sink.stream_itl = False
                    self.itl_sink = None
                    return
                if steps[0] < marks[r.replica]:
                    marks[r.replica] = steps[0]
        self.itl_sink.add_watermarks(marks)

    def stream_end(self) -> None:
        """The run is over: the last runs (ended and live requests) go to the gaps' helper."""
        if self.itl_sink is not None:
            self._stream_runs(live=True)
            self.itl_sink = None
        self.logged = None  # (it reads the cluster's replicas: the result keeps the table, not the run)

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
        return row_slices(self._n, rows or (ROWS_PER_PASS if self.spilled else max(self._n, 1)))

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
        return token_runs(self.cols, self._run, rows)

    def run_reader(self) -> SpilledRuns | HeldRuns:
        """The token runs as `Result.run_chunks` reads them, picklable for the step log's
        helper process: the files it reads alone when the rows were spilled, else the arrays."""
        if self.spilled:
            return SpilledRuns(self.cols, self._n, ROWS_PER_PASS)
        return HeldRuns([self.token_runs_of(rows) for rows in self.chunks()])

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


def _bounds(steps) -> tuple[np.ndarray, np.ndarray]:
    """(runs of each request, their flat start/end bounds) of the requests' `token_steps`."""
    counts = np.fromiter(map(len, steps), np.int64, len(steps)) >> 1
    return counts, np.fromiter(chain.from_iterable(steps), np.int64, 2 * int(counts.sum()))


def _column(values, dtype) -> np.ndarray:
    """`np.asarray(values, dtype=dtype)`: a tuple or list of Python scalars through `np.fromiter`,
    which converts each value by the dtype's own setter as `asarray` does (None in a float
    column is NaN there too), without first walking the sequence for its shape and types
    (about 30 % fewer instructions a value; a piece is about 21 values a request). An array,
    or a column `fromiter` refuses, goes through `asarray`."""
    if type(values) is list or type(values) is tuple:
        n = len(values)
        try:
            if n > 1 and (dtype is not np.float64 or values[0] is None) and values.count(values[0]) == n:
                # A column the run does not vary (a plain workload's tenant, priority, SLO class,
                # session and program ids, SLO targets, adapter, state, preemptions: about half
                # of a piece): its first value converted by the same setter, then repeated. Equal
                # values convert alike in an integer or bool column; in a float column only None
                # is taken (0.0 equals -0.0, which converts to another float), so the same array.
                return np.repeat(np.fromiter(values[:1], dtype, 1), n)
            return np.fromiter(values, dtype, n)
        except TypeError:
            pass
    return np.asarray(values, dtype=dtype)


def _ids(values: tuple) -> tuple | list:
    """Session or program ids with NONE_ID for None (a run without them: every value)."""
    nones = values.count(None)
    if nones == len(values):
        return [NONE_ID] * nones
    return [NONE_ID if x is None else x for x in values] if nones else values


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

