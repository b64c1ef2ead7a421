"""The import probe: a corpus made elsewhere becomes a ProbeCorpus.

Accepted inputs (gzip transparent, detected by suffix):

- a ProbeCorpus parquet (written by simscope): its ``doc_id`` and ``origin`` are kept;
- JSONL, JSON (an array of objects), CSV or Parquet records, one document per record, the
  text in ``text_field`` (read by ``simscope.readers``, which reports bad input with its
  location);
- a ``.txt`` file: one document per blank-line-separated block by default (a text file is
  usually a book or a dump of many documents, and the lexical and semantic stages compare
  passages, not whole books); ``txt_unit="file"`` takes the whole file, ``"line"`` each line;
- a directory: every ``*.txt`` / ``*.txt.gz`` below it (sorted by path), one document per
  file by default (``txt_unit`` applies to each file).

Then, in this order: whitespace-only texts are dropped, texts outside
``[min_chars, max_chars]`` characters are dropped, exact duplicates are dropped (first kept),
and when ``n_docs`` is given a seeded uniform sample (reservoir sampling, so the input is
streamed and only ``n_docs`` texts are held) is kept, in input order. ``doc_id`` is the
record's location (``file:line``). Texts are kept verbatim.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import xxhash

from simscope.errors import SimscopeError
from simscope.probe.corpus import is_probe_corpus, read_probe_corpus, read_probe_metadata
from simscope.readers import SUFFIXES, printable, read_records, show_value, surrogate_error
from simscope.records import PROBE_SCHEMA

logger = logging.getLogger(__name__)

TxtUnit = Literal["auto", "paragraph", "line", "file"]
TXT_UNITS = ("auto", "paragraph", "line", "file")


@dataclass(frozen=True)
class ImportStats:
    """What happened to the input's records on the way to the corpus."""

    n_read: int = 0
    n_bad: int = 0
    n_empty: int = 0
    n_too_short: int = 0
    n_too_long: int = 0
    n_duplicates: int = 0
    n_sampled_out: int = 0
    n_kept: int = 0


@dataclass
class ImportedCorpus:
    """The corpus and the counts behind it."""

    corpus: pl.DataFrame
    stats: ImportStats
    metadata: dict[str, Any]


@dataclass
class _Doc:
    doc_id: str
    text: str
    origin: str
    model: str | None = None


def import_corpus(
    path: Path,
    *,
    model: str | None = None,
    text_field: str = "text",
    format: str | None = None,
    txt_unit: TxtUnit = "auto",
    n_docs: int | None = None,
    seed: int = 0,
    min_chars: int = 1,
    max_chars: int | None = None,
    dedupe: bool = True,
    skip_bad: bool = False,
) -> ImportedCorpus:
    """Read ``path`` into a ProbeCorpus frame (``origin`` "imported"; see the module doc),
    with the counts and the metadata to store with it.

    ``model`` names the corpus's model; it may be left out for a ProbeCorpus parquet (its
    own ``model`` column is kept). ``skip_bad`` skips records without a string text, or with
    one holding a lone surrogate (counted and logged), instead of raising.
    """
    path = Path(path)
    if not path.exists():
        raise SimscopeError(f"{path}: no such file or directory; expected a corpus to import")
    if txt_unit not in TXT_UNITS:
        raise SimscopeError(f"txt_unit: expected one of {list(TXT_UNITS)}, found {txt_unit!r}")
    if n_docs is not None and n_docs < 1:
        raise SimscopeError(f"n_docs: expected >= 1, found {n_docs}")
    if min_chars < 0 or (max_chars is not None and max_chars < min_chars):
        raise SimscopeError(
            f"length filter: expected 0 <= min_chars <= max_chars, found min_chars={min_chars}, "
            f"max_chars={max_chars}"
        )
    probe = (
        path.is_file()
        and (format == "parquet" or (format is None and path.suffix.lower() in (".parquet", ".pq")))
        and is_probe_corpus(path)
    )
    if model is None and not probe:
        raise SimscopeError(
            f"{path}: name the model this corpus stands for (--model NAME); only a ProbeCorpus "
            "parquet carries its own"
        )
    counts = {k: 0 for k in asdict(ImportStats())}
    rng = np.random.default_rng(seed)
    seen: set[bytes] = set()
    kept: list[tuple[int, _Doc]] = []
    position = 0
    for doc in _documents(path, text_field, format, txt_unit, skip_bad, probe, counts):
        counts["n_read"] += 1
        text = doc.text
        if not text.strip():
            counts["n_empty"] += 1
            continue
        if len(text) < min_chars:
            counts["n_too_short"] += 1
            continue
        if max_chars is not None and len(text) > max_chars:
            counts["n_too_long"] += 1
            continue
        if dedupe:
            digest = xxhash.xxh3_128_digest(text.encode("utf-8"))
            if digest in seen:
                counts["n_duplicates"] += 1
                continue
            seen.add(digest)
        # Reservoir sampling (algorithm R): a uniform sample of n_docs in one pass.
        if n_docs is None or position < n_docs:
            kept.append((position, doc))
        else:
            j = int(rng.integers(0, position + 1))
            if j < n_docs:
                kept[j] = (position, doc)
        position += 1
    kept.sort(key=lambda item: item[0])
    counts["n_sampled_out"] = position - len(kept)
    counts["n_kept"] = len(kept)
    stats = ImportStats(**counts)
    if counts["n_bad"]:
        logger.warning("%s: skipped %d bad record(s)", path, counts["n_bad"])
    if not kept:
        raise SimscopeError(
            f"{path}: no documents left to import (read {stats.n_read}, bad {stats.n_bad}, "
            f"empty {stats.n_empty}, too short {stats.n_too_short}, too long {stats.n_too_long}); "
            "check --text-field and the length filters"
        )
    corpus = pl.DataFrame(
        {
            "model": [model if model is not None else d.model for _, d in kept],
            "doc_id": [d.doc_id for _, d in kept],
            "text": [d.text for _, d in kept],
            "origin": [d.origin for _, d in kept],
        },
        schema=PROBE_SCHEMA,
    )
    metadata: dict[str, Any] = {
        "origin": "imported",
        "source": str(path),
        "format": format,
        "text_field": text_field,
        "txt_unit": txt_unit,
        "n_docs": n_docs,
        "seed": seed,
        "min_chars": min_chars,
        "max_chars": max_chars,
        "dedupe": dedupe,
        "stats": asdict(stats),
    }
    if probe:
        metadata["source_metadata"] = read_probe_metadata(path)
    return ImportedCorpus(corpus, stats, metadata)


def _documents(
    path: Path,
    text_field: str,
    format: str | None,
    txt_unit: TxtUnit,
    skip_bad: bool,
    probe: bool,
    counts: dict[str, int],
) -> Iterator[_Doc]:
    if probe:
        frame = read_probe_corpus(path)
        for row in frame.iter_rows(named=True):
            yield _Doc(row["doc_id"], row["text"], row["origin"], row["model"])
        return
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.name.endswith((".txt", ".txt.gz"))
        )
        if not files:
            raise SimscopeError(
                f"{path}: directory holds no .txt or .txt.gz files; expected one document per "
                "text file"
            )
        for file in files:
            rel = printable(file.relative_to(path).as_posix())
            yield from _txt_documents(file, rel, "file" if txt_unit == "auto" else txt_unit)
        return
    name = path.name.removesuffix(".gz")
    if format == "txt" or (format is None and name.endswith(".txt")):
        unit = "paragraph" if txt_unit == "auto" else txt_unit
        yield from _txt_documents(path, printable(path.name), unit)
        return
    if format is None and Path(name.lower()).suffix not in SUFFIXES:
        raise SimscopeError(
            f"{path}: unknown corpus format; expected a ProbeCorpus parquet, a file of records "
            f"({', '.join(SUFFIXES)}), a .txt file (each optionally .gz) or a directory of .txt "
            "files; name the format with --format"
        )
    for record in read_records(path, format=format):
        loc = printable(path.name) + record.location.removeprefix(str(path))
        text = record.data.get(text_field)
        hint = "choose the text field with --text-field, or skip bad records with --skip-bad"
        if text_field not in record.data:
            found = f"found no such field (fields: {sorted(record.data)[:10]})"
            problem = f"{record.location}: field {text_field!r}: expected a string, {found}; {hint}"
        elif not isinstance(text, str):
            found = f"found {show_value(text)}"
            problem = f"{record.location}: field {text_field!r}: expected a string, {found}; {hint}"
        else:
            surrogate = surrogate_error(record.location, text_field, text)
            if surrogate is None:
                yield _Doc(loc, text, "imported")
                continue
            problem = f"{surrogate}; fix the record, or skip bad records with --skip-bad"
        if skip_bad:
            counts["n_bad"] += 1
            continue
        raise SimscopeError(problem)


def _txt_documents(file: Path, doc_name: str, unit: str) -> Iterator[_Doc]:
    """Documents of one text file, each with the line it starts on."""
    try:
        opener = gzip.open if file.name.endswith(".gz") else open
        with opener(file, "rt", encoding="utf-8") as f:
            content = f.read()
    except UnicodeDecodeError as e:
        raise SimscopeError(
            f"{file}: byte {e.start}: expected UTF-8 text, found undecodable bytes "
            f"{e.object[e.start : e.start + 4]!r}; convert the file to UTF-8"
        ) from None
    except (OSError, EOFError) as e:
        raise SimscopeError(f"{file}: unreadable ({e}); expected a text file") from None
    if unit == "file":
        yield _Doc(doc_name, content, "imported")
        return
    lines = content.splitlines()
    if unit == "line":
        for i, line in enumerate(lines, start=1):
            yield _Doc(f"{doc_name}:{i}", line, "imported")
        return
    block: list[str] = []
    first = 0
    for i, line in enumerate([*lines, ""], start=1):
        if line.strip():
            if not block:
                first = i
            block.append(line)
        elif block:
            yield _Doc(f"{doc_name}:{first}", "\n".join(block), "imported")
            block = []
