"""What a long run shows by default: one progress line per stage on stderr, with counts and
an estimate of the time left, and nothing else (the stages' own bars stay off; their log
lines appear under ``--verbose``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

BAR_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}]{postfix}"


def stage(
    items: Iterable[T], desc: str, *, unit: str, enabled: bool, name_of: object = None
) -> Iterator[T]:
    """Iterate ``items`` under one progress line ``desc: i/n unit [elapsed<left] item``.

    The line names the item being worked on (``str(item)``, or ``name_of(item)`` when given)
    and stays on screen when the stage ends.
    """
    total = len(items) if isinstance(items, Sized) else None
    with tqdm(
        total=total, desc=desc, unit=unit, bar_format=BAR_FORMAT, disable=not enabled, leave=True
    ) as bar:
        for item in items:
            label = name_of(item) if callable(name_of) else str(item)
            bar.set_postfix_str(str(label), refresh=True)
            yield item
            bar.update(1)
        bar.set_postfix_str("done", refresh=True)
