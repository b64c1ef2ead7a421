"""The one typed configuration: TOML in, frozen dataclasses out, every value checked.

Each stage owns the dataclass of its section (``LexicalConfig`` in ``simscope.lexical``, ...);
this module only reads TOML, maps tables onto those dataclasses by their annotations, and
reports a bad key with its dotted name, the expected type or range and the value found.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

from simscope.errors import SimscopeError

T = TypeVar("T")

SEED_MAX: Final = 2**32 - 1
"""Seeds are 32-bit: every library a seed reaches (numpy, torch, scikit-learn, datasketch)
takes them, and a seed outside is refused instead of crashing one of them."""


def check_seed(value: int, key: str = "seed") -> None:
    """Refuse a seed outside ``[0, SEED_MAX]`` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise SimscopeError(f"{key}: expected an integer in [0, {SEED_MAX}], found {value!r}")


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
