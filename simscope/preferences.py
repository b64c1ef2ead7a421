"""Preference data in: the loader for a team's preference files and the PreferenceSet parquet.

Owns turning records (read by ``simscope.readers``) of one of three schemas into the
``PreferenceSet`` table of ``records.py``, reporting each bad record with its place, field,
what was expected and what was found. Knows nothing of models or metrics.

Schemas (auto-detected from the first record's fields, or named):

- ``pairs``: ``prompt``, ``chosen``, ``rejected`` strings, kept exactly as written. The prompt
  may be empty; the responses may not (unless ``allow_empty``).
- ``hh``: HH-RLHF, ``chosen`` and ``rejected`` full transcripts
  (``\\n\\nHuman: ...\\n\\nAssistant: ...``). The prompt is the longest common prefix of the two
  transcripts that ends at an ``\\n\\nAssistant:`` marker, marker included, with leading and
  trailing whitespace stripped; each response is what follows it, stripped. An empty last
  Assistant turn is kept by default: HH-RLHF has a few, where the labeller preferred no reply
  (4 of the 2,312 harmless-base test pairs). That prefix must
  end at the last Assistant marker of at least one transcript: when one response itself runs on
  into further turns (a model that wrote ``Human:`` lines), the prompt is the other's full
  context and the run-on text stays in its response. Transcripts that part earlier are bad.
- ``trl``: TRL's conversational format: ``chosen`` and ``rejected`` lists of ``{role,
  content}`` messages, with an optional ``prompt`` (a list of messages, or a string, which
  stands for one user message; null or blank counts as absent). Without a prompt, the
  messages the two lists share from the start are the prompt and the responses are what
  follows them (TRL's ``maybe_extract_prompt``). With a prompt, when both lists start before
  their responses (with a user or system turn, as UltraFeedback-binarized repeats the user
  turn), the same holds, and the given prompt must be among the shared turns, in order (it
  may be only some of them: the first or the last user turn); otherwise the record is bad,
  named with both. When the lists hold the responses only (they start with an assistant
  turn), the given prompt is the prompt. Messages render as ``Role: content`` (the role with
  its first letter upper-cased, the content stripped) joined by blank lines, so a prompt
  string renders as ``User: ...``, like the same prompt given as a message; a response's
  leading assistant message renders as its bare content, as in an HH response. A content may
  be a string or a list of ``{"type": "text", "text": ...}`` parts (joined). Two messages are
  the same turn when they render alike. Empty responses are bad records unless
  ``allow_empty``.

A text holding a lone surrogate (JSON's ``"\\udc80"`` without its other half) is not text:
the record is bad, named with its field.

``pair_id`` is the record's ``pair_id`` or ``id`` field when it has one (a string or an
integer; null or empty counts as absent), else the xxh3-128 hash of the length-prefixed
(prompt, chosen, rejected) texts. An id seen before (a repeated id, or an exact repeat of a
pair) gets ``-2``, ``-3``, ... appended, so ids are unique; the count is logged.
``source`` is the record's place: ``file:LINE``, ``file:item N`` or ``file:row N`` (file name
only, so that a PreferenceSet does not depend on where its input lay).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import polars as pl
from tqdm import tqdm

from simscope.errors import SimscopeError
from simscope.readers import RawRecord, printable, read_records, show_value, surrogate_error
from simscope.records import PREFERENCE_SCHEMA, SLICES, check_frame
from simscope.storage import hash_texts, read_parquet, write_parquet

logger = logging.getLogger(__name__)

SCHEMAS: Final = ("pairs", "hh", "trl")
"""Preference record schemas ``load_preferences`` reads."""

HH_MARKER: Final = "\n\nAssistant:"
"""The marker before every assistant turn of an HH-RLHF transcript."""

EMPTY_ALLOWED: Final = {"pairs": False, "hh": True, "trl": False}
"""Whether each schema keeps pairs with an empty response when ``allow_empty`` is None."""

MAX_BAD_KEPT: Final = 10
"""How many bad-record messages a LoadResult keeps (all are counted)."""

_CHUNK_PAIRS = 8192

_FIELDS: Final = {
    "pairs": ("prompt", "chosen", "rejected"),
    "hh": ("chosen", "rejected"),
    "trl": ("chosen", "rejected"),
}
_DESCRIBED: Final = (
    "'pairs' (prompt, chosen, rejected strings), 'hh' (chosen, rejected HH-RLHF transcripts), "
    "'trl' (chosen, rejected message lists, optional prompt)"
)
_SKIP_HINT: Final = "fix the record, or pass --skip-bad to skip bad records"
_EMPTY_HINT: Final = "fix the record, pass --allow-empty to keep empty responses, or --skip-bad"


@dataclass(frozen=True)
class LoadResult:
    """A loaded PreferenceSet and what was left out on the way.

    ``n_empty`` counts kept pairs with an empty response. ``n_hh_diverged`` counts HH pairs
    whose transcripts have their last Assistant turn in different places (one response runs
    on into further turns); the prompt is then the common context (see the module docstring).
    ``n_prompt_widened`` counts TRL pairs whose given prompt is only part of the turns their
    conversations share; the prompt is then all of the shared turns.
    """

    pairs: pl.DataFrame
    n_bad: int
    bad: list[str]
    schema: str
    n_read: int = 0
    n_hh_diverged: int = 0
    n_empty: int = 0
    n_prompt_widened: int = 0


class _BadRecord(Exception):
    """One record that cannot be a preference pair; the message says where and why."""

    def __init__(self, message: str, *, empty: bool = False) -> None:
        super().__init__(message)
        self.empty = empty


def load_preferences(
    path: Path,
    *,
    schema: str | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
    allow_empty: bool | None = None,
    format: str | None = None,
    progress: bool = False,
) -> LoadResult:
    """Read a preference file (JSONL, JSON array, parquet or CSV; gzip or not) as a PreferenceSet.

    ``schema`` is ``pairs``, ``hh`` or ``trl`` (None or ``auto``: detected from the first
    record's fields). Without ``skip_bad`` the first bad record raises SimscopeError; with it,
    bad records are counted, the first few kept in ``bad``, and skipped. ``limit`` stops after
    that many pairs. An empty (or whitespace-only) response is a bad record unless
    ``allow_empty``; None means the schema's default (kept for ``hh``, whose data has empty
    last turns, bad otherwise). ``format`` overrides the format read from the file's suffix.
    """
    path = Path(path)
    if schema not in (None, "auto", *SCHEMAS):
        raise SimscopeError(
            f"schema {schema!r}: expected auto or one of {', '.join(SCHEMAS)}; found {schema!r}"
        )
    if limit is not None and limit < 1:
        raise SimscopeError(f"limit: expected a positive number of pairs, found {limit}")
    records = read_records(path, format=format)
    first = next(records, None)
    if first is None:
        raise SimscopeError(f"{path}: no records; expected at least one preference pair")
    chosen_schema = _detect_schema(first, path) if schema in (None, "auto") else str(schema)
    _check_fields(first, chosen_schema, path)
    parse = {"pairs": _parse_pairs, "hh": _parse_hh, "trl": _parse_trl}[chosen_schema]
    if allow_empty is None:
        allow_empty = EMPTY_ALLOWED[chosen_schema]

    columns: dict[str, list[str]] = {name: [] for name in PREFERENCE_SCHEMA}
    chunks: list[pl.DataFrame] = []
    n_pairs = 0
    used_ids: set[str] = set()
    next_suffix: dict[str, int] = {}
    n_repeats = 0
    bad: list[str] = []
    n_read = n_bad = n_diverged = n_widened = n_empty = 0
    all_records = itertools.chain([first], records)
    for record in tqdm(all_records, desc="load", unit="record", disable=not progress):
        n_read += 1
        try:
            prompt, chosen, rejected, note = parse(record, allow_empty)
            pair_id = _explicit_id(record)
        except _BadRecord as e:
            if not skip_bad:
                raise SimscopeError(f"{e}; {_EMPTY_HINT if e.empty else _SKIP_HINT}") from None
            n_bad += 1
            if len(bad) < MAX_BAD_KEPT:
                bad.append(str(e))
            continue
        if pair_id is None:
            pair_id = hash_texts((prompt, chosen, rejected))
        if pair_id in used_ids:
            n_repeats += 1
            base, k = pair_id, next_suffix.get(pair_id, 2)
            while f"{base}-{k}" in used_ids:
                k += 1
            pair_id, next_suffix[base] = f"{base}-{k}", k + 1
        used_ids.add(pair_id)
        n_diverged += note == "hh_diverged"
        n_widened += note == "prompt_widened"
        n_empty += _blank(chosen) or _blank(rejected)
        for name, value in zip(
            PREFERENCE_SCHEMA,
            (pair_id, prompt, chosen, rejected, _source(record, path)),
            strict=True,
        ):
            columns[name].append(value)
        n_pairs += 1
        if n_pairs % _CHUNK_PAIRS == 0:
            # Python strings cost ~50 bytes each beyond their text: move them into Arrow often.
            chunks.append(pl.DataFrame(columns, schema=PREFERENCE_SCHEMA))
            columns = {name: [] for name in PREFERENCE_SCHEMA}
        if limit is not None and n_pairs >= limit:
            break
    chunks.append(pl.DataFrame(columns, schema=PREFERENCE_SCHEMA))
    del columns

    if n_pairs == 0:
        first_bad = f"; first: {bad[0]}" if bad else ""
        raise SimscopeError(
            f"{path}: no preference pairs left (read {n_read} records, {n_bad} bad{first_bad}); "
            "expected at least one valid pair"
        )
    if n_bad:
        logger.warning("%s: skipped %d bad record(s) of %d; first: %s", path, n_bad, n_read, bad[0])
    if n_diverged:
        logger.info(
            "%s: %d HH pair(s) have their last Assistant turn in different places; the prompt "
            "is the shared context",
            path,
            n_diverged,
        )
    if n_widened:
        logger.info(
            "%s: %d pair(s) give a prompt that is part of the turns their conversations share; "
            "the prompt is all of those turns",
            path,
            n_widened,
        )
    if n_empty:
        logger.info("%s: %d pair(s) with an empty response kept", path, n_empty)
    if n_repeats:
        logger.info(
            "%s: %d repeated id(s) or pair(s) kept, made unique with -2, -3, ...", path, n_repeats
        )
    logger.info("%s: %d pairs, schema %s", path, n_pairs, chosen_schema)
    frame = check_frame(pl.concat(chunks, rechunk=False), PREFERENCE_SCHEMA, "PreferenceSet")
    return LoadResult(
        frame, n_bad, bad, chosen_schema, n_read, n_diverged, n_empty, n_prompt_widened=n_widened
    )


def write_preference_set(
    df: pl.DataFrame, path: Path, metadata: Mapping[str, str] | None = None
) -> None:
    """Write a PreferenceSet parquet atomically (its schema checked first)."""
    write_parquet(check_frame(df, PREFERENCE_SCHEMA, "PreferenceSet"), Path(path), metadata)


def read_preference_set(path: Path) -> pl.DataFrame:
    """Read a PreferenceSet parquet, checking its columns, types and that nothing is null."""
    path = Path(path)
    if not path.is_file():
        raise SimscopeError(f"{path}: no such file; expected a PreferenceSet parquet")
    df = read_parquet(
        path,
        expected="a PreferenceSet parquet (pair_id, prompt, chosen, rejected, source) written "
        "by simscope load",
        fix="write it again with simscope load",
    )
    df = check_frame(df, PREFERENCE_SCHEMA, "PreferenceSet", str(path))
    for name in PREFERENCE_SCHEMA:
        nulls = df.get_column(name).is_null()
        if nulls.any():
            row = int(nulls.arg_true()[0]) + 1
            raise SimscopeError(
                f"{path}: PreferenceSet: column {name!r}: expected strings, found {nulls.sum()} "
                f"null(s) (first at row {row}); rebuild it with simscope load"
            )
    return df


def preference_metadata(result: LoadResult, path: Path) -> dict[str, str]:
    """Key-value metadata recording how a PreferenceSet was loaded (for its parquet file)."""
    info = {
        "table": "PreferenceSet",
        "input": Path(path).name,
        "schema": result.schema,
        "n_read": result.n_read,
        "n_bad": result.n_bad,
        "n_hh_diverged": result.n_hh_diverged,
        "n_empty": result.n_empty,
        "n_prompt_widened": result.n_prompt_widened,
    }
    return {"simscope": json.dumps(info, sort_keys=True)}


def summarize_preferences(result: LoadResult) -> str:
    """One line: pairs, schema, bad records skipped, mean words per slice."""
    words = result.pairs.select(
        pl.col(s).str.count_matches(r"\S+").mean().alias(s) for s in SLICES
    ).row(0)
    mean_words = ", ".join(f"{s} {w:.1f}" for s, w in zip(SLICES, words, strict=True))
    empty = f", {result.n_empty} with an empty response" if result.n_empty else ""
    return (
        f"{result.pairs.height} pairs, schema {result.schema}, {result.n_bad} bad skipped"
        f"{empty}; mean words: {mean_words}"
    )


# ---- schema detection ---------------------------------------------------------------------


def _detect_schema(record: RawRecord, path: Path) -> str:
    data = record.data
    if "chosen" not in data and "rejected" not in data:
        raise SimscopeError(
            f"{path}: unknown preference schema: the first record ({record.location}) has "
            f"fields {_field_list(data)}; expected one of {_DESCRIBED}; rename the fields or "
            "choose the schema with --schema"
        )
    response = data["chosen"] if "chosen" in data else data["rejected"]
    if isinstance(response, list):
        return "trl"
    return "pairs" if "prompt" in data else "hh"


def _check_fields(record: RawRecord, schema: str, path: Path) -> None:
    missing = [f for f in _FIELDS[schema] if f not in record.data]
    if missing:
        raise SimscopeError(
            f"{path}: missing field(s) {', '.join(map(repr, missing))} for schema {schema!r}: "
            f"the first record ({record.location}) has fields {_field_list(record.data)}; "
            f"expected {', '.join(_FIELDS[schema])}; add the missing column or choose the "
            "schema with --schema"
        )


def _field_list(data: Mapping[str, Any]) -> str:
    names = sorted(printable(str(name)) for name in data)
    shown = names[:20] + ([f"... {len(names) - 20} more"] if len(names) > 20 else [])
    return "[" + ", ".join(shown) + "]"


# ---- one record -> (prompt, chosen, rejected, diverged) -----------------------------------


def _found(data: Mapping[str, Any], key: str) -> str:
    return show_value(data[key]) if key in data else "no such field"


def _text(record: RawRecord, field: str, value: str) -> str:
    """``value``, unless it holds a lone surrogate (then the record is bad)."""
    problem = surrogate_error(record.location, field, value)
    if problem:
        raise _BadRecord(problem)
    return value


def _string(record: RawRecord, key: str, *, allow_empty: bool) -> str:
    value = record.data.get(key)
    if isinstance(value, str) and (allow_empty or not _blank(value)):
        return _text(record, key, value)
    expected = "string" if allow_empty else "non-empty string"
    empty = isinstance(value, str)
    raise _BadRecord(
        f"{record.location}: field {key!r}: expected {expected}, found {_found(record.data, key)}",
        empty=empty,
    )


def _parse_pairs(record: RawRecord, allow_empty: bool) -> tuple[str, str, str, str | None]:
    prompt = _string(record, "prompt", allow_empty=True)
    chosen = _string(record, "chosen", allow_empty=allow_empty)
    rejected = _string(record, "rejected", allow_empty=allow_empty)
    return prompt, chosen, rejected, None


def _parse_hh(record: RawRecord, allow_empty: bool) -> tuple[str, str, str, str | None]:
    chosen = _string(record, "chosen", allow_empty=False)
    rejected = _string(record, "rejected", allow_empty=False)
    last: dict[str, int] = {}
    for key, text in (("chosen", chosen), ("rejected", rejected)):
        last[key] = text.rfind(HH_MARKER)
        if last[key] < 0:
            raise _BadRecord(
                f"{record.location}: field {key!r}: expected an HH-RLHF transcript with an "
                f"'\\n\\nAssistant:' turn, found {show_value(text)} (schema 'hh': chosen and "
                "rejected without a 'prompt' field)"
            )
    shared = last["chosen"] + len(HH_MARKER)
    if rejected.startswith(chosen[:shared]):
        cut = last["chosen"]  # the common case: all of the chosen's context is shared
    else:
        shared = _common_prefix_len(chosen, rejected)
        cut = chosen.rfind(HH_MARKER, 0, shared)
    if cut < 0 or cut not in (last["chosen"], last["rejected"]):
        where = "in the first turn" if cut < 0 else f"at character {shared}"
        raise _BadRecord(
            f"{record.location}: fields 'chosen' and 'rejected': expected transcripts that share "
            "every turn up to the last '\\n\\nAssistant:' of one of them, found them parting "
            f"{where}, before either's last Assistant turn"
        )
    end = cut + len(HH_MARKER)
    prompt = chosen[:end].strip()
    responses = {"chosen": chosen[end:].strip(), "rejected": rejected[end:].strip()}
    if not allow_empty:
        for key, response in responses.items():
            if not response:
                raise _BadRecord(
                    f"{record.location}: field {key!r}: expected a non-empty response after "
                    "the last '\\n\\nAssistant:', found ''",
                    empty=True,
                )
    note = "hh_diverged" if last["chosen"] != last["rejected"] else None
    return prompt, responses["chosen"], responses["rejected"], note


def _common_prefix_len(a: str, b: str) -> int:
    # Bisection on slice equality: O(n log n) character compares, all in C.
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _parse_trl(record: RawRecord, allow_empty: bool) -> tuple[str, str, str, str | None]:
    chosen = _messages(record, "chosen")
    rejected = _messages(record, "rejected")
    n_shared = 0
    for a, b in zip(chosen, rejected, strict=False):
        if _key(a) != _key(b):
            break
        n_shared += 1
    shared = chosen[:n_shared]
    given = _given_prompt(record)
    note = None
    if given is None:
        prompt = _render(shared)
        chosen, rejected = chosen[n_shared:], rejected[n_shared:]
    elif _carry_context(chosen, rejected):
        # The conversations repeat the context before the responses (UltraFeedback-binarized):
        # the responses are what follows the turns they share (TRL's maybe_extract_prompt),
        # and the prompt given must be among those turns.
        if not _among(given, shared):
            found = _render(given)
            context = (
                show_value(_render(shared))
                if shared
                else "none: they differ from the first message"
            )
            raise _BadRecord(
                f"{record.location}: field 'prompt': expected the turns that 'chosen' and "
                f"'rejected' share before their responses, or some of them ({context}), found "
                f"{show_value(found)} (leave the field out to take the shared turns as the "
                "prompt)"
            )
        if len(given) < n_shared:
            note = "prompt_widened"
        prompt = _render(shared)
        chosen, rejected = chosen[n_shared:], rejected[n_shared:]
    else:
        prompt = _render(given)  # the conversations hold the responses only
    responses = {"chosen": _render_response(chosen), "rejected": _render_response(rejected)}
    if not allow_empty:
        for key, response in responses.items():
            if _blank(response):
                raise _BadRecord(
                    f"{record.location}: field {key!r}: expected a non-empty response after "
                    f"the prompt messages, found {show_value(response)}",
                    empty=True,
                )
    return prompt, responses["chosen"], responses["rejected"], note


def _given_prompt(record: RawRecord) -> list[tuple[str, str]] | None:
    """The record's ``prompt`` as messages (a string is one user message); None when absent,
    null or a blank string."""
    value = record.data.get("prompt")
    if value is None or (isinstance(value, str) and _blank(value)):
        return None
    if isinstance(value, str):
        return [("user", _text(record, "prompt", value))]
    return _messages(record, "prompt")


def _key(message: tuple[str, str]) -> tuple[str, str]:
    # What rendering keeps of a message: two that render alike are the same turn.
    return message[0].lower(), message[1].strip()


def _carry_context(chosen: list[tuple[str, str]], rejected: list[tuple[str, str]]) -> bool:
    """Whether both conversations start before their responses (not with an assistant turn)."""
    return all(m and m[0][0].lower() != "assistant" for m in (chosen, rejected))


def _among(given: list[tuple[str, str]], shared: list[tuple[str, str]]) -> bool:
    """Whether the ``given`` messages are among the ``shared`` ones, in order."""
    turns = iter(map(_key, shared))
    return all(any(k == t for t in turns) for k in map(_key, given))


def _messages(record: RawRecord, key: str) -> list[tuple[str, str]]:
    value = record.data.get(key)
    if not isinstance(value, list):
        raise _BadRecord(
            f"{record.location}: field {key!r}: expected a list of {{role, content}} messages, "
            f"found {_found(record.data, key)}"
        )
    out = []
    for i, message in enumerate(value):
        field = f"{key}[{i}]"
        if not isinstance(message, dict):
            raise _BadRecord(
                f"{record.location}: field {field!r}: expected a {{role, content}} message, "
                f"found {show_value(message)}"
            )
        role = message.get("role")
        if not isinstance(role, str) or not role.strip():
            raise _BadRecord(
                f"{record.location}: field '{field}.role': expected non-empty string, found "
                f"{_found(message, 'role')}"
            )
        role = _text(record, f"{field}.role", role.strip())
        out.append((role, _content(record, f"{field}.content", message)))
    return out


def _content(record: RawRecord, field: str, message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return _text(record, field, content)
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return _text(record, field, "".join(p["text"] for p in content))
    raise _BadRecord(
        f"{record.location}: field {field!r}: expected a string or a list of text parts, "
        f"found {_found(message, 'content')}"
    )


def _blank(text: str) -> bool:
    return not text or text.isspace()


def _role(role: str) -> str:
    return role[:1].upper() + role[1:]


def _render(messages: list[tuple[str, str]]) -> str:
    return "\n\n".join(f"{_role(role)}: {content.strip()}" for role, content in messages)


def _render_response(messages: list[tuple[str, str]]) -> str:
    if messages and messages[0][0].lower() == "assistant":
        head = messages[0][1].strip()
        rest = _render(messages[1:])
        return f"{head}\n\n{rest}" if rest else head
    return _render(messages)


def _explicit_id(record: RawRecord) -> str | None:
    key = "pair_id" if "pair_id" in record.data else "id" if "id" in record.data else None
    if key is None:
        return None
    value = record.data[key]
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _BadRecord(
            f"{record.location}: field {key!r}: expected a string or an integer id, found "
            f"{show_value(value)}"
        )
    return _text(record, key, value) if isinstance(value, str) else str(value)


def _source(record: RawRecord, path: Path) -> str:
    return printable(path.name) + record.location.removeprefix(str(path))


def read_preferences_any(path: Path, *, progress: bool = True) -> pl.DataFrame:
    """A PreferenceSet parquet as it is, or any file :func:`load_preferences` reads."""
    path = Path(path)
    columns: set[str] = set()
    if path.suffix == ".parquet":
        try:
            columns = set(pl.read_parquet_schema(path))
        except (pl.exceptions.PolarsError, OSError):
            columns = set()  # not a readable parquet: load_preferences says why
    if set(PREFERENCE_SCHEMA) <= columns:
        return read_preference_set(path)
    return load_preferences(path, progress=progress).pairs
