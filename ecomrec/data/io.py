"""Reading tables with errors that name the file, the row and the column.

Every frame returned here carries ``_file`` (position in the list of files read) and ``_line``
(1-based line in that file, the header being line 1; for Parquet and Excel the record number plus one).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ecomrec.exceptions import DataError

TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".xlsx")


def read_tables(paths: Sequence[Path], columns: Sequence[str]) -> pd.DataFrame:
    """Read and concatenate ``paths`` (all cells as strings), checking ``columns`` are present."""
    frames = [read_table(path, columns, file_index=i) for i, path in enumerate(paths)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def read_table(path: Path, columns: Sequence[str], *, file_index: int = 0) -> pd.DataFrame:
    """One CSV, Parquet or xlsx file as strings, with only ``columns`` kept."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", file=path)
    if path.stat().st_size == 0:
        raise DataError("the file is empty (no header, no rows)", file=path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame = _read_csv(path)
    elif suffix in (".parquet", ".pq"):
        frame = _read_other(path, pd.read_parquet)
    elif suffix == ".xlsx":
        frame = _read_other(path, lambda p: pd.read_excel(p, dtype=str, keep_default_na=False))
    else:
        raise DataError(f"unsupported file type {suffix!r}; expected one of {TABLE_SUFFIXES}", file=path)
    if missing := [c for c in columns if c not in frame.columns]:
        raise DataError(f"missing column(s) {missing}; the file has {list(frame.columns)}", file=path, column=missing[0])
    frame = frame.loc[:, list(columns)]
    frame["_file"] = np.int32(file_index)
    frame["_line"] = np.arange(2, 2 + len(frame), dtype=np.int64)  # the header is line 1
    return frame


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        with warnings.catch_warnings():
            # index_col=False: rows longer than the header must not silently become an index.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", index_col=False)
    except pd.errors.ParserWarning as exc:
        raise DataError(f"rows have more fields than the header: {exc}", file=path, row=2) from exc
    except UnicodeDecodeError as exc:
        # pandas reports the offset inside a buffer: decode the whole file to find the line.
        data = path.read_bytes()
        try:
            data.decode("utf-8")
            offset = exc.start
        except UnicodeDecodeError as whole:
            offset = whole.start
        line = data[:offset].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 (byte {offset}); re-save the file as UTF-8", file=path, row=line) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError("the file is empty (no header, no rows)", file=path) from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"not a well-formed CSV: {exc}", file=path, row=_parser_error_line(str(exc))) from exc


def _parser_error_line(message: str) -> int | None:
    words = message.replace(",", " ").split()
    for before, word in zip(words, words[1:]):
        if before == "line" and word.isdigit():
            return int(word)
    return None


def _read_other(path: Path, reader) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    try:
        frame = reader(path)
        text = [c for c in frame.columns if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c])]
        # Arrow-backed text decodes lazily: decode every cell now, so damaged text fails here.
        frame = frame.astype({c: object for c in text})
        for column in text:
            frame[column] = [v if v is None or isinstance(v, str) else None if pd.isna(v) else str(v) for v in frame[column]]
        return frame
    except Exception as exc:  # pyarrow / openpyxl raise many types for a file that is not theirs (or damaged)
        raise DataError(f"cannot read as {path.suffix} ({type(exc).__name__}: {exc})", file=path) from exc


def fail_at(frame: pd.DataFrame, bad: np.ndarray, files: Sequence[Path], column: str, message: str) -> None:
    """Raise a DataError at the first row where ``bad`` is true (does nothing if none is)."""
    where = np.flatnonzero(bad)
    if len(where) == 0:
        return
    row = frame.iloc[where[0]]
    more = f" ({len(where) - 1} more such rows)" if len(where) > 1 else ""
    raise DataError(f"{message}: {row[column]!r}{more}", file=files[int(row['_file'])], row=int(row["_line"]), column=column)


def parse_numbers(frame: pd.DataFrame, column: str, files: Sequence[Path]) -> pd.Series:
    """The column as float64; an empty or non-numeric cell is a DataError."""
    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw):
        numbers = raw.astype(np.float64)
        fail_at(frame, numbers.isna().to_numpy(), files, column, "missing number")
        return numbers
    numbers = _tolerant(lambda v: pd.to_numeric(v, errors="coerce"), raw.astype(str).str.strip())
    fail_at(frame, numbers.isna().to_numpy(), files, column, "not a number")
    return numbers.astype(np.float64)


def parse_timestamps(frame: pd.DataFrame, column: str, files: Sequence[Path], fmt: str | None = None) -> pd.Series:
    """The column as datetime64[ns] (timezone-naive); an unparseable cell is a DataError.

    With ``fmt`` only that format is accepted; without it ISO 8601 is tried first, then
    pandas' per-element inference. Datetime and numeric (Unix seconds) columns pass through.
    Timestamps with a UTC offset or zone are converted to UTC; those without are taken as they are.
    """
    raw = frame[column]
    if pd.api.types.is_datetime64_any_dtype(raw):
        stamps = raw.dt.tz_convert(None) if getattr(raw.dt, "tz", None) is not None else raw
    elif pd.api.types.is_numeric_dtype(raw):
        stamps = pd.to_datetime(raw, unit="s", errors="coerce")
    else:
        text = raw.astype(str).str.strip()
        stamps = _tolerant(lambda v: pd.to_datetime(v, format=fmt or "ISO8601", errors="coerce", utc=True), text)
        retry = stamps.isna() & (text != "")
        if fmt is None and retry.any():
            stamps.loc[retry] = _tolerant(lambda v: pd.to_datetime(v, format="mixed", errors="coerce", utc=True), text[retry])
        stamps = stamps.dt.tz_convert(None)
    fail_at(frame, stamps.isna().to_numpy(), files, column, f"not a date/time{'' if fmt is None else f' in format {fmt!r}'}")
    outside = ((stamps < pd.Timestamp.min) | (stamps > pd.Timestamp.max)).to_numpy()
    fail_at(frame, outside, files, column, f"date out of range ({pd.Timestamp.min.year + 1}-{pd.Timestamp.max.year - 1})")
    return stamps.astype("datetime64[ns]")


def _tolerant(parse, values: pd.Series) -> pd.Series:  # type: ignore[no-untyped-def]
    """``parse(values)``; if a damaged cell makes the whole call fail, cell by cell (NaN/NaT where
    a cell cannot be parsed), so the caller's check names that cell's row."""
    try:
        return parse(values)
    except Exception:  # noqa: BLE001 -- e.g. pyarrow refusing a cell that is not valid text
        cells = []
        for value in values:
            try:
                cells.append(parse(pd.Series([value], dtype=object)).iloc[0])
            except Exception:  # noqa: BLE001
                cells.append(None)
        return parse(pd.Series([None if c is None or pd.isna(c) else c for c in cells], index=values.index, dtype=object))


def list_tables(folder: Path) -> list[Path]:
    """Data files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES)
