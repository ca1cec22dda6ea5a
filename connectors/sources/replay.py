"""``replay``: recorded files (CSV, NumPy ``.npy``/``.npz``, MATLAB ``.mat``) fed as streams.

Each file feeds one stream of the config. Samples are sent in chunks in time order across all the
files of the source, paced by ``speedup`` like a live sensor (``"max"`` for as fast as possible).

Options
-------
The list form, one table per file::

    [sources.bench]
    kind = "replay"
    speedup = "max"            # simulated s per wall s; 0 or "max" = as fast as possible
    chunk_samples = 1024       # frames per chunk of vibration and current streams
                               # (temperature, speed and scalar streams: one reading per chunk)
    # start_ns = 0             # time of the first sample of the run (default: now)
    # delimiter, time_column, decimate, header: defaults for every file below

    [[sources.bench.files]]
    path = "cwru/ir007_105.mat"        # relative to the config file's folder
    stream = "bearing1/vib"            # "<asset>/<stream>" of the config
    variable = "DE_time"               # .mat/.npz: exact name, or the unique name ending so
    # rate_hz = 12000                  # the file's rate; default: the stream's rate x decimate,
                                       # or from time_column
    # decimate = 4                     # keep every 4th sample after an anti-alias filter
    # offset_s = 0.0                   # this file starts offset_s after the run's start
    # start_ns = 0                     # or at this absolute time

    [[sources.bench.files]]
    path = "skab/valve1/0.csv"
    stream = "pump/current"
    column = "Current"                 # CSV: header name or 0-based index
    # columns = ["Ia", "Ib", "Ic"]     # several channels (3-phase current), interleaved
    time_column = "datetime"           # numbers (s) or ISO date-times; default: row / rate_hz
    # delimiter = ";"                  # default: guessed from the first line (',' ';' or tab)
    # header = true                    # default: a first row that is not numbers is a header

The single-file form puts one file's keys (``path``, ``stream``, ``column`` ...) directly in the
source table.

Behaviour
---------
- A missing file, an unknown stream, a column or variable the file lacks, or a rate that does not
  match the stream's configured rate is a :class:`~machinewatch.engine.errors.ConfigError` at
  construction, with the key path; the header and variable names are read, not the data. A file
  that fails to load later (changed, truncated) is a
  :class:`~machinewatch.engine.errors.ConnectorError` from :meth:`ReplaySource.chunks`.
- A CSV row with a non-numeric value (or too few fields) is skipped and yielded as
  ``Rejected(stream_id, "bad_row", "file.csv line 17: ...")``; the next chunk starts at the right
  time (no chunk spans the hole), and ``seq`` stays consecutive.
- With ``time_column``, a jump in time of more than 1.5 sample periods also starts a new chunk.
- ``decimate = N`` runs :func:`scipy.signal.decimate` (order-8 Chebyshev, zero phase) on each
  gap-free segment; segments too short to filter are rejected as ``short_segment``.
- Values go out as float32; NaN in a NumPy or MATLAB array is passed on (the engine flags it).
"""

from __future__ import annotations

__all__ = ["FileSpec", "ReplaySource", "load_file"]

import asyncio
import csv
import heapq
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from machinewatch.connectors.base import Rejected, Source
from machinewatch.connectors.sources.pacing import Pacer, check_pacing_options, pacing_options
from machinewatch.engine.config import Config, _Checker
from machinewatch.engine.errors import ConfigError, ConfigProblem, ConnectorError
from machinewatch.engine.types import Chunk

log = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]

_CSV_EXT = (".csv", ".txt", ".tsv")
_EXTENSIONS = (*_CSV_EXT, ".npy", ".npz", ".mat")
_FILE_KEYS = {
    "path",
    "stream",
    "column",
    "columns",
    "variable",
    "rate_hz",
    "start_ns",
    "offset_s",
    "delimiter",
    "time_column",
    "decimate",
    "header",
}
_DEFAULT_KEYS = {"delimiter", "time_column", "decimate", "header"}
_SOURCE_KEYS = {"speedup", "chunk_samples", "start_ns", "files"} | _FILE_KEYS
_WAVEFORM_KINDS = ("vibration", "current")
_MIN_DECIMATE_SAMPLES = 64


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One file to replay, resolved against the config."""

    path: Path
    stream_id: str
    key_path: str  # where it sits in the config, for messages
    columns: tuple[str | int, ...] = ()
    variable: str | None = None
    rate_hz: float | None = None
    start_ns: int | None = None
    offset_s: float = 0.0
    delimiter: str | None = None
    time_column: str | int | None = None
    decimate: int = 1
    header: bool | None = None
    channels: int = 1
    stream_rate_hz: float = 1.0
    frames_per_chunk: int = 1

    @property
    def kind(self) -> str:
        """``"csv"``, ``"npy"``, ``"npz"`` or ``"mat"``."""
        ext = self.path.suffix.lower()
        return "csv" if ext in _CSV_EXT else ext[1:]


@dataclass(slots=True)
class Loaded:
    """A file's data after parsing: ``data`` ``(n, channels)``, its times and rejected rows."""

    data: F64
    times_s: F64  # relative to the file's first sample
    rate_hz: float
    bad: list[tuple[float, str]] = field(default_factory=list)  # (time_s, detail)


# --------------------------------------------------------------------------- option checks


def _check_file_keys(c: _Checker, t: Mapping[str, Any], p: str, *, top_level: bool) -> None:
    if not top_level:
        c.unknown(t, _FILE_KEYS, p)
    c.get(t, "path", p, str, None, required=True)
    c.get(
        t,
        "stream",
        p,
        str,
        None,
        required=True,
        check=lambda v: None if v.count("/") == 1 and all(v.split("/")) else 'must be "<asset>/<stream>"',
    )
    _check_file_defaults(c, t, p)
    c.get(t, "rate_hz", p, float, None, check=lambda v: None if v > 0 else "must be > 0")
    c.get(t, "start_ns", p, int, None, check=lambda v: None if v >= 0 else "must be >= 0")
    c.get(t, "offset_s", p, float, 0.0, check=lambda v: None if v >= 0 else "must be >= 0")
    c.get(t, "variable", p, str, None)
    c.get(t, "column", p, (str, int), None, check=_column_check)
    cols = c.get(t, "columns", p, list, None)
    for i, col in enumerate(cols or []):
        if isinstance(col, bool) or not isinstance(col, str | int) or _column_check(col):
            c.bad(f"{p}.columns[{i}]", "must be a column name or a 0-based index")
    if cols is not None and not cols:
        c.bad(f"{p}.columns", "must name at least one column")
    if "column" in t and "columns" in t:
        c.bad(f"{p}.columns", "give column or columns, not both")


def _check_file_defaults(c: _Checker, t: Mapping[str, Any], p: str) -> None:
    c.get(t, "delimiter", p, str, None, check=lambda v: None if len(v) == 1 else "must be one character")
    c.get(t, "time_column", p, (str, int), None, check=_column_check)
    c.get(t, "decimate", p, int, 1, check=lambda v: None if 1 <= v <= 64 else "must be 1-64")
    c.get(t, "header", p, bool, None)


def _column_check(v: str | int) -> str | None:
    if isinstance(v, int) and v < 0:
        return "must be >= 0"
    return None


def _file_tables(options: Mapping[str, Any], path: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(key path, table) of every file entry, with the source-level defaults applied."""
    defaults = {k: options[k] for k in _DEFAULT_KEYS if k in options}
    files = options.get("files")
    if isinstance(files, list):
        return [(f"{path}.files[{i}]", {**defaults, **f}) for i, f in enumerate(files) if isinstance(f, dict)]
    if "path" in options:
        return [(path, {k: v for k, v in options.items() if k in _FILE_KEYS})]
    return []


# --------------------------------------------------------------------------- readers


def _sniff_delimiter(line: str) -> str:
    counts = {d: line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _first_line(path: Path) -> str:
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        for line in fh:
            if line.strip():
                return line.rstrip("\r\n")
    return ""


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _csv_layout(spec: FileSpec) -> tuple[str, bool, list[str], int]:
    """Delimiter, whether there is a header, the header's names (or []) and the row width."""
    line = _first_line(spec.path)
    delim = spec.delimiter or _sniff_delimiter(line)
    first = next(csv.reader([line], delimiter=delim), [])
    first = [f.strip() for f in first]
    header = spec.header
    if header is None:
        named = any(isinstance(c, str) for c in (*spec.columns, spec.time_column))
        header = named or any(not _is_number(f) for f in first)
    return delim, header, first if header else [], len(first)


def _resolve_column(col: str | int, names: list[str], width: int, what: str) -> int:
    if isinstance(col, int):
        if width and col >= width:
            raise KeyError(f"{what} {col} is out of range (the file has {width} columns)")
        return col
    if col not in names:
        raise KeyError(f"{what} {col!r} is not in the header ({', '.join(names)})")
    return names.index(col)


def _mat_variables(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    from scipy import io

    try:
        return [(n, tuple(shape)) for n, shape, _ in io.whosmat(str(path))]
    except NotImplementedError as exc:  # MATLAB v7.3 is HDF5
        raise ValueError(f"{path.name}: MATLAB v7.3 (HDF5) files are not supported") from exc


def _pick_variable(names: list[str], wanted: str | None, path: Path) -> str:
    arrays = [n for n in names if not n.startswith("__")]
    if wanted is None:
        if len(arrays) == 1:
            return arrays[0]
        raise KeyError(
            f"{path.name} holds {len(arrays)} arrays ({', '.join(arrays)}); name one with variable = ..."
        )
    if wanted in arrays:
        return wanted
    ends = [n for n in arrays if n.endswith(wanted)]
    if len(ends) == 1:
        return ends[0]
    why = "several" if ends else "no"
    raise KeyError(f"{path.name} has {why} variable named or ending {wanted!r} (it has {', '.join(arrays)})")


def _array_columns(shape: tuple[int, ...], spec: FileSpec) -> list[int] | None:
    """Columns of a 2-D array to use, ``None`` for a 1-D (or one-column) array."""
    if len(shape) == 1 or (len(shape) == 2 and 1 in shape):
        if spec.channels != 1:
            raise KeyError(f"the array has one channel, the stream has {spec.channels}")
        if spec.columns and spec.columns != (0,):
            raise KeyError("the array has one column")
        return None
    if len(shape) != 2:
        raise KeyError(f"the array has shape {shape}; expected 1-D or 2-D")
    width = shape[1]
    if spec.columns:
        cols = []
        for c in spec.columns:
            if not isinstance(c, int) or c >= width:
                raise KeyError(f"column {c!r}: the array has {width} columns (give 0-based indices)")
            cols.append(c)
        return cols
    if width == spec.channels:
        return list(range(width))
    raise KeyError(f"the array has {width} columns; choose with column = i or columns = [...]")


def check_file(spec: FileSpec) -> None:
    """Cheap start-up check: the file can be read and holds what the spec names.

    Reads only the CSV's first line, the ``.npz`` index, the ``.mat`` variable list or the
    ``.npy`` header. Raises ``OSError``, ``KeyError`` or ``ValueError`` with a clear message.
    """
    kind = spec.kind
    if kind == "csv":
        _, _, names, width = _csv_layout(spec)
        for c in spec.columns:
            _resolve_column(c, names, width, "column")
        if spec.time_column is not None:
            _resolve_column(spec.time_column, names, width, "time_column")
    elif kind == "npy":
        arr = np.load(spec.path, mmap_mode="r", allow_pickle=False)
        _array_columns(arr.shape, spec)
    elif kind == "npz":
        with np.load(spec.path, allow_pickle=False) as z:
            name = _pick_variable(list(z.files), spec.variable, spec.path)
            _array_columns(z[name].shape, spec)
    elif kind == "mat":
        vars_ = _mat_variables(spec.path)
        name = _pick_variable([n for n, _ in vars_], spec.variable, spec.path)
        _array_columns(dict(vars_)[name], spec)
    if spec.time_column is not None and kind != "csv":
        raise KeyError("time_column applies to CSV files only")


def _parse_time(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        dt = datetime.fromisoformat(s.strip())
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()


def _read_csv(spec: FileSpec) -> tuple[F64, F64 | None, list[tuple[int, str]]]:
    """Values ``(rows, channels)``, times (or None) and the bad rows ``(row index, detail)``."""
    delim, header, names, width = _csv_layout(spec)
    cols = [_resolve_column(c, names, width, "column") for c in spec.columns] or [
        next(i for i in range(max(width, 2)) if i != _time_index(spec, names, width))
    ]
    tcol = _time_index(spec, names, width)
    values: list[list[float]] = []
    times: list[float] = []
    bad: list[tuple[int, str]] = []
    row_idx = 0
    with spec.path.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=delim)
        for rec in reader:
            line = reader.line_num
            if header and line == 1:
                continue
            if not rec or all(not f.strip() for f in rec):
                continue
            try:
                vals = [float(rec[c]) for c in cols]
                if tcol is not None:
                    times.append(_parse_time(rec[tcol]))
                values.append(vals)
            except (ValueError, IndexError) as exc:
                why = "too few fields" if isinstance(exc, IndexError) else str(exc)
                bad.append((row_idx, f"{spec.path.name} line {line}: {why}"))
            row_idx += 1
    data = np.asarray(values, np.float64).reshape(-1, len(cols))
    t = np.asarray(times, np.float64) if tcol is not None else None
    return data, t, bad


def _time_index(spec: FileSpec, names: list[str], width: int) -> int | None:
    if spec.time_column is None:
        return None
    return _resolve_column(spec.time_column, names, width, "time_column")


def _read_array(spec: FileSpec) -> F64:
    kind = spec.kind
    if kind == "npy":
        arr = np.load(spec.path, allow_pickle=False)
    elif kind == "npz":
        with np.load(spec.path, allow_pickle=False) as z:
            arr = z[_pick_variable(list(z.files), spec.variable, spec.path)]
    else:
        from scipy import io

        name = _pick_variable([n for n, _ in _mat_variables(spec.path)], spec.variable, spec.path)
        arr = io.loadmat(str(spec.path), variable_names=[name])[name]
    cols = _array_columns(arr.shape, spec)
    a = np.asarray(arr, np.float64)
    if cols is None:
        return a.reshape(-1, 1)
    return a[:, cols]


def load_file(spec: FileSpec) -> Loaded:
    """Read, clean, split and decimate one file (blocking; run it in a thread)."""
    bad_rows: list[tuple[int, str]] = []
    times: F64 | None = None
    if spec.kind == "csv":
        data, times, bad_rows = _read_csv(spec)
    else:
        data = _read_array(spec)
    rate = spec.rate_hz
    n_rows = data.shape[0] + len(bad_rows)
    if times is not None:
        if rate is None:
            d = np.diff(times)
            d = d[d > 0]
            if d.size == 0:
                raise ValueError("time_column: cannot derive a rate (fewer than two distinct times)")
            rate = 1.0 / float(np.median(d))
        rel = times - times[0] if times.size else times
    else:
        if rate is None:
            rate = spec.stream_rate_hz * spec.decimate
        # times by row index, so a skipped bad row leaves a hole of one period
        good = np.ones(n_rows, bool)
        good[[i for i, _ in bad_rows]] = False
        rel = np.flatnonzero(good).astype(np.float64) / rate
    bad_t = []
    for i, detail in bad_rows:
        bad_t.append((i / rate if times is None else _bad_time(i, bad_rows, rel), detail))
    return Loaded(data, rel, rate, bad_t)


def _bad_time(row: int, bad_rows: list[tuple[int, str]], rel: F64) -> float:
    # with a time column a bad row has no trustworthy time: place it at its good neighbour
    good_before = row - sum(1 for i, _ in bad_rows if i < row)
    if rel.size == 0:
        return 0.0
    return float(rel[min(good_before, rel.size - 1)])


def segments(times_s: F64, rate_hz: float) -> list[tuple[int, int]]:
    """``[start, stop)`` index ranges of gap-free runs (a step > 1.5 periods, or backwards)."""
    if times_s.size == 0:
        return []
    step = np.diff(times_s)
    cut = np.flatnonzero((step > 1.5 / rate_hz) | (step <= 0.0)) + 1
    edges = [0, *cut.tolist(), times_s.size]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


@dataclass(frozen=True, slots=True)
class _Item:
    """One thing to emit: a chunk (values) or a rejected record (detail)."""

    t_end_s: float  # relative to the file's start
    order: int
    values: F64 | None = None
    t0_s: float = 0.0
    rate_hz: float = 0.0
    detail: str = ""
    reason: str = ""


def plan_file(spec: FileSpec, loaded: Loaded) -> Iterator[_Item]:
    """Chunks and rejections of one file in time order (the decimation happens here)."""
    rate_in = loaded.rate_hz
    q = spec.decimate
    rate = rate_in / q
    rejects = sorted(loaded.bad, key=lambda b: b[0])
    ri = 0
    order = 0
    last = 0.0  # keys must not go back in time (heapq.merge needs sorted inputs)
    for a, b in segments(loaded.times_s, rate_in):
        seg = loaded.data[a:b]
        t_start = float(loaded.times_s[a])
        while ri < len(rejects) and rejects[ri][0] <= t_start:
            yield _Item(max(rejects[ri][0], last), order, detail=rejects[ri][1], reason="bad_row")
            ri += 1
            order += 1
        if q > 1:
            if seg.shape[0] < _MIN_DECIMATE_SAMPLES:
                yield _Item(
                    max(t_start, last),
                    order,
                    reason="short_segment",
                    detail=f"{spec.path.name}: {seg.shape[0]} samples at t={t_start:.6g} s "
                    f"are too few to decimate by {q}",
                )
                order += 1
                continue
            from scipy import signal

            seg = signal.decimate(seg, q, axis=0, zero_phase=True)
        n = spec.frames_per_chunk
        for k in range(0, seg.shape[0], n):
            block = seg[k : k + n]
            t0 = t_start + k / rate
            while ri < len(rejects) and rejects[ri][0] <= t0:
                yield _Item(max(rejects[ri][0], last), order, detail=rejects[ri][1], reason="bad_row")
                ri += 1
                order += 1
            # a file whose time goes backwards is still emitted in file order
            last = max(last, t0 + block.shape[0] / rate)
            yield _Item(last, order, block, t0, rate)
            order += 1
    for t_bad, detail in rejects[ri:]:
        yield _Item(max(t_bad, last), order, detail=detail, reason="bad_row")
        order += 1


class ReplaySource(Source):
    """Replays files as streams (see the module docstring for the options).

    Parameters
    ----------
    name, options, config
        The source's name, its option table (without ``kind``) and the whole config.
    clock, sleep
        Wall clock and sleep used for pacing (injectable for tests).

    Raises
    ------
    ConfigError
        When an option is invalid, a stream unknown, a file missing or unreadable, or a column
        or variable absent (by key path).
    """

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        config: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        super().__init__(name, options, config)
        path = f"sources.{name}"
        problems = self.validate_options(options, path)
        if problems:
            raise ConfigError(problems)
        self.speedup, self.chunk_samples, self.start_ns = pacing_options(options)
        base = config.path.parent if config.path is not None else Path.cwd()
        self.files: list[FileSpec] = []
        for key_path, t in _file_tables(options, path):
            spec, probs = self._spec(key_path, t, base, config)
            problems += probs
            if spec is not None:
                self.files.append(spec)
        if problems:
            raise ConfigError(problems)
        self._clock = clock
        self._sleep = sleep

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        """Every problem with the option table, by key path (no config, no file access)."""
        c = _Checker()
        c.unknown(options, _SOURCE_KEYS, path)
        check_pacing_options(c, options, path)
        files = c.get(options, "files", path, list, None)
        if files is not None:
            if "path" in options:
                c.bad(f"{path}.path", "give files = [...] or one file's keys, not both")
            if not files:
                c.bad(f"{path}.files", "must list at least one file")
            _check_file_defaults(c, options, path)
            for i, f in enumerate(files):
                fp = f"{path}.files[{i}]"
                if not isinstance(f, dict):
                    c.bad(fp, "must be a table")
                    continue
                _check_file_keys(c, f, fp, top_level=False)
        elif "path" in options:
            _check_file_keys(c, options, path, top_level=True)
        else:
            c.bad(f"{path}.files", "is required (or give path and stream for one file)")
        return c.problems

    def _spec(
        self, p: str, t: Mapping[str, Any], base: Path, config: Config
    ) -> tuple[FileSpec | None, list[ConfigProblem]]:
        stream_id = str(t["stream"])
        try:
            _, scfg = config.stream(stream_id)
        except KeyError:
            return None, [ConfigProblem(f"{p}.stream", f"names no stream of the config ({stream_id!r})")]
        fpath = Path(str(t["path"]))
        if not fpath.is_absolute():
            fpath = (base / fpath).resolve()
        if fpath.suffix.lower() not in _EXTENSIONS:
            return None, [
                ConfigProblem(
                    f"{p}.path", f"unsupported file type {fpath.suffix!r} (one of {', '.join(_EXTENSIONS)})"
                )
            ]
        cols: tuple[str | int, ...] = ()
        if "columns" in t:
            cols = tuple(t["columns"])
        elif "column" in t:
            cols = (t["column"],)
        rate = float(t["rate_hz"]) if "rate_hz" in t else None
        q = int(t.get("decimate", 1))
        spec = FileSpec(
            path=fpath,
            stream_id=stream_id,
            key_path=p,
            columns=cols,
            variable=t.get("variable"),
            rate_hz=rate,
            start_ns=int(t["start_ns"]) if "start_ns" in t else None,
            offset_s=float(t.get("offset_s", 0.0)),
            delimiter=t.get("delimiter"),
            time_column=t.get("time_column"),
            decimate=q,
            header=t.get("header"),
            channels=scfg.channels,
            stream_rate_hz=scfg.rate_hz,
            frames_per_chunk=self.chunk_samples if scfg.kind in _WAVEFORM_KINDS else 1,
        )
        probs: list[ConfigProblem] = []
        if cols and spec.kind == "csv" and len(cols) != scfg.channels:
            probs.append(
                ConfigProblem(
                    f"{p}.columns", f"{len(cols)} column(s) for a stream of {scfg.channels} channel(s)"
                )
            )
        if rate is not None and not math.isclose(rate / q, scfg.rate_hz, rel_tol=1e-6):
            probs.append(
                ConfigProblem(
                    f"{p}.rate_hz",
                    f"{rate:g} Hz / decimate {q} = {rate / q:g} Hz, but {stream_id} is "
                    f"configured at {scfg.rate_hz:g} Hz",
                )
            )
        try:
            check_file(spec)
        except FileNotFoundError:
            probs.append(ConfigProblem(f"{p}.path", f"no such file: {fpath}"))
        except (OSError, ValueError) as exc:
            probs.append(ConfigProblem(f"{p}.path", f"cannot read {fpath}: {exc}"))
        except KeyError as exc:
            key = (
                "time_column"
                if "time_column" in str(exc)
                else ("variable" if spec.kind in ("mat", "npz") and "variable" in str(exc) else "column")
            )
            probs.append(ConfigProblem(f"{p}.{key}", str(exc.args[0]) if exc.args else str(exc)))
        return spec, probs

    def _load_all(self) -> list[Loaded]:
        out = []
        for spec in self.files:
            try:
                loaded = load_file(spec)
            except (OSError, ValueError, KeyError, NotImplementedError) as exc:
                raise ConnectorError(
                    f"replay {self.name}: cannot load {spec.path} ({spec.key_path}): {exc}"
                ) from exc
            if spec.rate_hz is None and spec.time_column is not None:
                got = loaded.rate_hz / spec.decimate
                if not math.isclose(got, spec.stream_rate_hz, rel_tol=0.01):
                    raise ConnectorError(
                        f"replay {self.name}: {spec.path} ({spec.key_path}) has {got:g} Hz by its "
                        f"time column, but {spec.stream_id} is configured at {spec.stream_rate_hz:g} Hz"
                    )
            out.append(loaded)
        return out

    async def chunks(self) -> AsyncIterator[Chunk | Rejected]:
        """Chunks of every file in time order, paced by ``speedup``; rejected rows in between."""
        loaded = await asyncio.to_thread(self._load_all)
        start_ns = self.start_ns if self.start_ns is not None else time.time_ns()
        file_start = [
            s.start_ns if s.start_ns is not None else start_ns + round(s.offset_s * 1e9) for s in self.files
        ]
        origin = min(file_start, default=start_ns)

        def keyed(i: int) -> Iterator[tuple[int, int, int, _Item]]:
            for item in plan_file(self.files[i], loaded[i]):
                yield file_start[i] + round(item.t_end_s * 1e9), i, item.order, item

        seq: dict[str, int] = {}
        pacer = Pacer(self.speedup, self._clock, self._sleep)
        pacer.start()
        for t_end_ns, i, _, item in heapq.merge(*(keyed(i) for i in range(len(self.files)))):
            spec = self.files[i]
            await pacer.wait((t_end_ns - origin) / 1e9)
            if item.values is None:
                yield Rejected(spec.stream_id, item.reason, item.detail)
                continue
            n = seq.get(spec.stream_id, 0)
            seq[spec.stream_id] = n + 1
            yield Chunk(
                spec.stream_id,
                file_start[i] + round(item.t0_s * 1e9),
                item.rate_hz,
                n,
                np.ascontiguousarray(item.values, dtype=np.float32).reshape(-1),
            )
