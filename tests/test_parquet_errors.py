"""Parquet files that cannot be read: every reader names the file, what it expected there and
the fix, whether the file is cut short, is text renamed ``.parquet`` or has a damaged footer,
and whether polars or pyarrow read it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from simscope.engine.shards import CorpusShards, ShardUnit, first_model, plan_units, read_unit
from simscope.errors import SimscopeError
from simscope.preferences import load_preferences, read_preference_set
from simscope.probe.corpus import (
    is_probe_corpus,
    read_probe_corpus,
    read_probe_metadata,
    write_probe_corpus,
)
from simscope.probe.generate import GenerationConfig, _assemble
from simscope.probe.importer import import_corpus
from simscope.records import PREFERENCE_SCHEMA, PROBE_SCHEMA, PROFILE_SCHEMA
from simscope.report import load_report_inputs
from simscope.storage import read_parquet, read_parquet_metadata, reading_parquet

# What polars and pyarrow say of a file that does not end in parquet's footer (polars and
# pyarrow are pinned in constraints.txt; a new version may word these differently).
POLARS_NO_FOOTER = "parquet: File out of specification: The file must end with PAR1 or PARE"
ARROW_NO_FOOTER = (
    "Parquet magic bytes not found in footer. Either the file is corrupted or this is not a "
    "parquet file."
)


def _damage(path: Path, how: str) -> None:
    """Damage a parquet file in place: ``truncated`` to half, or ``text`` (replaced by text)."""
    if how == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_text("model,text\nm,hello\n")


def _probe_corpus(path: Path) -> Path:
    frame = pl.DataFrame(
        {"model": ["m"] * 50, "doc_id": [f"d{i:03d}" for i in range(50)], "text": ["x"] * 50},
        schema={k: PROBE_SCHEMA[k] for k in ("model", "doc_id", "text")},
    ).with_columns(pl.lit("imported").alias("origin"))
    write_probe_corpus(frame, path, {"source": "test"})
    return path


def _preference_set(path: Path) -> Path:
    rows = {"pair_id": ["1"], "prompt": ["p"], "chosen": ["c"], "rejected": ["r"], "source": ["s"]}
    pl.DataFrame(rows, schema=PREFERENCE_SCHEMA).write_parquet(path)
    return path


def _profile(path: Path) -> Path:
    row = {"model": "m", "slice": "chosen", "topic": None, "metric": "lexical.x", "value": 1.0}
    pl.DataFrame([{**row, "ci_low": None, "ci_high": None}], schema=PROFILE_SCHEMA).write_parquet(
        path
    )
    return path


def _chunk(path: Path) -> Path:
    pl.DataFrame({"index": list(range(4)), "text": ["a", "b", "c", "d"]}).write_parquet(path)
    return path


def _shard_path(tmp_path: Path) -> Path:
    return _probe_corpus(tmp_path / "part-00000.parquet")


# Each reader: (name, make the file, read it, the library that reads it, what it expects, fix)
READERS: list[tuple[str, Callable[[Path], Path], Callable[[Path], Any], str, str]] = [
    (
        "read_preference_set",
        lambda d: _preference_set(d / "prefs.parquet"),
        read_preference_set,
        "polars",
        "expected a PreferenceSet parquet (pair_id, prompt, chosen, rejected, source) written "
        "by simscope load; write it again with simscope load",
    ),
    (
        "load_preferences",
        lambda d: _preference_set(d / "prefs.parquet"),
        load_preferences,
        "arrow",
        "expected a parquet file",
    ),
    (
        "read_probe_corpus",
        lambda d: _probe_corpus(d / "corpus.parquet"),
        read_probe_corpus,
        "polars",
        "expected a ProbeCorpus parquet (columns model, doc_id, text, origin); generate or "
        "import the corpus again",
    ),
    (
        "read_probe_metadata",
        lambda d: _probe_corpus(d / "corpus.parquet"),
        read_probe_metadata,
        "polars",
        "expected a ProbeCorpus parquet (columns model, doc_id, text, origin); generate or "
        "import the corpus again",
    ),
    (
        "import_corpus",  # a damaged ProbeCorpus is not recognised as one: read as records
        lambda d: _probe_corpus(d / "corpus.parquet"),
        lambda p: import_corpus(p, model="m"),
        "arrow",
        "expected a parquet file",
    ),
    (
        "load_report_inputs: profile",
        lambda d: _profile(d / "profile.parquet"),
        lambda p: load_report_inputs(p.parent),
        "polars",
        "expected the profile table of a run; rerun the stage that writes it",
    ),
    (
        "generation chunks",
        lambda d: _chunk(d / "chunk-0000000-0000001.parquet"),
        lambda p: _assemble(p.parent, "m", GenerationConfig(n_docs=4, batch_size=4)),
        "polars",
        "expected a chunk of generated documents written by an earlier run; delete {d} and "
        "generate again",
    ),
    (
        "corpus shards: plan_units",
        _shard_path,
        lambda p: plan_units(CorpusShards.from_path(p), 10),
        "arrow",
        "expected a ProbeCorpus shard (columns model, doc_id, text); write the shard again",
    ),
    (
        "corpus shards: first_model",
        _shard_path,
        lambda p: first_model(CorpusShards.from_path(p)),
        "arrow",
        "expected a ProbeCorpus shard (columns model, doc_id, text); write the shard again",
    ),
    (
        "corpus shards: read_unit",
        _shard_path,
        lambda p: list(read_unit(ShardUnit(0, str(p), (0,), 50), 10)),
        "arrow",
        "expected a ProbeCorpus shard (columns model, doc_id, text); write the shard again",
    ),
]


@pytest.mark.parametrize("how", ["truncated", "text"])
@pytest.mark.parametrize(
    ("make", "read", "library", "expected"),
    [r[1:] for r in READERS],
    ids=[r[0] for r in READERS],
)
def test_a_damaged_parquet_file_is_named(
    tmp_path: Path,
    how: str,
    make: Callable[[Path], Path],
    read: Callable[[Path], Any],
    library: str,
    expected: str,
) -> None:
    path = make(tmp_path)
    read(path)  # the intact file reads
    _damage(path, how)
    with pytest.raises(SimscopeError) as e:
        read(path)
    reason = POLARS_NO_FOOTER if library == "polars" else ARROW_NO_FOOTER
    assert str(e.value) == (
        f"{path}: not a readable parquet file ({reason}); {expected.format(d=tmp_path)}"
    )


def test_a_damaged_footer_names_the_file(tmp_path: Path) -> None:
    # pyarrow's "Couldn't deserialize thrift" and polars' own words for a garbled footer
    path = _preference_set(tmp_path / "prefs.parquet")
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    for i in range(len(data) - 8 - footer, len(data) - 8 - footer // 2):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    for read in (read_preference_set, load_preferences):
        with pytest.raises(SimscopeError) as e:
            read(path)
        message = str(e.value)
        assert message.startswith(f"{path}: not a readable parquet file (")
        assert message.endswith("); expected a parquet file") or message.endswith(
            "written by simscope load; write it again with simscope load"
        )
    assert not is_probe_corpus(path)  # a damaged file is no ProbeCorpus: read as records


def test_read_parquet_helper(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pl.DataFrame({"index": [0], "text": ["a"]}).write_parquet(path, metadata={"k": "v"})
    assert read_parquet(path, expected="a table", columns=["text"]).columns == ["text"]
    assert read_parquet_metadata(path, expected="a table")["k"] == "v"
    cases = [
        (tmp_path / "none.parquet", f"{tmp_path / 'none.parquet'}: no such file; expected a table"),
        (tmp_path, f"{tmp_path}: not a file; expected a table"),
    ]
    for where, message in cases:
        for read in (read_parquet, read_parquet_metadata):
            with pytest.raises(SimscopeError) as e:
                read(where, expected="a table")
            assert str(e.value) == message
    path.write_bytes(b"")
    with pytest.raises(SimscopeError) as e:
        read_parquet(path, expected="a table", fix="rebuild it")
    assert str(e.value) == (
        f"{path}: not a readable parquet file (parquet: File out of specification: A Parquet "
        "file must contain a header and footer with at least 12 bytes); expected a table; "
        "rebuild it"
    )
    # only the libraries' read errors are the user's: a bug in the block stays a bug
    with pytest.raises(KeyError), reading_parquet(path, "a table"):
        raise KeyError("not a read error")


def test_parquet_strings_that_are_not_utf8_are_located(tmp_path: Path) -> None:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    # pyarrow writes string bytes as given: "c\xed\xb2\x80" is a UTF-8-encoded lone surrogate
    offsets = pa.py_buffer(b"\x00\x00\x00\x00\x01\x00\x00\x00\x05\x00\x00\x00")
    chosen = pa.Array.from_buffers(pa.string(), 2, [None, offsets, pa.py_buffer(b"cc\xed\xb2\x80")])
    table = pa.table({"prompt": ["p", "q"], "chosen": chosen, "rejected": ["r", "s"]})
    path = tmp_path / "prefs.parquet"
    pq.write_table(table, path)
    with pytest.raises(SimscopeError) as e:
        load_preferences(path, skip_bad=True)  # not a bad record: the file breaks the format
    assert str(e.value) == (
        f"{path}:row 2: column 'chosen': expected UTF-8 text, found undecodable bytes "
        "b'\\xed\\xb2\\x80'; rewrite the column as UTF-8 (parquet strings must be UTF-8)"
    )
    with pytest.raises(SimscopeError) as e:
        read_parquet(path, expected="a table")
    assert str(e.value) == (
        f"{path}: not a readable parquet file (parquet: File out of specification: String data "
        "contained invalid UTF-8); expected a table"
    )
