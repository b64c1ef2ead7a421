"""A probe corpus on disk as shards: listing, work units, batched reading, content hash, and
the parts a unit writes.

A corpus too large for memory is a directory (or list) of ProbeCorpus shards, parquet
(``*.parquet``) or JSON lines (``*.jsonl``, ``*.jsonl.gz``), each row ``model``, ``doc_id``,
``text`` (``origin`` is not read). Its row order is the shards' order (sorted by file name),
then the order inside each; it must be ascending in ``doc_id``, which makes row numbers the
same as in :func:`simscope.records.split_probe_corpus` of the same corpus in memory.
:func:`write_corpus_shards` writes a frame that way. A parquet shard is cut into work units
of whole row groups; a JSONL shard is one work unit (it cannot be split without reading it),
so keep JSONL shards near ``execution.unit_docs`` rows, or use parquet.

The corpus's content hash (:class:`simscope.storage.RowHash`, every index's ``input_hash``)
is computed in parallel: a polynomial over the rows' own xxh3-128 digests, so each unit hashes
its rows and the driver combines the units' sums by their row offsets. It depends on the
texts and their order only, not on the sharding, and equals the in-memory builders' hash.

A unit function writes its large outputs as ``.npy`` parts (:func:`part_path`,
:func:`save_part`) under the ``.incomplete/`` directory of the index being built, and returns
a small summary; the stage that owns the index assembles the parts.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from simscope.engine.base import Engine, Summary
from simscope.errors import SimscopeError
from simscope.readers import surrogate_error
from simscope.records import PROBE_SCHEMA, check_frame
from simscope.storage import RowHash, reading_parquet

SHARD_SUFFIXES: Final = (".parquet", ".jsonl", ".jsonl.gz")
_COLUMNS: Final = ("model", "doc_id", "text")
_SHARD: Final = "a ProbeCorpus shard (columns model, doc_id, text)"
_REWRITE: Final = "write the shard again"


@dataclass(frozen=True)
class CorpusShards:
    """The shard files of one model's probe corpus, in row order."""

    paths: tuple[Path, ...]

    @classmethod
    def from_path(cls, path: Path | str | Sequence[Path | str]) -> CorpusShards:
        """A directory's shard files (sorted by name), one shard file, or a list of files."""
        if isinstance(path, str | Path):
            p = Path(path)
            if p.is_dir():
                files = sorted(f for f in p.iterdir() if f.name.endswith(SHARD_SUFFIXES))
                if not files:
                    raise SimscopeError(
                        f"{p}: no corpus shards (expected files ending in "
                        f"{', '.join(SHARD_SUFFIXES)})"
                    )
            else:
                files = [p]
        else:
            files = [Path(f) for f in path]
        for f in files:
            if not f.is_file():
                raise SimscopeError(f"{f}: no such corpus shard")
            if not f.name.endswith(SHARD_SUFFIXES):
                raise SimscopeError(
                    f"{f}: unknown shard format; expected a name ending in "
                    f"{', '.join(SHARD_SUFFIXES)}"
                )
        return cls(tuple(files))


@dataclass(frozen=True)
class ShardUnit:
    """One work unit: some row groups of a parquet shard, or a whole JSONL shard."""

    index: int
    path: str
    row_groups: tuple[int, ...] | None  # None: the whole file
    rows: int | None  # known for parquet (from its footer), None for JSONL


def plan_units(shards: CorpusShards, unit_docs: int) -> list[ShardUnit]:
    """Cut the shards into units of about ``unit_docs`` rows (whole parquet row groups)."""
    units: list[ShardUnit] = []
    for path in shards.paths:
        if path.name.endswith(".parquet"):
            with reading_parquet(path, _SHARD, _REWRITE):
                meta = pq.ParquetFile(path).metadata
            group: list[int] = []
            rows = 0
            for g in range(meta.num_row_groups):
                group.append(g)
                rows += meta.row_group(g).num_rows
                if rows >= unit_docs:
                    units.append(ShardUnit(len(units), str(path), tuple(group), rows))
                    group, rows = [], 0
            if group:
                units.append(ShardUnit(len(units), str(path), tuple(group), rows))
        else:
            units.append(ShardUnit(len(units), str(path), None, None))
    return units


@dataclass
class UnitBatch:
    """A batch of rows read from a unit."""

    models: list[str]
    doc_ids: list[str]
    texts: list[str]


def read_unit(unit: ShardUnit, batch_docs: int) -> Iterator[UnitBatch]:
    """The unit's rows in batches of at most ``batch_docs``, checked against ProbeCorpus."""
    if unit.path.endswith(".parquet"):
        yield from _read_parquet(unit, batch_docs)
    else:
        yield from _read_jsonl(Path(unit.path), batch_docs)


def _read_parquet(unit: ShardUnit, batch_docs: int) -> Iterator[UnitBatch]:
    with reading_parquet(Path(unit.path), _SHARD, _REWRITE):
        yield from _read_parquet_batches(unit, batch_docs)


def _read_parquet_batches(unit: ShardUnit, batch_docs: int) -> Iterator[UnitBatch]:
    file = pq.ParquetFile(unit.path)
    missing = [c for c in _COLUMNS if c not in file.schema_arrow.names]
    if missing:
        raise SimscopeError(
            f"{unit.path}: ProbeCorpus shard: missing column(s) {', '.join(map(repr, missing))}; "
            f"expected {list(PROBE_SCHEMA)}, found {file.schema_arrow.names}"
        )
    for rb in file.iter_batches(
        batch_size=batch_docs, row_groups=list(unit.row_groups or ()), columns=list(_COLUMNS)
    ):
        try:
            cols = {name: rb.column(name).to_pylist() for name in _COLUMNS}
        except UnicodeDecodeError as e:
            raise SimscopeError(
                f"{unit.path}: ProbeCorpus shard: expected UTF-8 strings, found undecodable "
                f"bytes {e.object[e.start : e.start + 4]!r}; {_REWRITE} (parquet strings must be "
                "UTF-8)"
            ) from None
        for name in _COLUMNS:
            if any(not isinstance(v, str) for v in cols[name]):
                bad = next(v for v in cols[name] if not isinstance(v, str))
                raise SimscopeError(
                    f"{unit.path}: ProbeCorpus shard: column {name!r}: expected strings, "
                    f"found {bad!r}"
                )
        yield UnitBatch(cols["model"], cols["doc_id"], cols["text"])


def _read_jsonl(path: Path, batch_docs: int) -> Iterator[UnitBatch]:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    batch = UnitBatch([], [], [])
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise SimscopeError(
                        f"{path}:{lineno}: expected UTF-8 text, found undecodable bytes "
                        f"{raw[e.start : e.start + 4]!r}; convert the shard to UTF-8"
                    ) from None
                if not line.strip():
                    continue
                row = _jsonl_row(path, lineno, line)
                batch.models.append(row["model"])
                batch.doc_ids.append(row["doc_id"])
                batch.texts.append(row["text"])
                if len(batch.texts) >= batch_docs:
                    yield batch
                    batch = UnitBatch([], [], [])
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise SimscopeError(
            f"{path}: damaged or truncated compressed data ({e}); expected a complete gzip "
            f"file; {_REWRITE}"
        ) from None
    if batch.texts:
        yield batch


def _jsonl_row(path: Path, lineno: int, line: str) -> dict[str, str]:
    """One checked row of a JSONL shard: ``model``, ``doc_id`` and ``text`` strings."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise SimscopeError(f"{path}:{lineno}: invalid JSON ({e})") from None
    for name in _COLUMNS:
        value = row.get(name) if isinstance(row, dict) else None
        if not isinstance(value, str):
            raise SimscopeError(
                f"{path}:{lineno}: field {name!r}: expected a string, found {value!r}"
            )
        problem = surrogate_error(f"{path}:{lineno}", name, value)
        if problem:
            raise SimscopeError(f"{problem}; fix the shard")
    return row


def first_model(shards: CorpusShards) -> str:
    """The ``model`` of the corpus's first row (it names the index directories)."""
    for path in shards.paths:
        groups = None
        if path.name.endswith(".parquet"):
            with reading_parquet(path, _SHARD, _REWRITE):
                groups = tuple(range(pq.ParquetFile(path).metadata.num_row_groups))
        for batch in read_unit(ShardUnit(0, str(path), groups, None), 1):
            return batch.models[0]
    raise SimscopeError(f"ProbeCorpus is empty ({len(shards.paths)} shard(s)); nothing to index")


def write_corpus_shards(
    corpus: pl.DataFrame,
    directory: Path,
    *,
    rows_per_shard: int = 1 << 20,
    row_group_rows: int = 8192,
) -> CorpusShards:
    """Write a ProbeCorpus frame as parquet shards in ``doc_id`` order (the index row order)."""
    corpus = check_frame(corpus, PROBE_SCHEMA, "ProbeCorpus").sort("doc_id")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, start in enumerate(range(0, max(corpus.height, 1), rows_per_shard)):
        path = directory / f"part-{k:05d}.parquet"
        corpus.slice(start, rows_per_shard).write_parquet(path, row_group_size=row_group_rows)
        paths.append(path)
    return CorpusShards(tuple(paths))


class CorpusScan:
    """What every unit function reports of its rows: count, content hash, models, doc_id
    range; it refuses rows out of doc_id order."""

    def __init__(self, unit: ShardUnit) -> None:
        self.unit = unit
        self.row_hash = RowHash()
        self.models: set[str] = set()
        self.first: str | None = None
        self.last: str | None = None

    def update(self, batch: UnitBatch) -> None:
        self.models.update(batch.models)
        prev = self.last
        for cur in batch.doc_ids:
            if prev is not None and cur < prev:
                raise SimscopeError(
                    f"{self.unit.path}: doc_id {cur!r} follows {prev!r}; corpus shards must be "
                    "in ascending doc_id order (simscope.engine.write_corpus_shards writes "
                    "them so)"
                )
            prev = cur
        if batch.doc_ids:
            self.first = batch.doc_ids[0] if self.first is None else self.first
            self.last = batch.doc_ids[-1]
        self.row_hash.update(batch.texts)

    def summary(self) -> dict[str, Any]:
        return {
            "rows": self.row_hash.rows,
            "hash": self.row_hash.summary(),
            "models": sorted(self.models),
            "first_doc_id": self.first,
            "last_doc_id": self.last,
        }


def check_corpus(
    summaries: Sequence[dict[str, Any]], units: Sequence[ShardUnit], model: str
) -> tuple[str, int]:
    """The corpus hash and row count; refuses several models or shards out of order."""
    rows = sum(int(s["rows"]) for s in summaries)
    if rows == 0:
        raise SimscopeError("ProbeCorpus is empty; nothing to index")
    models = sorted({m for s in summaries for m in s["models"]})
    if models != [model]:
        raise SimscopeError(
            f"ProbeCorpus: an index is built per model; expected one model, found {models}"
        )
    prev: tuple[str, str] | None = None
    for s, u in zip(summaries, units, strict=True):
        if s["rows"] == 0:
            continue
        if prev is not None and s["first_doc_id"] < prev[1]:
            raise SimscopeError(
                f"{u.path}: doc_id {s['first_doc_id']!r} follows {prev[1]!r} (from {prev[0]}); "
                "corpus shards must be in ascending doc_id order, file names sorted the same "
                "way (simscope.engine.write_corpus_shards writes them so)"
            )
        prev = (u.path, s["last_doc_id"])
    return RowHash.combine([s["hash"] for s in summaries]), rows


@dataclass(frozen=True)
class ScanTask:
    """A unit function that only reads its rows and reports them (:class:`CorpusScan`)."""

    batch_docs: int = 1024

    def __call__(self, unit: ShardUnit) -> Summary:
        scan = CorpusScan(unit)
        for batch in read_unit(unit, self.batch_docs):
            scan.update(batch)
        return scan.summary()


def scan_corpus(
    engine: Engine, units: Sequence[ShardUnit], model: str, *, progress: bool = True
) -> tuple[str, int]:
    """The corpus's content hash and row count, computed on ``engine`` (to check an existing
    index against it); refuses what :func:`check_corpus` refuses."""
    summaries = engine.map_units(ScanTask(), units, desc=f"hash {model}", progress=progress)
    return check_corpus(summaries, units, model)


def part_path(directory: Path | str, unit: int, what: str) -> Path:
    """Where work unit ``unit`` writes its part ``what``: ``u000003-<what>.npy``."""
    return Path(directory) / f"u{unit:06d}-{what}.npy"


def save_part(path: Path, array: np.ndarray) -> None:
    """Write one part as ``.npy`` beside ``path``, then rename it into place: a retried unit
    replaces what a dead attempt left, and a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)
