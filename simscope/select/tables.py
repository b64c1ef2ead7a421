"""Reading the select stage's inputs: Benchmarks, RMResults, model-name maps, and Profile
features. Knows nothing of predictors.

Benchmarks and RMResults are read from CSV or parquet, in the long layout of ``records.py``
(``model, benchmark, score`` / ``model, metric, score``) or in the wide layout of a
leaderboard (one row per model, one column per benchmark or metric). In the wide layout a
column is a score column when its values are numbers; a column with no numeric value at all
(a variant name, a training-data label) is descriptive and skipped; a column that mixes
numbers and other text is an error naming the first bad cell. Every error names the file,
the line (CSV, header = line 1) or row (parquet), the field, what was expected and the fix.
An RM result must be a finite number in every score cell: a blank or NaN score would make the
model look untried, so it is refused (a model not measured yet is a candidate, not a row).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Final, Literal

import polars as pl

from simscope.errors import SimscopeError
from simscope.records import BENCHMARK_SCHEMA, PROFILE_SCHEMA, RM_RESULT_SCHEMA, check_frame

logger = logging.getLogger(__name__)

Duplicates = Literal["error", "mean", "max", "first"]
DUPLICATE_POLICIES: Final = ("error", "mean", "max", "first")

PARAMS_BENCHMARK: Final = "params_B"
"""The benchmark name that carries a model's parameter count in billions."""

TOKENS_BENCHMARK: Final = "pretraining_tokens_T"
"""The benchmark name that carries a model's pretraining tokens in trillions."""

BUNDLED_BENCHMARKS: Final = {"open-llm-leaderboard-v2": "open_llm_leaderboard_v2.csv"}
"""Benchmark tables shipped in ``simscope/data`` (provenance in its README), by name."""

LEADERBOARD_BOOKKEEPING: Final = ("leaderboard_rank", "duplicate_entry")
"""Wide-layout columns that are numbers but not benchmarks."""

_MARK_COLUMN = "duplicate_entry"


def bundled_benchmarks_path(name: str) -> Path:
    """Path of the bundled benchmark table called ``name``."""
    if name not in BUNDLED_BENCHMARKS:
        raise SimscopeError(
            f"unknown bundled benchmark table {name!r}; bundled: {', '.join(BUNDLED_BENCHMARKS)}"
        )
    return Path(str(resources.files("simscope") / "data" / BUNDLED_BENCHMARKS[name]))


def read_benchmarks(
    source: str | Path, *, duplicates: Duplicates = "error", model_column: str = "model"
) -> pl.DataFrame:
    """Benchmarks (long, ``BENCHMARK_SCHEMA``) from a file or a bundled table's name.

    ``model_column`` names the column with the model ids (e.g. ``hf_id``). The wide
    leaderboard layout's ``params_B`` column becomes rows with benchmark ``params_B``. Rows
    marked ``duplicate_entry=yes`` are averaged (logged for a user's file; the bundled table's
    are documented in ``simscope/data/README.md`` and logged at debug level only); other
    repeated (model, benchmark) pairs follow ``duplicates``.
    """
    bundled = str(source) in BUNDLED_BENCHMARKS
    path = bundled_benchmarks_path(str(source)) if bundled else Path(source)
    raw = _read_raw(path)
    option = "--benchmark-model-column"
    if "benchmark" in raw.columns and "score" in raw.columns:
        long = _long(raw, path, "Benchmarks", "benchmark", model_column, option)
    else:
        _check_models(raw, path, "Benchmarks", model_column, option)
        raw = _average_marked_duplicates(
            raw, path, model_column, level=logging.DEBUG if bundled else logging.INFO
        )
        long = _wide_to_long(raw, path, "Benchmarks", "benchmark", model_column, option)
    long = _resolve_duplicates(long, path, "benchmark", duplicates, "--benchmark-duplicates", raw)
    return check_frame(long.drop("_row"), BENCHMARK_SCHEMA, "Benchmarks", str(path))


def read_rm_results(
    path: str | Path,
    *,
    model_column: str = "model",
    where: Mapping[str, str] | None = None,
    duplicates: Duplicates = "error",
) -> pl.DataFrame:
    """RMResults (long, ``RM_RESULT_SCHEMA``) from a CSV or parquet file.

    ``model_column`` names the column holding the base model's id in the wide layout (e.g.
    ``base_model``); ``where`` keeps only rows whose column equals a value (e.g.
    ``{"training_data": "Both"}``) before anything else.
    """
    path = Path(path)
    raw = _read_raw(path)
    for column, value in (where or {}).items():
        if column not in raw.columns:
            raise SimscopeError(
                f"{path}: --rm-where {column}={value}: no column {column!r}; "
                f"columns are {raw.columns}"
            )
        kept = raw.filter(pl.col(column).cast(pl.String) == value)
        if kept.height == 0:
            values = sorted({str(v) for v in raw.get_column(column).to_list()})
            raise SimscopeError(
                f"{path}: --rm-where {column}={value}: no row has {column}={value!r}; "
                f"values found: {values}"
            )
        raw = kept
    if "metric" in raw.columns and "score" in raw.columns:
        long = _long(
            raw, path, "RMResults", "metric", model_column, "--rm-model-column", required=True
        )
    else:
        long = _wide_to_long(
            raw, path, "RMResults", "metric", model_column, "--rm-model-column", required=True
        )
    long = _resolve_duplicates(long, path, "metric", duplicates, "--rm-duplicates", raw)
    return check_frame(long.drop("_row"), RM_RESULT_SCHEMA, "RMResults", str(path))


def read_model_map(path: str | Path) -> dict[str, str]:
    """A name map from a CSV or parquet file with columns ``name`` and ``model``.

    Each ``name`` (as written in an RM-results or Profile table, e.g. ``Tulu-3-8B-SFT``) is
    read as ``model`` (the id used by the benchmark table, e.g.
    ``allenai/Llama-3.1-Tulu-3-8B-SFT``).
    """
    path = Path(path)
    raw = _read_raw(path)
    missing = [c for c in ("name", "model") if c not in raw.columns]
    if missing:
        raise SimscopeError(
            f"{path}: model map: missing column(s) {missing}; expected columns ['name', "
            f"'model'] (one row per name to rename), found {raw.columns[1:]}"
        )
    out: dict[str, str] = {}
    for i, (name, model) in enumerate(
        zip(raw.get_column("name").to_list(), raw.get_column("model").to_list(), strict=True)
    ):
        where = _where(path, i)
        if not name or not model:
            raise SimscopeError(
                f"{where}: model map: expected a non-empty 'name' and 'model', found "
                f"{name!r} -> {model!r}; fill both cells or delete the row"
            )
        if name in out and out[name] != model:
            raise SimscopeError(
                f"{where}: model map: field 'name': {name!r} is mapped twice ({out[name]!r} "
                f"and {model!r}); keep one row"
            )
        out[str(name).strip()] = str(model).strip()
    return out


def rename_models(df: pl.DataFrame, model_map: Mapping[str, str]) -> pl.DataFrame:
    """``df`` with its ``model`` column renamed through ``model_map`` (others unchanged)."""
    if not model_map:
        return df
    return df.with_columns(pl.col("model").replace(dict(model_map)))


def read_profile(path: str | Path) -> pl.DataFrame:
    """A Profile (long, ``PROFILE_SCHEMA``) from parquet or CSV."""
    path = Path(path)
    raw = _read_raw(path).drop("_row")
    if path.suffix.lower() not in (".parquet", ".pq"):
        for column in ("value", "ci_low", "ci_high"):
            if column in raw.columns:
                bad = _first_bad(raw.with_row_index("_row"), column)
                if bad is not None:
                    raise SimscopeError(
                        f"{_where(path, bad[0])}: Profile: field {column!r}: expected a "
                        f"finite number, found {bad[1]!r}; fix the cell"
                    )
                raw = raw.with_columns(_as_float(raw, column).alias(column))
        if "topic" in raw.columns:
            raw = raw.with_columns(pl.col("topic").replace("", None))
    profile = check_frame(raw, PROFILE_SCHEMA, "Profile", str(path))
    profile_features(profile, str(path))  # refuse duplicates here, where the file is known
    return profile


def profile_features(profile: pl.DataFrame, where: str = "") -> pl.DataFrame:
    """Wide Profile features: one row per model, one ``slice/metric`` column per whole-slice
    metric (rows with a null topic). Topic rows are left out: they are not comparable across
    preference sets."""
    df = check_frame(profile, PROFILE_SCHEMA, "Profile", where)
    whole = df.filter(pl.col("topic").is_null()).with_columns(
        feature=pl.col("slice") + "/" + pl.col("metric")
    )
    dup = whole.group_by("model", "feature").len().filter(pl.col("len") > 1).sort("model")
    if dup.height:
        model, feature = dup.row(0)[:2]
        raise SimscopeError(
            f"{where + ': ' if where else ''}Profile: duplicate rows for model {model!r}, "
            f"feature {feature!r} (topic null); expected one value per (model, slice, metric); "
            "deduplicate the Profile"
        )
    if whole.height == 0:
        return pl.DataFrame(schema={"model": pl.String})
    return whole.pivot("feature", index="model", values="value").sort("model")


# ---- reading ------------------------------------------------------------------------------


def _read_raw(path: Path) -> pl.DataFrame:
    """The file as a frame; CSV cells stay strings so each bad cell can be named by line."""
    if not path.is_file():
        raise SimscopeError(f"{path}: no such file; give a CSV or parquet file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pl.read_parquet(path)
        elif suffix in (".csv", ".tsv", ".txt"):
            df = pl.read_csv(path, infer_schema=False, separator="\t" if suffix == ".tsv" else ",")
        else:
            raise SimscopeError(
                f"{path}: unknown file type {suffix!r}; expected .csv, .tsv or .parquet"
            )
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError) as e:
        raise SimscopeError(f"{path}: unreadable table ({e})") from None
    if df.height == 0:
        raise SimscopeError(f"{path}: no rows; expected at least one model")
    return df.with_row_index("_row")


def _where(path: Path, row: int) -> str:
    if path.suffix.lower() in (".parquet", ".pq"):
        return f"{path}: row {row + 1}"
    return f"{path}:{row + 2}"


def _position(path: Path, row: int) -> str:
    """``line N`` (CSV, header = line 1) or ``row N`` (parquet) of data row ``row``."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return f"row {row + 1}"
    return f"line {row + 2}"


def _as_float(raw: pl.DataFrame, column: str) -> pl.Series:
    """``column`` as Float64; empty strings are missing."""
    s = raw.get_column(column)
    if s.dtype == pl.String:
        s = s.str.strip_chars().replace("", None)
    return s.cast(pl.Float64, strict=False)


def _first_bad(
    raw: pl.DataFrame, column: str, *, required: bool = False
) -> tuple[int, object] | None:
    """(row, value) of the first cell of ``column`` that is not a finite number (an infinite
    or NaN score would make every prediction and P(best) meaningless). Empty cells are
    missing values unless ``required`` (then they are bad too, reported as ``''``)."""
    values = _as_float(raw, column)
    original = raw.get_column(column)
    if original.dtype == pl.String:
        original = original.str.strip_chars().replace("", None)
    bad = (values.is_null() & original.is_not_null()) | values.is_infinite() | values.is_nan()
    if required:
        bad = bad | original.is_null()
    if not bad.any():
        return None
    i = int(bad.arg_true()[0])
    found = original[i]
    return int(raw.get_column("_row")[i]), "" if found is None else found


def _check_models(
    raw: pl.DataFrame, path: Path, table: str, model_column: str, option: str | None
) -> None:
    if model_column not in raw.columns:
        fix = f"rename it, or name it with {option}" if option else "rename it to 'model'"
        raise SimscopeError(
            f"{path}: {table}: no model column {model_column!r}; expected a column with the "
            f"model ids, found columns {[c for c in raw.columns if c != '_row']}; {fix}"
        )
    models = raw.get_column(model_column)
    empty = models.is_null() | (models.cast(pl.String).str.strip_chars() == "")
    if empty.any():
        row = int(raw.get_column("_row")[int(empty.arg_true()[0])])
        raise SimscopeError(
            f"{_where(path, row)}: {table}: field {model_column!r}: expected a model id, found "
            "an empty cell; fill it or delete the row"
        )


def _found(value: object) -> str:
    return "an empty cell" if value == "" else repr(value)


def _long(
    raw: pl.DataFrame,
    path: Path,
    table: str,
    key: str,
    model_column: str,
    fix: str | None,
    *,
    required: bool = False,
) -> pl.DataFrame:
    _check_models(raw, path, table, model_column, fix)
    bad = _first_bad(raw, "score", required=required)
    if bad is not None:
        missing = required and (bad[1] == "" or str(bad[1]).strip().lower() == "nan")
        untried = " (a model not measured yet is a candidate: leave its row out)" if missing else ""
        raise SimscopeError(
            f"{_where(path, bad[0])}: {table}: field 'score': expected a finite number, found "
            f"{_found(bad[1])}; fix the cell or delete the row{untried}"
        )
    out = raw.select(
        "_row",
        model=pl.col(model_column).cast(pl.String).str.strip_chars(),
        **{key: pl.col(key).cast(pl.String)},
        score=_as_float(raw, "score"),
    )
    return out.filter(pl.col("score").is_not_null())


def _wide_to_long(
    raw: pl.DataFrame,
    path: Path,
    table: str,
    key: str,
    model_column: str,
    fix: str | None,
    *,
    required: bool = False,
) -> pl.DataFrame:
    _check_models(raw, path, table, model_column, fix)
    score_columns: list[str] = []
    skipped: list[str] = []
    for column in raw.columns:
        if column in ("_row", model_column) or column in LEADERBOARD_BOOKKEEPING:
            continue
        values = _as_float(raw, column)
        if values.is_null().all():
            skipped.append(column)
            continue
        bad = _first_bad(raw, column, required=required)
        if bad is not None:
            missing = bad[1] == "" or str(bad[1]).strip().lower() == "nan"
            if required and missing:
                fix_cell = (
                    "fill the cell, or delete the row (a model not measured yet is a "
                    "candidate), or give the long layout (model,metric,score) without that score"
                )
            elif required:
                fix_cell = "fix the cell or delete the row"
            else:
                fix_cell = "fix the cell, leave it empty for a missing score, or delete the column"
            raise SimscopeError(
                f"{_where(path, bad[0])}: {table}: field {column!r}: expected a finite number "
                f"(the column holds scores), found {_found(bad[1])}; {fix_cell}"
            )
        score_columns.append(column)
    if skipped:
        logger.info("%s: skipped non-numeric column(s) %s", path, skipped)
    if not score_columns:
        raise SimscopeError(
            f"{path}: {table}: no numeric score column; expected the long layout (columns "
            f"model, {key}, score) or one numeric column per {key}, found {raw.columns[1:]}"
        )
    parts = [
        raw.select(
            "_row",
            model=pl.col(model_column).cast(pl.String).str.strip_chars(),
            **{key: pl.lit(column)},
            score=_as_float(raw, column),
        )
        for column in score_columns
    ]
    return pl.concat(parts).filter(pl.col("score").is_not_null())


def _average_marked_duplicates(
    raw: pl.DataFrame, path: Path, model_column: str = "model", *, level: int = logging.INFO
) -> pl.DataFrame:
    """Average the rows a leaderboard marks as repeated submissions of one model."""
    if _MARK_COLUMN not in raw.columns or model_column not in raw.columns:
        return raw
    is_marked = pl.col(_MARK_COLUMN).cast(pl.String).str.strip_chars().fill_null("") == "yes"
    marked = raw.filter(is_marked)
    if marked.height == 0:
        return raw
    numeric = [
        c
        for c in raw.columns
        if c not in ("_row", model_column, _MARK_COLUMN) and not _as_float(raw, c).is_null().all()
    ]
    marked = marked.with_columns(_as_float(marked, c).alias(c) for c in numeric)
    averaged = marked.group_by(model_column, maintain_order=True).agg(
        pl.col("_row").min(), *[pl.col(c).mean() for c in numeric]
    )
    logger.log(
        level,
        "%s: averaged repeated submissions of %s",
        path,
        averaged.get_column(model_column).to_list(),
    )
    rest = raw.filter(~is_marked)
    rest = rest.with_columns(_as_float(rest, c).alias(c) for c in numeric)
    return pl.concat([rest.select(averaged.columns), averaged]).sort("_row")


def _resolve_duplicates(
    long: pl.DataFrame, path: Path, key: str, policy: Duplicates, option: str, raw: pl.DataFrame
) -> pl.DataFrame:
    if policy not in DUPLICATE_POLICIES:
        raise SimscopeError(f"{option} {policy!r}: expected one of {', '.join(DUPLICATE_POLICIES)}")
    counts = long.group_by("model", key).len().filter(pl.col("len") > 1)
    if counts.height == 0:
        return long
    if policy == "error":
        first = long.join(counts.select("model", key), on=["model", key]).sort("_row")
        model, name = first.get_column("model")[0], first.get_column(key)[0]
        rows = first.filter((pl.col("model") == model) & (pl.col(key) == name))
        parquet = path.suffix.lower() in (".parquet", ".pq")
        lines = [str(int(r) + (1 if parquet else 2)) for r in rows.get_column("_row")]
        differ = _differing_columns(raw, rows.get_column("_row").to_list())
        hint = (
            f"; the rows differ in {differ}: keep one with --rm-where COLUMN=VALUE"
            if differ and key == "metric"
            else ""
        )
        raise SimscopeError(
            f"{path}: duplicate model {model!r} ({key} {name!r}) at "
            f"{'rows' if parquet else 'lines'} {', '.join(lines)}: expected one score per "
            f"model{hint}, or delete rows, or combine them with {option} mean|max|first"
        )
    logger.info(
        "%s: combined %d repeated (model, %s) scores by %s", path, counts.height, key, policy
    )
    agg = {
        "mean": pl.col("score").mean(),
        "max": pl.col("score").max(),
        "first": pl.col("score").sort_by("_row").first(),
    }[policy]
    return long.group_by("model", key, maintain_order=True).agg(pl.col("_row").min(), agg)


def _differing_columns(raw: pl.DataFrame, rows: list[int]) -> list[str]:
    sub = raw.filter(pl.col("_row").is_in(rows))
    return [
        c
        for c in raw.columns
        if c != "_row" and _as_float(raw, c).is_null().all() and sub.get_column(c).n_unique() > 1
    ]


# ---- candidates -----------------------------------------------------------------------------

CANDIDATE_COLUMNS: Final = ("family", "cost", PARAMS_BENCHMARK, TOKENS_BENCHMARK)
"""Optional columns of a candidates file besides the model ids."""


@dataclass(frozen=True)
class Candidates:
    """The models a user asks to rank, with what the file says about them."""

    models: tuple[str, ...]
    families: dict[str, str] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    params_b: dict[str, float] = field(default_factory=dict)
    tokens_t: dict[str, float] = field(default_factory=dict)


def read_candidates(path: str | Path, *, model_column: str = "model") -> Candidates:
    """Candidates from a text file (one model id per line; ``#`` starts a comment) or a
    CSV/parquet table with a ``model_column`` and optional ``family``, ``cost``, ``params_B``
    and ``pretraining_tokens_T`` columns."""
    path = Path(path)
    if path.suffix.lower() in (".txt", ".list", ""):
        if not path.is_file():
            raise SimscopeError(f"{path}: no such file; give a text file with one model per line")
        models: list[str] = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            name = line.split("#", 1)[0].strip()
            if not name:
                continue
            if name in models:
                raise SimscopeError(
                    f"{path}:{lineno}: candidates: {name!r} is listed twice; keep one line"
                )
            models.append(name)
        if not models:
            raise SimscopeError(f"{path}: candidates: no model ids; expected one per line")
        return Candidates(tuple(models))
    raw = _read_raw(path)
    _check_models(raw, path, "candidates", model_column, "--candidates-model-column")
    names = [str(m).strip() for m in raw.get_column(model_column).to_list()]
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise SimscopeError(
                f"{_where(path, i)}: candidates: field {model_column!r}: {name!r} is listed "
                f"twice (also at {_position(path, seen[name])}); keep one row"
            )
        seen[name] = i
    numbers: dict[str, dict[str, float]] = {}
    for column in ("cost", PARAMS_BENCHMARK, TOKENS_BENCHMARK):
        if column not in raw.columns:
            continue
        bad = _first_bad(raw, column)
        if bad is not None:
            raise SimscopeError(
                f"{_where(path, bad[0])}: candidates: field {column!r}: expected a finite "
                f"number, found {_found(bad[1])}; fix the cell or leave it empty"
            )
        values = _as_float(raw, column).to_list()
        negative = [i for i, v in enumerate(values) if v is not None and v < 0]
        if negative:
            raise SimscopeError(
                f"{_where(path, negative[0])}: candidates: field {column!r}: expected a number "
                f">= 0, found {values[negative[0]]}; fix the cell"
            )
        numbers[column] = {n: float(v) for n, v in zip(names, values, strict=True) if v is not None}
    families: dict[str, str] = {}
    if "family" in raw.columns:
        for name, family in zip(names, raw.get_column("family").to_list(), strict=True):
            if family is not None and str(family).strip():
                families[name] = str(family).strip()
    return Candidates(
        tuple(names),
        families,
        numbers.get("cost", {}),
        numbers.get(PARAMS_BENCHMARK, {}),
        numbers.get(TOKENS_BENCHMARK, {}),
    )
