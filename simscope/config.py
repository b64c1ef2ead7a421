"""The one typed configuration: TOML in, frozen dataclasses out, every value checked.

This module owns the run config (``RunConfig`` and its own sections: preferences, candidates,
stages, select) and how TOML is read: tables are mapped onto the dataclasses by their
annotations, and a bad key is reported with its dotted name (the TOML key), the expected
type or range and the value found. Each stage owns the dataclass of its own section
(``LexicalConfig`` in ``simscope.lexical``, ...), with one default per knob.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from simscope.checks import check_seed
from simscope.engine.base import EngineConfig
from simscope.errors import SimscopeError
from simscope.lexical.index import LexicalConfig
from simscope.probe.generate import GenerationConfig
from simscope.probe.likelihood import LikelihoodConfig
from simscope.probe.transfer import TransferConfig
from simscope.records import SLICES
from simscope.select.core import DEFAULT_N_BOOT as SELECT_N_BOOT
from simscope.select.cost import CostConfig
from simscope.semantic.config import SemanticConfig
from simscope.stats import DEFAULT_N_BOOT

T = TypeVar("T")


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file; a syntax error names the file and the position."""
    path = Path(path)
    if not path.is_file():
        raise SimscopeError(f"{path}: no such config file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise SimscopeError(f"{path}: invalid TOML ({e})") from None
    except UnicodeDecodeError as e:
        raise SimscopeError(f"{path}: not UTF-8 text ({e})") from None


def from_mapping(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types against its fields.

    ``where`` is the dotted prefix used in messages (``"config.toml: lexical"``).
    """
    if not isinstance(data, Mapping):
        raise SimscopeError(f"{where}: expected a table, found {data!r}")
    fields = {
        f.name: f
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.metadata.get("toml", True)  # fields set by the loader, not by the user
    }
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SimscopeError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, _key(where, name))
    missing = [
        f.name
        for f in fields.values()
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SimscopeError(f"{where}: missing required key(s) {', '.join(map(repr, missing))}")
    try:
        return cls(**kwargs)
    except SimscopeError as e:
        raise SimscopeError(_located(where, str(e))) from None


def _key(where: str, name: str) -> str:
    """``"f.toml"`` + ``lexical`` -> ``"f.toml: lexical"``; then ``"f.toml: lexical.seed"``."""
    return f"{where}.{name}" if ": " in where else f"{where}: {name}"


def _located(where: str, message: str) -> str:
    """A section's own check, placed under its key: ``"f.toml: candidates[1].n_docs: ..."``.

    A check names its key relative to its section (``n_docs: ...``) or with the section's
    name first, as its TOML key (``generation.n_docs: ...``); either way the file and the full
    key path come first, once.
    """
    file, _, section = where.partition(": ")
    if not section:
        return f"{file}: {message}"
    parent, _, leaf = section.rpartition(".")
    if message.startswith((f"{leaf}.", f"{leaf}:")):  # the check names its own section
        return f"{file}: {parent + '.' if parent else ''}{message}"
    return f"{file}: {section}.{message}"


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except SimscopeError as e:
                errors.append(str(e))
        raise SimscopeError(errors[0] if len(errors) == 1 else f"{where}: unexpected {value!r}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_mapping(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise SimscopeError(f"{where}: expected a list, found {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is list:
        if not isinstance(value, list):
            raise SimscopeError(f"{where}: expected a list, found {value!r}")
        return [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is typing.Literal:
        if value not in args:
            raise SimscopeError(f"{where}: expected one of {list(args)}, found {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SimscopeError(f"{where}: expected true or false, found {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SimscopeError(f"{where}: expected an integer, found {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SimscopeError(f"{where}: expected a number, found {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SimscopeError(f"{where}: expected a string, found {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str):
            raise SimscopeError(f"{where}: expected a path string, found {value!r}")
        return Path(value)
    raise TypeError(f"{where}: unsupported config type {tp!r}")  # a bug, not a user mistake


# ---- the run config ---------------------------------------------------------------------


@dataclass(frozen=True)
class PreferencesSection:
    """Where the preference data is and how to read it."""

    path: Path
    schema: Literal["auto", "pairs", "hh", "trl"] = "auto"
    skip_bad: bool = False
    limit: int | None = None


@dataclass(frozen=True)
class CandidateSection:
    """One candidate base model: a model to probe, a corpus made elsewhere, or both.

    ``model`` (a local directory or a model id in the local Hugging Face cache) is sampled
    for a probe corpus unless ``corpus`` is given, and scored for likelihood. ``corpus`` is
    imported (JSONL/JSON/CSV/Parquet with ``text_field``, .txt, a directory, or a ProbeCorpus).
    """

    name: str
    model: str | None = None
    corpus: Path | None = None
    text_field: str = "text"
    n_docs: int | None = None
    trust_remote_code: bool = False
    """Run the model repository's own code (off: only architectures transformers ships)."""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise SimscopeError(f"name: expected a non-empty candidate name, found {self.name!r}")
        if self.n_docs is not None and self.n_docs < 1:
            raise SimscopeError(f"n_docs: expected >= 1 (or leave it out), found {self.n_docs}")


@dataclass(frozen=True)
class SelectSection:
    """Inputs of the select stage; it runs when ``rm_results`` or ``prior`` is given.

    ``prior`` is a bundled prior's name or a CSV of published results (``prior_metric`` the
    metric of it to use); ``suggest`` names that many candidates to measure next; ``budget``
    and ``[select.cost]`` (see ``simscope.select.cost``) or ``costs`` (a CSV model,cost) price
    the candidates.
    """

    rm_results: Path | None = None
    target: str | None = None
    benchmarks: str | None = None
    model_map: Path | None = None
    coverage: float = 0.9
    n_boot: int = SELECT_N_BOOT
    """P(best) refits: the same default as ``simscope select --n-boot``."""
    prior: str | None = None
    prior_metric: str | None = None
    suggest: int = 0
    budget: float | None = None
    costs: Path | None = None
    cost: CostConfig = field(default_factory=CostConfig)

    def __post_init__(self) -> None:
        if not 0.0 < self.coverage < 1.0:
            raise SimscopeError(f"select.coverage: expected in (0, 1), found {self.coverage}")
        if self.n_boot < 1:
            raise SimscopeError(f"select.n_boot: expected >= 1, found {self.n_boot}")
        if self.suggest < 0:
            raise SimscopeError(f"select.suggest: expected >= 0, found {self.suggest}")
        if self.budget is not None and not self.budget > 0:
            raise SimscopeError(f"select.budget: expected a number > 0, found {self.budget}")


@dataclass(frozen=True)
class StagesSection:
    """Which scorers run besides the lexical one, which always does (all by default)."""

    semantic: bool = True
    likelihood: bool = True
    topics: bool = True
    transfer: bool = True
    """The transfer probe (a reward head on each frozen model); needs candidates' models."""


@dataclass(frozen=True)
class RunConfig:
    """The whole pipeline's configuration; ``seed`` reaches every random step.

    ``execution`` (an ``[execution]`` table) builds the corpora's indexes on an engine
    (``kind = "local"`` out of core in this process, ``"ray"`` on a Ray cluster) before the
    profile loads them; without it the stages build them in memory. The indexes, and so the
    Profile, are the same either way.
    """

    preferences: PreferencesSection
    candidates: tuple[CandidateSection, ...]
    seed: int = 0
    out_dir: Path = Path("simscope-out")
    indexes_dir: Path = Path("indexes")
    n_boot: int = DEFAULT_N_BOOT
    slices: tuple[str, ...] = SLICES
    stages: StagesSection = field(default_factory=StagesSection)
    lexical: LexicalConfig = field(default_factory=LexicalConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    select: SelectSection = field(default_factory=SelectSection)
    execution: EngineConfig | None = None
    config_path: Path | None = field(default=None, metadata={"toml": False})
    """The file this config was read from (set by :func:`load_run_config`, not a TOML key)."""

    def __post_init__(self) -> None:
        if not self.candidates:
            raise SimscopeError(
                "candidates: expected at least one [[candidates]] table, found none"
            )
        names = [c.name for c in self.candidates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SimscopeError(f"candidates: each name once; found {dupes} more than once")
        for c in self.candidates:
            if c.model is None and c.corpus is None:
                raise SimscopeError(
                    f"candidates: {c.name!r} needs a model to probe or a corpus to import; "
                    "found neither"
                )
        bad = [s for s in self.slices if s not in SLICES]
        if bad or not self.slices:
            raise SimscopeError(
                f"slices: expected a non-empty subset of {list(SLICES)}, found {list(self.slices)}"
            )
        if self.n_boot < 0:
            raise SimscopeError(f"n_boot: expected >= 0, found {self.n_boot}")
        check_seed(self.seed)
        if (self.select.rm_results is not None or self.select.prior) and not self.select.target:
            raise SimscopeError(
                "select.target: expected the RM results metric to predict (e.g. 'accuracy'), "
                "found none"
            )


def load_run_config(path: Path) -> RunConfig:
    """Read and validate a run config; relative paths are taken from the config's folder."""
    path = Path(path)
    data = load_toml(path)
    for section in ("lexical", "generation"):
        table = data.get(section)
        if isinstance(table, Mapping) and "seed" in table:
            raise SimscopeError(
                f"{path}: {section}.seed: a run has one seed, the top-level `seed`, that reaches "
                f"every random step; found {section}.seed = {table['seed']!r}: remove it and set "
                f"seed = {table['seed']!r} at the top"
            )
    cfg = from_mapping(RunConfig, data, f"{path}")
    base = path.parent

    def resolve(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    def resolve_model(m: str | None) -> str | None:
        # a relative path that exists beside the config is a directory; else a hub id
        if m is None or Path(m).is_absolute() or not (base / m).exists():
            return m
        return str(base / m)

    return replace(
        cfg,
        config_path=path,
        preferences=replace(cfg.preferences, path=resolve(cfg.preferences.path) or Path()),
        candidates=tuple(
            replace(c, corpus=resolve(c.corpus), model=resolve_model(c.model))
            for c in cfg.candidates
        ),
        out_dir=resolve(cfg.out_dir) or cfg.out_dir,
        indexes_dir=resolve(cfg.indexes_dir) or cfg.indexes_dir,
        select=replace(
            cfg.select,
            rm_results=resolve(cfg.select.rm_results),
            model_map=resolve(cfg.select.model_map),
            costs=resolve(cfg.select.costs),
            prior=(
                str(base / cfg.select.prior)
                if cfg.select.prior and (base / cfg.select.prior).exists()
                else cfg.select.prior
            ),
            benchmarks=(
                str(base / cfg.select.benchmarks)
                if cfg.select.benchmarks and (base / cfg.select.benchmarks).exists()
                else cfg.select.benchmarks
            ),
        ),
    )
