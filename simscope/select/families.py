"""Model families: which models share a base or a series, so that they are held out and
resampled together. Knows nothing of scores.

A ``family`` column (in RM results, a candidates file or a prior table) is used as given.
Otherwise a family is inferred from the model id: the name after the last ``/`` (the
organisation is ignored, so a fine-tune published elsewhere stays with its base), lower-cased,
split on ``-``, without the tokens that tell sizes, context lengths, versions, dates or the
tuning stage apart (``7B``, ``1_6b``, ``8x7b``, ``4k``, ``v0.3``, ``2407``, ``Instruct``,
``Chat``, ``it``, ``SFT``, ``DPO``, ``mini``, ...). ``Qwen/Qwen2.5-0.5B-Instruct`` and
``Qwen/Qwen2.5-7B`` are family ``qwen2.5``; ``gemma-2-9b-it`` is ``gemma-2`` (a digit after
the stem is a new series, not a size). A stem that extends another stem in the same set of
models by a word (``llama-3.1-tulu-3`` extends ``llama-3.1``) is a fine-tune of it and joins
that family (the shortest such stem).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

_SIZE: Final = re.compile(r"^(\d+x)?\d+([._]\d+)?[bmkt]$")
_CONTEXT: Final = re.compile(r"^\d+k$")
_VERSION: Final = re.compile(r"^v\d+(\.\d+)*$")
_DATE: Final = re.compile(r"^\d{4}$")
VARIANT_WORDS: Final = frozenset(
    {
        "instruct",
        "chat",
        "it",
        "base",
        "hf",
        "sft",
        "dpo",
        "rl",
        "ppo",
        "orpo",
        "kto",
        "grpo",
        "rlhf",
        "preview",
        "mini",
        "small",
        "medium",
        "large",
        "tiny",
        "nano",
    }
)
"""Name tokens that mark a tuning stage or a size class, not a family."""


def name_stem(model: str) -> str:
    """The family stem of one model id (see the module doc); never empty."""
    name = model.rsplit("/", 1)[-1].strip().lower()
    kept = [
        token
        for token in name.split("-")
        if token
        and not _SIZE.match(token)
        and not _CONTEXT.match(token)
        and not _VERSION.match(token)
        and not _DATE.match(token)
        and token not in VARIANT_WORDS
    ]
    return "-".join(kept) or name


def infer_families(models: Iterable[str]) -> dict[str, str]:
    """Family of each model, inferred from its id alone (see the module doc)."""
    models = list(dict.fromkeys(models))
    stems = {m: name_stem(m) for m in models}
    known = set(stems.values())

    def root(stem: str) -> str:
        parents = [
            other
            for other in known
            if len(other) < len(stem)
            and stem.startswith(other + "-")
            and stem[len(other) + 1 : len(other) + 2].isalpha()
        ]
        return min(parents, key=len) if parents else stem

    return {m: root(stems[m]) for m in models}


def assign_families(
    models: Iterable[str], given: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Families of ``models``: the ``given`` ones as they are, the others inferred."""
    models = list(dict.fromkeys(models))
    given = {m: f for m, f in (given or {}).items() if f}
    inferred = infer_families(models)
    return {m: given.get(m, inferred[m]) for m in models}


def members(families: Mapping[str, str]) -> dict[str, list[str]]:
    """Family -> its models, both sorted: the listing shown to the user."""
    out: dict[str, list[str]] = {}
    for model, family in families.items():
        out.setdefault(family, []).append(model)
    return {f: sorted(out[f]) for f in sorted(out)}


def group_codes(models: Iterable[str], families: Mapping[str, str]) -> list[int]:
    """An integer per model, equal for the models of one family (in order of appearance)."""
    codes: dict[str, int] = {}
    return [codes.setdefault(families.get(m, m), len(codes)) for m in models]
