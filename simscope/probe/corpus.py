"""The canonical ProbeCorpus parquet file: reading, writing, and its key-value metadata.

A ProbeCorpus file holds the columns of ``records.PROBE_SCHEMA``. Its parquet key-value
metadata says how it was made: ``simscope.kind = "ProbeCorpus"`` and one key per setting
(model, model_revision, seed, temperature, top_p, max_new_tokens, prefixes, ... for a
generated corpus; source, text_field, filters for an imported one), each value JSON-encoded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from simscope import __version__
from simscope.errors import SimscopeError
from simscope.records import PROBE_ORIGINS, PROBE_SCHEMA, check_frame
from simscope.storage import (
    parquet_read_error,
    read_parquet,
    read_parquet_metadata,
    write_parquet,
)

KIND_KEY = "simscope.kind"
KIND = "ProbeCorpus"

_EXPECTED = "a ProbeCorpus parquet (columns model, doc_id, text, origin)"
_FIX = "generate or import the corpus again"


def write_probe_corpus(
    df: pl.DataFrame, path: Path, metadata: Mapping[str, Any] | None = None
) -> None:
    """Write ``df`` (checked against PROBE_SCHEMA) atomically with its settings as metadata."""
    df = check_frame(df, PROBE_SCHEMA, "ProbeCorpus", str(path))
    meta = {k: json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    meta[KIND_KEY] = KIND
    meta.setdefault("simscope_version", json.dumps(__version__))
    write_parquet(df, Path(path), meta)


def read_probe_corpus(path: Path) -> pl.DataFrame:
    """Read a ProbeCorpus parquet file; a file of another shape is a SimscopeError."""
    path = Path(path)
    if not path.is_file():
        raise SimscopeError(f"{path}: no such file; expected a ProbeCorpus parquet file")
    df = read_parquet(path, expected=_EXPECTED, fix=_FIX)
    df = check_frame(df, PROBE_SCHEMA, "ProbeCorpus", str(path))
    bad = df.filter(~pl.col("origin").is_in(list(PROBE_ORIGINS)) | pl.col("text").is_null())
    if bad.height:
        row = bad.row(0, named=True)
        raise SimscopeError(
            f"{path}: doc_id {row['doc_id']!r}: field 'origin'/'text': expected origin in "
            f"{list(PROBE_ORIGINS)} and a string text, found origin={row['origin']!r}, "
            f"text={row['text']!r}; regenerate or re-import the corpus"
        )
    return df


def read_probe_metadata(path: Path) -> dict[str, Any]:
    """The settings stored with a ProbeCorpus file (JSON values decoded)."""
    raw = read_parquet_metadata(Path(path), expected=_EXPECTED, fix=_FIX)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == KIND_KEY or key.startswith("ARROW:"):
            continue
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def is_probe_corpus(path: Path) -> bool:
    """Whether ``path`` is a parquet file written as a ProbeCorpus (by its metadata)."""
    try:
        return pl.read_parquet_metadata(Path(path)).get(KIND_KEY) == KIND
    except Exception as e:
        if parquet_read_error(e):
            return False  # damaged or not parquet: reading it as records says so, with the path
        raise
