"""Reading your own points: a CSV / TSV / semicolon / whitespace table, from a file or pasted text.

One function, `read_points`, for the Python API, the command line and the app. A header is optional
(the first line is a header when none of its fields is a number); the two columns used are the first
two, or two named or numbered ones of a wider table. Every bad row is reported by its data-row number
(from 1; the header, blank lines and `#` comment lines are not rows) and its line in the file, and the
good rows are kept; `strict=True` raises `BadRowError` at the first bad row instead (the CLI's mode).
Input that cannot be a table of points at all raises `DataError` before anything is returned.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iclebm.errors import BadRowError, DataError

# Refused before parsing: the model reads 64 points, so a table this large is a wrong file, and the
# app would spend seconds of a shared server's CPU on it.
MAX_BYTES = 5_000_000
DELIMITERS = ("\t", ";", ",")  # per line, the first present wins; else whitespace
DELIMITER_NAMES = {"\t": "tab", ";": "semicolon", ",": "comma", " ": "whitespace"}


@dataclass(frozen=True)
class BadRow:
    row: int  # data-row number, from 1
    line: int  # line of the file, from 1
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} (line {self.line}): {self.reason}"


@dataclass(frozen=True)
class PointsTable:
    """What `read_points` found: the good points, where they came from, and every bad row."""

    points: np.ndarray  # (N, 2) float64, file order
    rows: list[int]  # data-row number of each point
    bad: list[BadRow] = field(default_factory=list)
    columns: tuple[str, str] = ("x", "y")  # the names of the two columns used
    header: list[str] | None = None  # the header's fields, when there is one
    n_columns: int = 2  # fields per row of the table
    delimiter: str = ","

    def summary(self) -> str:
        extra = f"; {len(self.bad)} bad row(s) skipped" if self.bad else ""
        return (f"{len(self.points)} point(s) from columns {self.columns[0]!r}, {self.columns[1]!r} of a "
                f"{self.n_columns}-column {DELIMITER_NAMES[self.delimiter]}-separated table{extra}")


def _text_of(source: str | bytes | os.PathLike, max_bytes: int) -> str:
    """The text of a path (os.PathLike), bytes (an upload) or str (pasted text), size-checked first."""
    if isinstance(source, str) and "\n" not in source and len(source) < 4096 and os.path.isfile(source):
        source = Path(source)  # read_points("my.csv"): a file name, not one line of pasted text
    if isinstance(source, os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        size = path.stat().st_size
        if size > max_bytes:
            raise DataError(f"{path.name} is {size:,} bytes; points files above {max_bytes:,} bytes are "
                            "refused (the model reads at most 64 points)")
        source = path.read_bytes()
    if isinstance(source, bytes):
        if len(source) > max_bytes:
            raise DataError(f"the file is {len(source):,} bytes; points files above {max_bytes:,} bytes are "
                            "refused (the model reads at most 64 points)")
        if b"\0" in source:
            raise DataError("this is a binary file, not a text table of points (CSV, TSV or whitespace)")
        try:
            source = source.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(f"this is not UTF-8 text (byte {e.start} is {source[e.start]:#04x}); save the "
                            "table as CSV or TSV text") from None
    if len(source) > max_bytes:
        raise DataError(f"the text is {len(source):,} characters; above {max_bytes:,} it is refused")
    if "\0" in source:
        raise DataError("this is binary data, not a text table of points")
    return source


def _delimiter(line: str) -> str | None:
    for d in DELIMITERS:
        if d in line:
            return d
    return " " if len(line.split()) > 1 else None


def _split(line: str, delimiter: str) -> list[str]:
    if delimiter == " ":
        return line.split()
    return [f.strip() for f in next(csv.reader([line], delimiter=delimiter))]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _column_index(spec: int | str, header: list[str] | None, n_columns: int) -> int:
    if isinstance(spec, str) and header is not None and spec in header:
        return header.index(spec)
    if isinstance(spec, str) and not spec.lstrip("-").isdigit():
        names = ", ".join(map(repr, header)) if header else "none (the table has no header)"
        raise DataError(f"no column named {spec!r}; the columns are {names}")
    i = int(spec)
    if not 0 <= i < n_columns:
        raise DataError(f"column {i} does not exist; the table has columns 0..{n_columns - 1}")
    return i


def read_points(
    source: str | bytes | os.PathLike, columns: tuple[int | str, int | str] | None = None, *,
    strict: bool = False, max_bytes: int = MAX_BYTES,
) -> PointsTable:
    """Points (N, 2) float64 from a table. `source`: a path (a pathlib.Path, or a str naming an existing
    file), the bytes of an upload, or pasted text (str). `columns`: two column names (from the header)
    or 0-based indices; default the first two. A row is bad when it has another number of fields than
    the table, or a used cell is not a finite number. DataError: empty, binary, larger than max_bytes,
    a single column, mixed delimiters, or no good row; BadRowError (strict): the first bad row."""
    text = _text_of(source, max_bytes)
    lines = [(i + 1, s.strip()) for i, s in enumerate(text.splitlines())]
    lines = [(i, s) for i, s in lines if s and not s.startswith("#")]
    if not lines:
        raise DataError("the table is empty: no line with values")
    delims = Counter(d for _, s in lines if (d := _delimiter(s)) is not None)
    if not delims:
        raise DataError("the table has a single column; two columns (x and y) are needed")
    if len(delims) > 1:
        first = {d: next(i for i, s in lines if _delimiter(s) == d) for d in delims}
        kinds = ", ".join(f"{DELIMITER_NAMES[d]} (first on line {i})" for d, i in sorted(first.items(),
                                                                                        key=lambda t: t[1]))
        raise DataError(f"mixed delimiters: {kinds}; use one delimiter on every line")
    delimiter = next(iter(delims))
    fields = [(i, _split(s, delimiter)) for i, s in lines]
    header = None
    if all(_number(f) is None for f in fields[0][1]):
        header = fields[0][1]
        fields = fields[1:]
    counts = Counter(len(f) for _, f in fields)
    n_columns = len(header) if header is not None else (counts.most_common(1)[0][0] if counts else 0)
    if n_columns < 2:
        raise DataError("the table has a single column; two columns (x and y) are needed")
    if not fields:
        raise DataError("the table has a header but no data rows")
    spec = columns if columns is not None else (0, 1)
    ix, iy = (_column_index(c, header, n_columns) for c in spec)
    if ix == iy:
        raise DataError("x and y must be two different columns")
    names = (header[ix], header[iy]) if header is not None else (f"column {ix}", f"column {iy}")
    good: list[tuple[float, float]] = []
    rows: list[int] = []
    bad: list[BadRow] = []
    for row, (line, f) in enumerate(fields, start=1):
        reason = _row_problem(f, n_columns, ix, iy)
        if reason is None:
            good.append((float(f[ix]), float(f[iy])))
            rows.append(row)
            continue
        if strict:
            raise BadRowError(row, line, reason)
        bad.append(BadRow(row, line, reason))
    if not good:
        raise DataError(f"no usable row: all {len(bad)} rows are bad; the first: {bad[0]}")
    return PointsTable(np.asarray(good, dtype=np.float64).reshape(-1, 2), rows, bad, names, header,
                       n_columns, delimiter)


def _row_problem(f: list[str], n_columns: int, ix: int, iy: int) -> str | None:
    if len(f) != n_columns:
        return f"{len(f)} field(s), expected {n_columns}"
    for i in (ix, iy):
        value = _number(f[i])
        if value is None:
            return f"{f[i]!r} is not a number" if f[i] else "an empty cell is not a number"
        if not math.isfinite(value):
            return f"{f[i]!r} is not a finite number"
    return None


def points_csv(points: np.ndarray | list, columns: tuple[str, str] = ("x", "y")) -> str:
    """The points as CSV text with a header; repr() floats, so reading it back gives the same numbers."""
    arr = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return "\n".join([",".join(columns)] + [f"{x!r},{y!r}" for x, y in arr.tolist()]) + "\n"
