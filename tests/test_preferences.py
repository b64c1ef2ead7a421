"""Preference loading: record readers, the three schemas in every format, the real HH-RLHF file,
each kind of bad input with its exact message, --skip-bad, the PreferenceSet parquet and the CLI.
"""

from __future__ import annotations

import csv
import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simscope.errors import SimscopeError
from simscope.preferences import (
    load_preferences,
    read_preference_set,
    summarize_preferences,
    write_preference_set,
)
from simscope.readers import detect_format, read_records
from simscope.records import PREFERENCE_SCHEMA
from simscope.storage import hash_texts

PREFS = Path(__file__).parent / "data" / "prefs"
BAD = PREFS / "bad"

# The three pairs every good fixture holds, as (prompt, chosen, rejected).
EXPECTED = {
    "pairs": [
        ("What is the capital of France?", "Paris.", "London, I think."),
        ("Name a prime number.", "Seven is prime: its only divisors are 1 and 7.", "Nine."),
        (
            "Say hello in Spanish, with a comma and a quote.",
            'Hola, "amigo".\nAdiós.',
            "Bonjour.",
        ),
    ],
    "hh": [
        ("Human: What is the capital of France?\n\nAssistant:", "Paris.", "London, I think."),
        (
            "Human: Hi!\n\nAssistant: Hello.\n\nHuman: Name a prime number.\n\nAssistant:",
            "Seven is prime: its only divisors are 1 and 7.",
            "Nine.",
        ),
        (
            "Human: Say hello in Spanish, with a comma and a quote.\n\nAssistant:",
            'Hola, "amigo".\nAdiós.',
            "Bonjour.\n\nHuman: That is French.\n\nAssistant: Oui.",
        ),
    ],
    "trl": [
        ("User: What is the capital of France?", "Paris.", "London, I think."),
        ("User: Name a prime number.", "Seven is prime: its only divisors are 1 and 7.", "Nine."),
        (
            "User: Say hello in Spanish, with a comma and a quote.",
            'Hola, "amigo".\nAdiós.',
            "Bonjour.",
        ),
    ],
}
FIRST_LOCATION = {"jsonl": "1", "json": "item 1", "parquet": "row 1", "csv": "2"}
CASES = [
    (schema, fmt, gz)
    for schema in EXPECTED
    for fmt in FIRST_LOCATION
    for gz in (False, True)
    if not (schema == "trl" and fmt == "csv")
]


def _fixture(schema: str, fmt: str, gz: bool, tmp_path: Path) -> Path:
    path = PREFS / f"{schema}.{fmt}"
    if not gz:
        return path
    out = tmp_path / f"{path.name}.gz"
    out.write_bytes(gzip.compress(path.read_bytes()))
    return out


@pytest.mark.parametrize(("schema", "fmt", "gz"), CASES)
def test_every_format_of_every_schema_loads_the_same_pairs(
    schema: str, fmt: str, gz: bool, tmp_path: Path
) -> None:
    path = _fixture(schema, fmt, gz, tmp_path)
    result = load_preferences(path)
    assert result.schema == schema and result.n_bad == 0 and result.bad == []
    assert result.pairs.schema == PREFERENCE_SCHEMA
    assert result.pairs.select("prompt", "chosen", "rejected").rows() == EXPECTED[schema]
    assert result.pairs["source"][0] == f"{path.name}:{FIRST_LOCATION[fmt]}"
    # pair ids hash the content, so they are the same whatever the format
    reference = load_preferences(PREFS / f"{schema}.jsonl").pairs["pair_id"]
    assert result.pairs["pair_id"].to_list() == reference.to_list()
    assert result.n_hh_diverged == (1 if schema == "hh" else 0)
    # the named schema reads the same
    assert load_preferences(path, schema=schema).pairs.equals(result.pairs)


def test_sources_and_ids() -> None:
    csv_pairs = load_preferences(PREFS / "pairs.csv").pairs
    # the third record's quoted field spans lines 4 and 5: it is located where it starts
    assert csv_pairs["source"].to_list() == ["pairs.csv:2", "pairs.csv:3", "pairs.csv:4"]
    json_pairs = load_preferences(PREFS / "pairs.json").pairs
    assert json_pairs["source"].to_list() == [f"pairs.json:item {i}" for i in (1, 2, 3)]
    parquet = load_preferences(PREFS / "pairs.parquet").pairs
    assert parquet["source"].to_list() == [f"pairs.parquet:row {i}" for i in (1, 2, 3)]
    # a golden id: xxh3-128 of the length-prefixed (prompt, chosen, rejected)
    assert parquet["pair_id"][0] == "f1859eca50bba763750ac5c24f0a2397"


def test_trl_with_explicit_prompt_ids_and_text_parts() -> None:
    result = load_preferences(PREFS / "trl_prompt.jsonl")
    assert result.schema == "trl"
    assert result.pairs["pair_id"].to_list() == ["q1", "q2", "q3"]
    assert result.pairs.select("prompt", "chosen", "rejected").rows() == [
        (f"System: Be brief.\n\n{p}", c, r) for p, c, r in EXPECTED["trl"]
    ]


def test_repeated_pairs_get_suffixed_ids(tmp_path: Path) -> None:
    path = tmp_path / "twice.jsonl"
    record = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    path.write_text(f"{record}\n\n{record}\n{record}\n")
    ids = load_preferences(path).pairs["pair_id"].to_list()
    assert ids[1:] == [f"{ids[0]}-2", f"{ids[0]}-3"]


def test_real_hh_rlhf_file(hh_path: Path) -> None:
    result = load_preferences(hh_path)
    assert result.schema == "hh" and result.pairs.height == 2312
    assert (result.n_read, result.n_bad, result.bad) == (2312, 0, [])
    # 5 pairs have a response that runs on into turns of its own; 4 have an empty chosen turn
    assert (result.n_hh_diverged, result.n_empty) == (5, 4)
    pairs = result.pairs
    assert pairs["pair_id"].n_unique() == 2312
    assert pairs["prompt"].str.starts_with("Human: ").all()
    assert pairs["prompt"].str.ends_with("\n\nAssistant:").all()
    row = pairs.filter(pl.col("source") == f"{hh_path.name}:1255").row(0, named=True)
    assert row["prompt"].endswith("Human: Isn't that drag kings?\n\nAssistant:")
    assert row["chosen"].startswith("No. Men who impersonate stereotypical women")
    assert "Human: Then how do they come" in row["chosen"]
    assert row["rejected"].startswith("A drag king is the opposite of a drag queen")
    assert summarize_preferences(result) == (
        "2312 pairs, schema hh, 0 bad skipped, 4 with an empty response; mean words: "
        "prompt 86.5, chosen 30.8, rejected 38.9"
    )
    # every pair exactly as before the TRL rework: ids hash (prompt, chosen, rejected)
    assert hash_texts(pairs["pair_id"].to_list()) == "3552187da5b53f5c1198313f2b5e145e"

    with pytest.raises(SimscopeError) as e:
        load_preferences(hh_path, allow_empty=False)
    assert str(e.value) == (
        f"{hh_path}:87: field 'chosen': expected a non-empty response after the last "
        "'\\n\\nAssistant:', found ''; fix the record, pass --allow-empty to keep empty "
        "responses, or --skip-bad"
    )
    strict = load_preferences(hh_path, allow_empty=False, skip_bad=True)
    assert (strict.pairs.height, strict.n_bad, len(strict.bad)) == (2308, 4, 4)
    assert load_preferences(hh_path, limit=10).pairs.height == 10


BAD_INPUTS = [
    ("empty.jsonl", {}, "{p}: empty file; expected one JSON object per line"),
    (
        "latin1.jsonl",
        {},
        "{p}:2: expected UTF-8 text, found undecodable bytes b'\\xe9\", '; convert the file "
        "to UTF-8",
    ),
    (
        "invalid.jsonl",
        {},
        "{p}:2: invalid JSON (Expecting property name enclosed in double quotes at column 48); "
        "expected one JSON object per line",
    ),
    (
        "not_object.jsonl",
        {},
        '{p}:2: expected a JSON object, found an array ["a", "b", "c"]; write one object per line',
    ),
    (
        "object.json",
        {},
        "{p}: expected a JSON array of objects, found a JSON object at the top level; put the "
        "records in a top-level array or write JSON Lines",
    ),
    (
        "array_of_strings.json",
        {},
        "{p}:item 2: expected a JSON object, found a string 'x'; the array must hold one "
        "object per record",
    ),
    (
        "missing_rejected.csv",
        {},
        "{p}: missing field(s) 'rejected' for schema 'pairs': the first record ({p}:2) has "
        "fields [chosen, prompt]; expected prompt, chosen, rejected; add the missing column or "
        "choose the schema with --schema",
    ),
    (
        "unknown_schema.jsonl",
        {},
        "{p}: unknown preference schema: the first record ({p}:1) has fields [answer, "
        "question, score]; expected one of 'pairs' (prompt, chosen, rejected strings), 'hh' "
        "(chosen, rejected HH-RLHF transcripts), 'trl' (chosen, rejected message lists, "
        "optional prompt); rename the fields or choose the schema with --schema",
    ),
    (
        "non_string.jsonl",
        {},
        "{p}:2: field 'chosen': expected non-empty string, found 42; fix the record, or pass "
        "--skip-bad to skip bad records",
    ),
    (
        "empty_response.jsonl",
        {},
        "{p}:3: field 'chosen': expected non-empty string, found '  '; fix the record, pass "
        "--allow-empty to keep empty responses, or --skip-bad",
    ),
    (
        "hh_no_assistant.jsonl",
        {},
        "{p}:2: field 'chosen': expected an HH-RLHF transcript with an '\\n\\nAssistant:' "
        "turn, found '\\n\\nHuman: Hello?' (schema 'hh': chosen and rejected without a "
        "'prompt' field); fix the record, or pass --skip-bad to skip bad records",
    ),
    (
        "hh_parted.jsonl",
        {},
        "{p}:1: fields 'chosen' and 'rejected': expected transcripts that share every turn up "
        "to the last '\\n\\nAssistant:' of one of them, found them parting at character 24, "
        "before either's last Assistant turn; fix the record, or pass --skip-bad to skip bad "
        "records",
    ),
    (
        "trl_bad_content.jsonl",
        {},
        "{p}:2: field 'chosen[1].content': expected a string or a list of text parts, found 7; "
        "fix the record, or pass --skip-bad to skip bad records",
    ),
    (
        "non_string.jsonl",
        {"schema": "hh"},
        "{p}:1: field 'chosen': expected an HH-RLHF transcript with an '\\n\\nAssistant:' "
        "turn, found 'Paris.' (schema 'hh': chosen and rejected without a 'prompt' field); fix "
        "the record, or pass --skip-bad to skip bad records",
    ),
    (
        "missing_rejected.csv",
        {"schema": "trl"},
        "{p}: missing field(s) 'rejected' for schema 'trl': the first record ({p}:2) has "
        "fields [chosen, prompt]; expected chosen, rejected; add the missing column or choose "
        "the schema with --schema",
    ),
    (
        "mixed.jsonl",
        {},
        "{p}:2: field 'chosen': expected non-empty string, found null; fix the record, or "
        "pass --skip-bad to skip bad records",
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "message"), BAD_INPUTS)
def test_bad_input_is_one_located_error(name: str, kwargs: dict[str, Any], message: str) -> None:
    path = BAD / name
    with pytest.raises(SimscopeError) as e:
        load_preferences(path, **kwargs)
    assert str(e.value) == message.format(p=path)


def test_file_level_errors(tmp_path: Path) -> None:
    cases: list[tuple[Path, bytes | None, str]] = [
        (tmp_path / "nope.jsonl", None, "{p}: no such file; check the path"),
        (
            tmp_path / "notes.txt",
            b"hello",
            "{p}: unknown record format: expected a file ending in .jsonl, .ndjson, .json, "
            ".parquet, .pq, .csv or .tsv (optionally followed by .gz), found '.txt'; rename "
            "the file or name the format with --format",
        ),
        (
            tmp_path / "plain.jsonl.gz",
            b'{"a": 1}\n',
            "{p}: not gzip data despite the .gz suffix; expected gzip",
        ),
        (
            tmp_path / "cut.jsonl.gz",
            gzip.compress(b'{"prompt": "p", "chosen": "c", "rejected": "r"}\n' * 50)[:-30],
            "{p}: damaged or truncated compressed data (Compressed file ended before the "
            "end-of-stream marker was reached); expected a complete gzip file; re-download or "
            "re-compress it",
        ),
        (
            tmp_path / "fake.parquet",
            b"not parquet at all",
            "{p}: not a readable parquet file (Parquet magic bytes not found in footer. Either "
            "the file is corrupted or this is not a parquet file.); expected a parquet file",
        ),
        (
            tmp_path / "empty_array.json",
            b"  [ ]\n",
            "{p}: no records; expected at least one preference pair",
        ),
        (tmp_path / "blank.json", b" \n\n ", "{p}: empty file; expected a JSON array of objects"),
        (
            tmp_path / "header.csv",
            b"\n\n",
            "{p}: empty file; expected a header row, then one record per row",
        ),
        (
            tmp_path / "short.csv",
            b"prompt,chosen,rejected\np,c\n",
            "{p}:2: expected 3 fields as in the header, found 2; check the quoting of this row",
        ),
        (
            tmp_path / "trunc.json",
            b'[{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": ',
            "{p}: invalid JSON after item 1 (parse error: premature EOF); expected a JSON "
            "array of objects",
        ),
    ]
    for path, content, message in cases:
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(SimscopeError) as e:
            load_preferences(path)
        assert str(e.value) == message.format(p=path), path.name


def test_skip_bad_counts_and_keeps_the_messages() -> None:
    path = BAD / "mixed.jsonl"
    result = load_preferences(path, skip_bad=True)
    assert (result.n_read, result.n_bad) == (7, 3)
    assert result.bad == [
        f"{path}:2: field 'chosen': expected non-empty string, found null",
        f"{path}:4: field 'rejected': expected non-empty string, found ''",
        f"{path}:7: field 'id': expected a string or an integer id, found [7]",
    ]
    # a repeated id is kept, made unique
    assert result.pairs["pair_id"].to_list() == ["1", "3", "3-2", "6"]
    assert load_preferences(path, skip_bad=True, limit=2).pairs["pair_id"].to_list() == ["1", "3"]
    kept = load_preferences(path, skip_bad=True, allow_empty=True)
    assert (kept.n_bad, kept.n_empty) == (2, 1)


def test_nothing_left_after_skipping(tmp_path: Path) -> None:
    path = tmp_path / "all_bad.jsonl"
    path.write_text('{"prompt": "p", "chosen": 1, "rejected": "r"}\n')
    with pytest.raises(SimscopeError) as e:
        load_preferences(path, skip_bad=True)
    assert str(e.value) == (
        f"{path}: no preference pairs left (read 1 records, 1 bad; first: {path}:1: field "
        "'chosen': expected non-empty string, found 1); expected at least one valid pair"
    )


def test_readers_locations_bom_tsv_and_blank_lines(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.ndjson"
    jsonl.write_bytes(b'\xef\xbb\xbf{"x": 1}\n\n  \n{"x": 2}\n')
    assert [(r.location, r.data) for r in read_records(jsonl)] == [
        (f"{jsonl}:1", {"x": 1}),
        (f"{jsonl}:4", {"x": 2}),
    ]
    hidden_gzip = tmp_path / "b.jsonl"  # gzip found by its magic bytes, not its name
    hidden_gzip.write_bytes(gzip.compress(b'{"x": 3}\n'))
    assert [r.data for r in read_records(hidden_gzip)] == [{"x": 3}]
    tsv = tmp_path / "a.tsv"
    tsv.write_text("x\ty\n1\ttwo, three\n")
    assert [r.data for r in read_records(tsv)] == [{"x": "1", "y": "two, three"}]
    data = tmp_path / "records.data"
    data.write_text('[{"x": 1.5}]')
    assert [r.data for r in read_records(data, format="json")] == [{"x": 1.5}]
    assert detect_format(Path("A.JSONL.GZ")) == "jsonl"
    with pytest.raises(SimscopeError) as e:
        list(read_records(data, format="xml"))
    assert str(e.value) == "format 'xml': expected one of jsonl, json, parquet, csv; found 'xml'"
    late = tmp_path / "late.json"
    late.write_bytes(b'[{"x": "ok"},\n{"x": "ok"},\n{"x": "caf\xe9"}]')
    with pytest.raises(SimscopeError) as e:
        list(read_records(late))
    assert str(e.value) == (
        f"{late}:3: expected UTF-8 text, found undecodable bytes b'\\xe9\"}}]'; convert the "
        "file to UTF-8"
    )


def test_preference_set_parquet_round_trip(tmp_path: Path) -> None:
    pairs = load_preferences(PREFS / "hh.json").pairs
    out = tmp_path / "sub" / "prefs.parquet"
    write_preference_set(pairs, out)
    assert read_preference_set(out).equals(pairs)
    # a PreferenceSet parquet is itself a 'pairs' file whose explicit pair_id is kept
    again = load_preferences(out).pairs
    assert again.drop("source").equals(pairs.drop("source"))

    broken = tmp_path / "broken.parquet"
    pairs.drop("rejected").write_parquet(broken)
    with pytest.raises(SimscopeError) as e:
        read_preference_set(broken)
    assert str(e.value) == (
        f"{broken}: PreferenceSet: missing column(s) 'rejected'; expected columns "
        "['pair_id', 'prompt', 'chosen', 'rejected', 'source'], found ['pair_id', 'prompt', "
        "'chosen', 'source']"
    )
    nulls = tmp_path / "nulls.parquet"
    pairs.with_columns(
        pl.when(pl.int_range(3) == 1).then(None).otherwise("chosen").alias("chosen")
    ).write_parquet(nulls)
    with pytest.raises(SimscopeError) as e:
        read_preference_set(nulls)
    assert str(e.value) == (
        f"{nulls}: PreferenceSet: column 'chosen': expected strings, found 1 null(s) (first at "
        "row 2); rebuild it with simscope load"
    )
    with pytest.raises(SimscopeError) as e:
        read_preference_set(tmp_path / "none.parquet")
    assert (
        str(e.value)
        == f"{tmp_path / 'none.parquet'}: no such file; expected a PreferenceSet parquet"
    )


def test_cli_load(tmp_path: Path, hh_path: Path) -> None:
    from simscope.cli import cli

    runner = CliRunner()
    out = tmp_path / "prefs.parquet"
    ok = runner.invoke(cli, ["--quiet", "load", str(PREFS / "pairs.csv"), "-o", str(out)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.splitlines() == [
        f"3 pairs, schema pairs, 0 bad skipped; mean words: prompt 6.7, chosen 4.7, rejected "
        f"1.7; wrote {out}"
    ]
    assert read_preference_set(out)["chosen"].to_list() == [c for _, c, _ in EXPECTED["pairs"]]
    metadata = pl.read_parquet_metadata(out)
    assert json.loads(metadata["simscope"])["schema"] == "pairs"

    skipped = runner.invoke(cli, ["--quiet", "load", str(BAD / "mixed.jsonl"), "--skip-bad"])
    assert skipped.exit_code == 0
    assert skipped.output.splitlines()[-1].startswith("4 pairs, schema pairs, 3 bad skipped;")

    strict = runner.invoke(cli, ["load", str(hh_path), "--no-allow-empty", "--schema", "hh"])
    assert strict.exit_code == 1
    errors = [line for line in strict.output.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: {hh_path}:87: field 'chosen': expected a non-empty response after the last "
        "'\\n\\nAssistant:', found ''; fix the record, pass --allow-empty to keep empty "
        "responses, or --skip-bad"
    ]
    assert "Traceback" not in strict.output
    for args in (["load", str(BAD / "unknown_schema.jsonl")], ["load", str(tmp_path / "x.csv")]):
        bad = runner.invoke(cli, ["--quiet", *args])
        assert bad.exit_code == 1
        assert len(bad.output.splitlines()) == 1 and bad.output.startswith("Error: ")


# ---- TRL conversations: every shape TRL reads, with its exact slices ------------------------


def _user(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _assistant(text: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def _system(text: str) -> dict[str, Any]:
    return {"role": "system", "content": text}


Q, QP = "What is 2+2?", "User: What is 2+2?"
HI = [_user("Hi"), _assistant("Hello.")]
HI_P = "User: Hi\n\nAssistant: Hello.\n\n"

TRL_SHAPES: list[tuple[str, dict[str, Any], tuple[str, str, str]]] = [
    (
        "implicit prompt",
        {"chosen": [_user(Q), _assistant("4")], "rejected": [_user(Q), _assistant("5")]},
        (QP, "4", "5"),
    ),
    (
        "explicit prompt list",
        {"prompt": [_user(Q)], "chosen": [_assistant("4")], "rejected": [_assistant("5")]},
        (QP, "4", "5"),
    ),
    (
        "explicit prompt string",
        {"prompt": Q, "chosen": [_assistant("4")], "rejected": [_assistant("5")]},
        (QP, "4", "5"),
    ),
    (
        "content as text parts",
        {
            "chosen": [
                _user([{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]),
                _assistant([{"type": "text", "text": "4"}]),
            ],
            "rejected": [_user(Q), _assistant([{"type": "text", "text": "5"}])],
        },
        (QP, "4", "5"),
    ),
    (
        "system turn first",
        {
            "chosen": [_system("Be brief."), _user(Q), _assistant("4")],
            "rejected": [_system("Be brief."), _user(Q), _assistant("5")],
        },
        (f"System: Be brief.\n\n{QP}", "4", "5"),
    ),
    (
        "system turn first, explicit prompt list",
        {
            "prompt": [_system("Be brief."), _user(Q)],
            "chosen": [_assistant("4")],
            "rejected": [_assistant("5")],
        },
        (f"System: Be brief.\n\n{QP}", "4", "5"),
    ),
    (
        "multi-turn",
        {
            "chosen": [*HI, _user(Q), _assistant("4")],
            "rejected": [*HI, _user(Q), _assistant("5")],
        },
        (HI_P + QP, "4", "5"),
    ),
    (
        "multi-turn responses",
        {
            "chosen": [_user(Q), _assistant("4"), _user("Sure?"), _assistant("Yes.")],
            "rejected": [_user(Q), _assistant("5")],
        },
        (QP, "4\n\nUser: Sure?\n\nAssistant: Yes.", "5"),
    ),
    (
        "prompt string + conversations (UltraFeedback-binarized)",
        {
            "prompt": Q,
            "chosen": [_user(Q), _assistant("4")],
            "rejected": [_user(Q), _assistant("5")],
        },
        (QP, "4", "5"),
    ),
    (
        "prompt list + conversations that repeat it",
        {
            "prompt": [_user(Q)],
            "chosen": [_user(Q), _assistant("4")],
            "rejected": [_user(Q), _assistant("5")],
        },
        (QP, "4", "5"),
    ),
    (
        "prompt string + conversations with a system turn",
        {
            "prompt": f"  {Q}\n",
            "chosen": [_system("Be brief."), _user(Q), _assistant("4")],
            "rejected": [_system("Be brief."), _user(Q), _assistant("5")],
        },
        (f"System: Be brief.\n\n{QP}", "4", "5"),
    ),
    (
        "prompt string + multi-turn conversations: the first user turn",
        {
            "prompt": "Hi",
            "chosen": [*HI, _user(Q), _assistant("4")],
            "rejected": [*HI, _user(Q), _assistant("5")],
        },
        (HI_P + QP, "4", "5"),
    ),
    (
        "prompt string + multi-turn conversations: the last user turn",
        {
            "prompt": Q,
            "chosen": [*HI, _user(Q), _assistant("4")],
            "rejected": [*HI, _user(Q), _assistant("5")],
        },
        (HI_P + QP, "4", "5"),
    ),
    (
        "blank prompt string: the shared turns",
        {
            "prompt": " ",
            "chosen": [_user(Q), _assistant("4")],
            "rejected": [_user(Q), _assistant("5")],
        },
        (QP, "4", "5"),
    ),
]


def _one_record(tmp_path: Path, record: dict[str, Any], fmt: str = "jsonl") -> Path:
    path = tmp_path / f"prefs.{fmt}"
    if fmt == "jsonl":
        path.write_text(json.dumps(record) + "\n")
    elif fmt == "json":
        path.write_text(json.dumps([record]))
    else:
        pl.DataFrame([record]).write_parquet(path)
    return path


@pytest.mark.parametrize(
    ("record", "expected"), [s[1:] for s in TRL_SHAPES], ids=[s[0] for s in TRL_SHAPES]
)
def test_every_trl_shape_gives_the_responses_alone(
    tmp_path: Path, record: dict[str, Any], expected: tuple[str, str, str]
) -> None:
    result = load_preferences(_one_record(tmp_path, record))
    assert result.schema == "trl" and result.n_bad == 0
    assert result.pairs.select("prompt", "chosen", "rejected").rows() == [expected]
    # the prompt is more turns than the one given only where the given is part of them
    widened = isinstance(record.get("prompt"), str) and len(record["chosen"]) > 2
    assert result.n_prompt_widened == widened


@pytest.mark.parametrize("fmt", ["jsonl", "json", "parquet"])
def test_ultrafeedback_binarized_rows_in_every_format(tmp_path: Path, fmt: str) -> None:
    # The shape of HuggingFaceH4/ultrafeedback_binarized: a prompt string, and conversations
    # that repeat the user turn before the assistant's. Before, the prompt leaked into both
    # responses ("User: What is 2+2?\n\nAssistant: 4").
    record = {
        "prompt": Q,
        "prompt_id": "abc",
        "chosen": [_user(Q), _assistant("4")],
        "rejected": [_user(Q), _assistant("22")],
        "score_chosen": 9.0,
        "score_rejected": 2.0,
    }
    pairs = load_preferences(_one_record(tmp_path, record, fmt)).pairs
    assert pairs.select("prompt", "chosen", "rejected").rows() == [(QP, "4", "22")]


def test_a_prompt_string_renders_like_the_same_prompt_as_a_message(tmp_path: Path) -> None:
    responses = {"chosen": [_assistant("4")], "rejected": [_assistant("5")]}
    as_string = load_preferences(_one_record(tmp_path, {"prompt": Q, **responses})).pairs
    (tmp_path / "b").mkdir()
    as_message = load_preferences(
        _one_record(tmp_path / "b", {"prompt": [_user(Q)], **responses})
    ).pairs
    assert as_string.equals(as_message)  # pair ids too: they hash the texts


def test_a_prompt_the_conversations_do_not_share_is_a_located_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    records = [
        {
            "prompt": Q,
            "chosen": [_user(Q), _assistant("4")],
            "rejected": [_user(Q), _assistant("5")],
        },
        {
            "prompt": "What is 3+3?",
            "chosen": [_user(Q), _assistant("4")],
            "rejected": [_user(Q), _assistant("5")],
        },
        {
            "prompt": Q,
            "chosen": [_user(Q), _assistant("4")],
            "rejected": [_user("What is 3+3?"), _assistant("6")],
        },
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    first = (
        f"{path}:2: field 'prompt': expected the turns that 'chosen' and 'rejected' share "
        "before their responses, or some of them ('User: What is 2+2?'), found 'User: What is "
        "3+3?' (leave the field out to take the shared turns as the prompt)"
    )
    with pytest.raises(SimscopeError) as e:
        load_preferences(path)
    assert str(e.value) == f"{first}; fix the record, or pass --skip-bad to skip bad records"
    result = load_preferences(path, skip_bad=True)
    assert (result.n_read, result.n_bad, result.pairs.height) == (3, 2, 1)
    assert result.bad == [
        first,
        f"{path}:3: field 'prompt': expected the turns that 'chosen' and 'rejected' share "
        "before their responses, or some of them (none: they differ from the first message), "
        "found 'User: What is 2+2?' (leave the field out to take the shared turns as the "
        "prompt)",
    ]


# ---- lone surrogates: JSON may spell half a UTF-16 pair, which is not text -------------------

SURROGATE_HINT = (
    "(a \\ud800-\\udfff escape must be one half of a high-low pair, as in \\ud83d\\ude00)"
)


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_lone_surrogate_is_a_located_bad_record(tmp_path: Path, fmt: str) -> None:
    # Written by hand: json.dumps would escape the backslash. Record 2 holds "\udc80" alone,
    # record 3 a proper pair (an emoji), records 4-6 lone halves in a message, a role, an id.
    good = '{"prompt": "p", "chosen": "c", "rejected": "r"}'
    lines = [
        good,
        '{"prompt": "p", "chosen": "a\\udc80b", "rejected": "r"}',
        '{"prompt": "p", "chosen": "smile \\ud83d\\ude00", "rejected": "r"}',
        '{"prompt": "\\ud83d", "chosen": "c", "rejected": "r"}',
        '{"id": "x\\udfff", "prompt": "p", "chosen": "c", "rejected": "r"}',
        good.replace('"c"', '"c2"'),
    ]
    path = tmp_path / f"prefs.{fmt}"
    path.write_text("\n".join(lines) + "\n" if fmt == "jsonl" else "[" + ",\n".join(lines) + "]")
    at = (lambda n: f"{path}:{n}") if fmt == "jsonl" else (lambda n: f"{path}:item {n}")
    bad = [
        f"{at(2)}: field 'chosen': expected Unicode text, found a lone surrogate '\\udc80' at "
        f"character 1 of 'a\\udc80b' {SURROGATE_HINT}",
        f"{at(4)}: field 'prompt': expected Unicode text, found a lone surrogate '\\ud83d' at "
        f"character 0 of '\\ud83d' {SURROGATE_HINT}",
        f"{at(5)}: field 'id': expected Unicode text, found a lone surrogate '\\udfff' at "
        f"character 1 of 'x\\udfff' {SURROGATE_HINT}",
    ]
    with pytest.raises(SimscopeError) as e:
        load_preferences(path)
    assert str(e.value) == f"{bad[0]}; fix the record, or pass --skip-bad to skip bad records"
    result = load_preferences(path, skip_bad=True)
    assert (result.n_read, result.n_bad, result.bad) == (6, 3, bad)
    # the records after the first lone surrogate are all read, at their own places
    assert result.pairs.select("chosen", "source").rows() == [
        ("c", f"prefs.{fmt}:{'1' if fmt == 'jsonl' else 'item 1'}"),
        ("smile \U0001f600", f"prefs.{fmt}:{'3' if fmt == 'jsonl' else 'item 3'}"),
        ("c2", f"prefs.{fmt}:{'6' if fmt == 'jsonl' else 'item 6'}"),
    ]


def test_a_lone_surrogate_in_a_trl_message(tmp_path: Path) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_text(
        '{"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": '
        '[{"type": "text", "text": "\\udc80"}]}], "rejected": [{"role": "user", "content": '
        '"Hi"}, {"role": "assistant", "content": "Go."}]}\n'
        '{"chosen": [{"role": "us\\ud800er", "content": "Hi"}], "rejected": []}\n'
        '{"id": {"a": "\\udc80"}, "chosen": [{"role": "assistant", "content": "4"}], '
        '"rejected": [{"role": "assistant", "content": "5"}]}\n'
        + json.dumps({"chosen": [_assistant("4")], "rejected": [_assistant("5")]})
        + "\n"
    )
    result = load_preferences(path, skip_bad=True, allow_empty=True)
    assert result.pairs.select("prompt", "chosen", "rejected").rows() == [("", "4", "5")]
    assert result.bad == [
        f"{path}:1: field 'chosen[1].content': expected Unicode text, found a lone surrogate "
        f"'\\udc80' at character 0 of '\\udc80' {SURROGATE_HINT}",
        f"{path}:2: field 'chosen[0].role': expected Unicode text, found a lone surrogate "
        f"'\\ud800' at character 2 of 'us\\ud800er' {SURROGATE_HINT}",
        # a message shows the value found as text, the half pair escaped
        f'{path}:3: field \'id\': expected a string or an integer id, found {{"a": "\\udc80"}}',
    ]


def test_a_json_array_read_on_after_a_lone_surrogate_still_reports_bad_json(
    tmp_path: Path,
) -> None:
    path = tmp_path / "prefs.json"
    path.write_text(
        '[{"prompt": "p", "chosen": "\\udc80", "rejected": "r"},\n'
        '{"prompt": "p", "chosen": "c", "rejected": "r"},\n{"prompt": '
    )
    with pytest.raises(SimscopeError) as e:
        load_preferences(path, skip_bad=True)
    assert str(e.value) == (
        f"{path}: invalid JSON after item 2 (Incomplete JSON content); expected a JSON array "
        "of objects"
    )


def test_cli_load_with_a_lone_surrogate(tmp_path: Path) -> None:
    from simscope.cli import cli

    path = tmp_path / "prefs.jsonl"
    path.write_text(
        '{"prompt": "p", "chosen": "\\udc80", "rejected": "r"}\n'
        '{"prompt": "p", "chosen": "c", "rejected": "r"}\n'
    )
    runner = CliRunner()
    bad = runner.invoke(cli, ["--quiet", "load", str(path)])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert bad.output.splitlines() == [
        f"Error: {path}:1: field 'chosen': expected Unicode text, found a lone surrogate "
        f"'\\udc80' at character 0 of '\\udc80' {SURROGATE_HINT}; fix the record, or pass "
        "--skip-bad to skip bad records"
    ]
    skipped = runner.invoke(cli, ["--quiet", "load", str(path), "--skip-bad"])
    assert skipped.exit_code == 0, skipped.output
    assert skipped.stdout.startswith("1 pairs, schema pairs, 1 bad skipped;")


def test_cli_refuses_arguments_that_are_not_utf8(tmp_path: Path) -> None:
    # Python hands argument bytes that are not UTF-8 over as lone surrogates (PEP 383):
    # "caf\udce9" is what the shell's b"caf\xe9" (Latin-1) becomes.
    from simscope.cli import cli

    runner = CliRunner()
    cases = [
        (
            ["probe", "generate", "m", "-o", str(tmp_path / "o.parquet"), "--prefix", "caf\udce9"],
            "Error: --prefix: expected UTF-8 text, found b'caf\\xe9', which is not UTF-8; pass "
            "it in UTF-8",
        ),
        (
            ["load", "caf\udce9.jsonl"],
            "Error: PREFS: expected UTF-8 text, found b'caf\\xe9.jsonl', which is not UTF-8; "
            "use a UTF-8 file name",
        ),
        (
            [
                *("probe", "import", str(PREFS / "pairs.csv"), "-o", str(tmp_path / "o.parquet")),
                *("--text-field", "chosen", "--model", "m\udcff"),
            ],
            "Error: --model: expected UTF-8 text, found b'm\\xff', which is not UTF-8; pass it "
            "in UTF-8",
        ),
    ]
    for args, line in cases:
        result = runner.invoke(cli, ["--quiet", *args])
        assert result.exit_code == 1, result.output
        assert result.output.splitlines() == [line]
    assert not (tmp_path / "o.parquet").exists()


# ---- laws ---------------------------------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r"), max_size=40)
_RESPONSE = _TEXT.filter(lambda s: s.strip() != "")


def _write(fmt: str, path: Path, records: list[dict[str, str]]) -> None:
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    elif fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["prompt", "chosen", "rejected"])
            writer.writeheader()
            writer.writerows(records)
    else:
        pl.DataFrame(records).write_parquet(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.fixed_dictionaries({"prompt": _TEXT, "chosen": _RESPONSE, "rejected": _RESPONSE}),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(["jsonl", "json", "csv", "parquet"]),
    st.booleans(),
)
def test_pairs_round_trip_unchanged(records: list[dict[str, str]], fmt: str, gz: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"prefs.{fmt}"
        _write(fmt, path, records)
        if gz:
            gz_path = path.with_name(path.name + ".gz")
            gz_path.write_bytes(gzip.compress(path.read_bytes()))
            path = gz_path
        pairs = load_preferences(path, schema="pairs").pairs
        assert pairs.select("prompt", "chosen", "rejected").to_dicts() == records
        canonical = Path(tmp) / "set.parquet"
        write_preference_set(pairs, canonical)
        assert read_preference_set(canonical).equals(pairs)
