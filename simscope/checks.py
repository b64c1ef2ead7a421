"""Checks shared by every section of the configuration, whatever stage owns it."""

from __future__ import annotations

from typing import Final

from simscope.errors import SimscopeError

SEED_MAX: Final = 2**32 - 1
"""Seeds are 32-bit: every library a seed reaches (numpy, torch, scikit-learn, datasketch)
takes them, and a seed outside is refused instead of crashing one of them."""


def check_seed(value: int, key: str = "seed") -> None:
    """Refuse a seed outside ``[0, SEED_MAX]`` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise SimscopeError(f"{key}: expected an integer in [0, {SEED_MAX}], found {value!r}")
