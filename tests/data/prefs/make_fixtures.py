"""Write the preference fixtures of this directory (run once; the outputs are committed).

The good files hold the same three pairs in every format, so a test can check that each
format loads to the same PreferenceSet. The bad files each hold one kind of mistake, on a
known line. Run: ``.venv/bin/python tests/data/prefs/make_fixtures.py``.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any

import polars as pl

HERE = Path(__file__).parent

PAIRS: list[dict[str, Any]] = [
    {
        "prompt": "What is the capital of France?",
        "chosen": "Paris.",
        "rejected": "London, I think.",
    },
    {
        "prompt": "Name a prime number.",
        "chosen": "Seven is prime: its only divisors are 1 and 7.",
        "rejected": "Nine.",
    },
    {
        "prompt": "Say hello in Spanish, with a comma and a quote.",
        "chosen": 'Hola, "amigo".\nAdiós.',
        "rejected": "Bonjour.",
    },
]

HH: list[dict[str, Any]] = [
    # one turn
    {
        "chosen": "\n\nHuman: What is the capital of France?\n\nAssistant: Paris.",
        "rejected": "\n\nHuman: What is the capital of France?\n\nAssistant: London, I think.",
    },
    # two turns
    {
        "chosen": "\n\nHuman: Hi!\n\nAssistant: Hello.\n\nHuman: Name a prime number."
        "\n\nAssistant: Seven is prime: its only divisors are 1 and 7.",
        "rejected": "\n\nHuman: Hi!\n\nAssistant: Hello.\n\nHuman: Name a prime number."
        "\n\nAssistant: Nine.",
    },
    # the rejected response runs on into a turn of its own (as in HH-RLHF line 1255)
    {
        "chosen": "\n\nHuman: Say hello in Spanish, with a comma and a quote."
        '\n\nAssistant: Hola, "amigo".\nAdiós.',
        "rejected": "\n\nHuman: Say hello in Spanish, with a comma and a quote."
        "\n\nAssistant: Bonjour.\n\nHuman: That is French.\n\nAssistant: Oui.",
    },
]


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


TRL: list[dict[str, Any]] = [
    # implicit prompt: the shared leading messages
    {
        "chosen": [_msg("user", p["prompt"]), _msg("assistant", p["chosen"])],
        "rejected": [_msg("user", p["prompt"]), _msg("assistant", p["rejected"])],
    }
    for p in PAIRS
]

TRL_PROMPT: list[dict[str, Any]] = [
    # explicit prompt (with a system message), an id, and text parts as content
    {
        "id": f"q{i}",
        "prompt": [_msg("system", "Be brief."), _msg("user", p["prompt"])],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": p["chosen"]}]}],
        "rejected": [_msg("assistant", p["rejected"])],
    }
    for i, p in enumerate(PAIRS, start=1)
]


def _jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _json(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n")


def _csv(path: Path, records: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def _parquet(path: Path, records: list[dict[str, Any]]) -> None:
    pl.DataFrame(records).write_parquet(path)


def main() -> None:
    for name, records in (("pairs", PAIRS), ("hh", HH), ("trl", TRL)):
        _jsonl(HERE / f"{name}.jsonl", records)
        _json(HERE / f"{name}.json", records)
        _parquet(HERE / f"{name}.parquet", records)
        if name != "trl":  # a CSV cell cannot hold a message list
            _csv(HERE / f"{name}.csv", records)
    _jsonl(HERE / "trl_prompt.jsonl", TRL_PROMPT)
    (HERE / "pairs.jsonl.gz").write_bytes(
        gzip.compress((HERE / "pairs.jsonl").read_bytes(), mtime=0)
    )

    bad = HERE / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "empty.jsonl").write_bytes(b"")
    (bad / "latin1.jsonl").write_bytes(
        b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
        b'{"prompt": "caf\xe9", "chosen": "b", "rejected": "c"}\n'
    )
    (bad / "invalid.jsonl").write_text(
        '{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
        '{"prompt": "a", "chosen": "b", "rejected": "c",}\n'
    )
    (bad / "not_object.jsonl").write_text(
        '{"prompt": "a", "chosen": "b", "rejected": "c"}\n["a", "b", "c"]\n'
    )
    (bad / "object.json").write_text('{"data": [{"prompt": "a", "chosen": "b", "rejected": "c"}]}')
    (bad / "array_of_strings.json").write_text(
        '[{"prompt": "a", "chosen": "b", "rejected": "c"}, "x"]'
    )
    (bad / "missing_rejected.csv").write_text("prompt,chosen\nWhat?,That.\n")
    _jsonl(bad / "unknown_schema.jsonl", [{"question": "What?", "answer": "That.", "score": 1}])
    _jsonl(
        bad / "non_string.jsonl",
        [PAIRS[0], {"prompt": "How many?", "chosen": 42, "rejected": "Many."}],
    )
    _jsonl(
        bad / "empty_response.jsonl",
        [PAIRS[0], PAIRS[1], {"prompt": "Anything?", "chosen": "  ", "rejected": "No."}],
    )
    _jsonl(
        bad / "hh_no_assistant.jsonl",
        [HH[0], {"chosen": "\n\nHuman: Hello?", "rejected": "\n\nHuman: Hello?\n\nAssistant: Hi."}],
    )
    _jsonl(
        bad / "hh_parted.jsonl",
        [
            {
                "chosen": "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Bye\n\nAssistant: Bye.",
                "rejected": "\n\nHuman: Hi\n\nAssistant: Go away.\n\nHuman: Bye\n\nAssistant: Ok.",
            }
        ],
    )
    _jsonl(
        bad / "trl_bad_content.jsonl",
        [
            TRL[0],
            {
                "chosen": [_msg("user", "Hi"), {"role": "assistant", "content": 7}],
                "rejected": [_msg("user", "Hi"), _msg("assistant", "Go.")],
            },
        ],
    )
    # seven records: line 2 has a null response, line 4 an empty response, line 5 a repeated
    # id (kept, made unique), line 7 an id that is neither a string nor an integer
    _jsonl(
        bad / "mixed.jsonl",
        [
            {"id": 1, **PAIRS[0]},
            {"id": 2, "prompt": "x", "chosen": None, "rejected": "y"},
            {"id": 3, **PAIRS[1]},
            {"id": 4, "prompt": "x", "chosen": "y", "rejected": ""},
            {"id": 3, **PAIRS[2]},
            {"id": 6, **PAIRS[2]},
            {"id": [7], **PAIRS[0]},
        ],
    )


if __name__ == "__main__":
    main()
