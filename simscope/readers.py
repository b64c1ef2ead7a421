"""Streaming record readers for JSON Lines, JSON arrays, parquet and CSV, gzip or not.

Owns turning a file of records into ``RawRecord``s, each with the place it came from, and the
errors for files that cannot be read as records (missing, empty, not UTF-8, not JSON, not
objects, a damaged parquet file or one whose strings are not UTF-8). Knows nothing of what a
record means: the preference loader and the probe-corpus importer check the fields, with
:func:`surrogate_error` for a JSON string that holds a lone surrogate (``"\\udc80"``: valid
JSON, but no text), which a reader passes on so that it can be one skippable bad record.

Nothing is held twice in memory: JSON Lines and CSV are read line by line, a JSON array
element by element (``ijson``), parquet by row batches. Locations are 1-based: ``path:LINE``
for JSON Lines and CSV (the line a record starts on), ``path:item N`` for the N-th element of
a JSON array, ``path:row N`` for parquet.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, cast

import ijson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from simscope.errors import SimscopeError
from simscope.storage import reading_parquet, unreadable_parquet

FORMATS: Final = ("jsonl", "json", "parquet", "csv")
"""Record formats, by the name ``--format`` takes."""

SUFFIXES: Final = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".tsv": "csv",
}
"""File-name suffixes and their formats; ``.gz`` after any of them is read transparently."""

EXPECTED: Final = {
    "jsonl": "one JSON object per line",
    "json": "a JSON array of objects",
    "parquet": "a parquet file",
    "csv": "a header row, then one record per row",
}

_GZIP_MAGIC = b"\x1f\x8b"
_BATCH_ROWS = 1024
_SHOW_CHARS = 60

# Preference transcripts can exceed the csv module's default field limit of 128 KiB.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as read, before any field is checked."""

    location: str
    data: dict[str, Any]


def detect_format(path: Path) -> str:
    """The record format of ``path`` from its suffixes (``.gz`` is looked through).

    Raises SimscopeError naming the suffix found and the accepted ones.
    """
    name = Path(path).name.lower().removesuffix(".gz")
    suffix = Path(name).suffix
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    found = repr(suffix) if suffix else "no suffix"
    raise SimscopeError(
        f"{path}: unknown record format: expected a file ending in {_accepted()} (optionally "
        f"followed by .gz), found {found}; rename the file or name the format with --format"
    )


def read_records(path: Path, *, format: str | None = None) -> Iterator[RawRecord]:
    """Stream the records of ``path``, a JSON Lines, JSON array, parquet or CSV file.

    ``format`` overrides the format read from the suffix; gzip is detected by its magic bytes
    or a ``.gz`` suffix. A ``.tsv`` file is read as tab-separated CSV. Every value of a CSV
    record is a string. Raises SimscopeError for a missing or empty file, bytes that are not
    UTF-8, invalid JSON, and a JSON value that is not an object.
    """
    path = Path(path)
    if not path.exists():
        raise SimscopeError(f"{path}: no such file; check the path")
    if not path.is_file():
        raise SimscopeError(f"{path}: not a file; expected a file of records")
    if format is None:
        format = detect_format(path)
    elif format not in FORMATS:
        raise SimscopeError(
            f"format {format!r}: expected one of {', '.join(FORMATS)}; found {format!r}"
        )
    if path.stat().st_size == 0:
        raise _empty(path, format)
    if format == "jsonl":
        return _read_jsonl(path)
    if format == "json":
        return _read_json(path)
    if format == "csv":
        delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
        return _read_csv(path, delimiter)
    return _read_parquet(path)


def show_value(value: Any) -> str:
    """A short rendering of a found value for an error message (``null`` for None)."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except ValueError:  # a circular structure cannot come from a file, but stay total
            text = repr(value)
        if lone_surrogate(text) is not None:  # a message must be printable text
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 1] + "…"


def lone_surrogate(text: str) -> int | None:
    """The index of the first lone surrogate code point in ``text``, None when it has none.

    JSON may spell a UTF-16 surrogate on its own (``"\\udc80"``), and Python keeps it in the
    decoded str, but such a str is not text: it cannot be encoded as UTF-8 (so not stored by
    polars or Arrow, hashed, tokenized or embedded).
    """
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def surrogate_error(location: str, field: str, text: str) -> str | None:
    """The bad-record message for a field whose text holds a lone surrogate (else None)."""
    at = lone_surrogate(text)
    if at is None:
        return None
    return (
        f"{location}: field {field!r}: expected Unicode text, found a lone surrogate "
        f"{text[at]!r} at character {at} of {show_value(text)} (a \\ud800-\\udfff escape must "
        "be one half of a high-low pair, as in \\ud83d\\ude00)"
    )


def find_surrogate(value: Any, field: str = "") -> tuple[str, str] | None:
    """The first string (a key or a value) in a decoded JSON ``value`` holding a lone
    surrogate: its field path (``chosen[1].content``) and the string; None when there is none."""
    if isinstance(value, str):
        return (field, value) if lone_surrogate(value) is not None else None
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{field}.{key}" if field else str(key)
            if isinstance(key, str) and lone_surrogate(key) is not None:
                return name, key
            found = find_surrogate(item, name)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = find_surrogate(item, f"{field}[{i}]")
            if found:
                return found
    return None


def printable(name: str) -> str:
    """``name`` (a file name) with bytes that were not UTF-8 spelled as ``\\xNN``.

    Python decodes such bytes of a file name to lone surrogates, which no table can hold.
    """
    if lone_surrogate(name) is None:
        return name
    try:
        raw = os.fsencode(name)  # surrogates \\udc80-\\udcff stand for the bytes 0x80-0xff
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _accepted() -> str:
    names = list(SUFFIXES)
    return ", ".join(names[:-1]) + " or " + names[-1]


def _empty(path: Path, format: str) -> SimscopeError:
    return SimscopeError(f"{path}: empty file; expected {EXPECTED[format]}")


def _open_binary(path: Path) -> IO[bytes]:
    """``path`` opened for reading bytes, decompressed when it starts with gzip's magic."""
    raw = open(path, "rb")  # noqa: SIM115 -- returned to the caller, who closes it
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if path.name.lower().endswith(".gz"):
        raw.close()
        raise SimscopeError(f"{path}: not gzip data despite the .gz suffix; expected gzip")
    return raw


def _unreadable(path: Path, error: BaseException) -> SimscopeError:
    return SimscopeError(
        f"{path}: damaged or truncated compressed data ({error}); expected a complete gzip "
        "file; re-download or re-compress it"
    )


def _not_utf8(path: Path, line: int, error: UnicodeDecodeError, data: bytes) -> SimscopeError:
    bad = data[error.start : error.start + 4]
    return SimscopeError(
        f"{path}:{line}: expected UTF-8 text, found undecodable bytes {bad!r}; convert the "
        "file to UTF-8"
    )


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _read_jsonl(path: Path) -> Iterator[RawRecord]:
    seen_any = False
    try:
        with _open_binary(path) as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise _not_utf8(path, lineno, e, raw) from None
                if lineno == 1:
                    line = line.removeprefix("\ufeff")
                if not line.strip():
                    continue
                seen_any = True
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as e:
                    hint = (
                        " (this looks like a JSON array: name the format with --format json)"
                        if lineno == 1 and line.lstrip().startswith("[")
                        else ""
                    )
                    raise SimscopeError(
                        f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno}); "
                        f"expected one JSON object per line{hint}"
                    ) from None
                if not isinstance(value, dict):
                    raise SimscopeError(
                        f"{path}:{lineno}: expected a JSON object, found {_kind(value)} "
                        f"{show_value(value)}; write one object per line"
                    )
                yield RawRecord(f"{path}:{lineno}", value)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise _unreadable(path, e) from None
    if not seen_any:
        raise _empty(path, "jsonl")


class _CheckedUtf8:
    """A binary reader that passes bytes through, failing on the first byte that is not UTF-8.

    ``ijson`` reads big chunks, so it cannot say on which line a bad byte sits; this reader
    counts lines as it checks each chunk.
    """

    def __init__(self, f: IO[bytes], path: Path, pushback: bytes = b"") -> None:
        self._f = f
        self._path = path
        self._pushback = pushback
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._lines = 0

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson probes the stream's type with read(0)
            return b""
        if self._pushback:
            chunk, self._pushback = self._pushback, b""
        else:
            chunk = self._f.read(size)
        pending = len(self._decoder.getstate()[0])
        try:
            self._decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as e:
            before = chunk[: max(0, e.start - pending)]
            raise _not_utf8(
                self._path, self._lines + before.count(b"\n") + 1, e, e.object
            ) from None
        self._lines += chunk.count(b"\n")
        return chunk


class _LoneSurrogate(Exception):
    """ijson's C backend met a lone surrogate escape, which it cannot return."""


def _read_json(path: Path) -> Iterator[RawRecord]:
    n = 0
    try:
        for n, value in _json_items(path, ijson):
            yield _json_record(path, n, value)
    except _LoneSurrogate:
        # yajl decodes "\\udc80" to bytes that are not UTF-8 and stops. The pure-Python backend
        # (~8x slower) returns it in a str, for the loader to report as one bad record: read
        # the file again with it, from the item that stopped yajl.
        for k, value in _json_items(path, ijson.get_backend("python")):
            if k > n:
                yield _json_record(path, k, value)


def _json_record(path: Path, n: int, value: Any) -> RawRecord:
    if not isinstance(value, dict):
        raise SimscopeError(
            f"{path}:item {n}: expected a JSON object, found {_kind(value)} "
            f"{show_value(value)}; the array must hold one object per record"
        )
    return RawRecord(f"{path}:item {n}", value)


def _json_items(path: Path, backend: Any) -> Iterator[tuple[int, Any]]:
    """The elements of the top-level array of ``path``, numbered from 1, parsed by an ijson
    ``backend``; raises _LoneSurrogate where the C backend meets a lone surrogate escape."""
    n = 0
    try:
        with _open_binary(path) as f:
            head = f.read(4096)
            if head.startswith(codecs.BOM_UTF8):
                head = head[len(codecs.BOM_UTF8) :]
            while head and not head.lstrip():
                head = f.read(4096)
            if not head:
                raise _empty(path, "json")
            first = head.lstrip()[:1]
            if first != b"[":
                found = "a JSON object" if first == b"{" else "no array"
                raise SimscopeError(
                    f"{path}: expected a JSON array of objects, found {found} at the top "
                    "level; put the records in a top-level array or write JSON Lines"
                )
            reader = _CheckedUtf8(f, path, pushback=head)
            try:
                for value in backend.items(reader, "item", use_float=True):
                    n += 1
                    yield n, value
            except ijson.JSONError as e:
                reason = str(e).strip().splitlines()[0]
                raise SimscopeError(
                    f"{path}: invalid JSON after item {n} ({reason}); expected {EXPECTED['json']}"
                ) from None
            except UnicodeDecodeError:
                # _CheckedUtf8 let only UTF-8 through: these bytes came from a \\u escape.
                raise _LoneSurrogate from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise _unreadable(path, e) from None


def _decoded_lines(f: IO[bytes], path: Path) -> Iterator[str]:
    for lineno, raw in enumerate(f, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _not_utf8(path, lineno, e, raw) from None
        yield line.removeprefix("\ufeff") if lineno == 1 else line


def _read_csv(path: Path, delimiter: str) -> Iterator[RawRecord]:
    try:
        with _open_binary(path) as f:
            reader = csv.reader(_decoded_lines(f, path), delimiter=delimiter, strict=True)
            header: list[str] | None = None
            start = 1
            try:
                for row in reader:
                    line, start = start, reader.line_num + 1
                    if not row:
                        continue
                    if header is None:
                        header = row
                        dupes = sorted({c for c in header if header.count(c) > 1})
                        if dupes:
                            raise SimscopeError(
                                f"{path}:{line}: duplicate column(s) {dupes} in the header; "
                                "expected unique column names"
                            )
                        continue
                    if len(row) != len(header):
                        raise SimscopeError(
                            f"{path}:{line}: expected {len(header)} fields as in the header, "
                            f"found {len(row)}; check the quoting of this row"
                        )
                    yield RawRecord(f"{path}:{line}", dict(zip(header, row, strict=True)))
            except csv.Error as e:
                raise SimscopeError(
                    f"{path}:{reader.line_num}: malformed CSV ({e}); expected {EXPECTED['csv']}"
                ) from None
            if header is None:
                raise _empty(path, "csv")
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise _unreadable(path, e) from None


def _read_parquet(path: Path) -> Iterator[RawRecord]:
    expected = EXPECTED["parquet"]
    n = 0
    try:
        with _open_binary(path) as f, reading_parquet(path, expected):
            for batch in pq.ParquetFile(f).iter_batches(batch_size=_BATCH_ROWS):
                try:
                    rows = batch.to_pylist()
                except UnicodeDecodeError:
                    raise _parquet_not_utf8(path, batch, n) from None
                for row in rows:
                    n += 1
                    yield RawRecord(f"{path}:row {n}", row)
    except zlib.error as e:  # a damaged .parquet.gz
        raise SimscopeError(unreadable_parquet(path, e, expected)) from None


def _parquet_not_utf8(path: Path, batch: pa.RecordBatch, before: int) -> SimscopeError:
    """The error for a string in ``batch`` that is not UTF-8, naming its row and column."""
    # Parquet strings must be UTF-8, but pyarrow does not check them when reading.
    for i in range(batch.num_rows):
        for name in batch.schema.names:
            try:
                batch.column(name)[i].as_py()
            except UnicodeDecodeError as e:
                bad = e.object[e.start : e.start + 4]
                return SimscopeError(
                    f"{path}:row {before + i + 1}: column {name!r}: expected UTF-8 text, found "
                    f"undecodable bytes {bad!r}; rewrite the column as UTF-8 (parquet strings "
                    "must be UTF-8)"
                )
    raise AssertionError("to_pylist failed but every value decodes")  # pragma: no cover
