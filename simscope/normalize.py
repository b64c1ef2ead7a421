"""Text normalization and word tokenization: the one place that decides what a "word" is.

Every lexical signal (shingles, n-grams, hashed features) sees texts through
:func:`tokenize`, and the settings (:class:`Normalization`) go into every index manifest, so a
corpus and the texts compared with it are always cut the same way.

A batch of texts is processed as arrays, not per word in Python: texts are normalized
(NFKC, then lower case), joined, and viewed as one array of code points; a word is a maximal
run of letters, digits and combining marks (Unicode categories L*, N*, M*), so whitespace and
punctuation only separate words. Each word becomes a 64-bit hash (a polynomial hash over its
code points from prefix sums, then a splitmix64 finalizer), which is stable across runs,
machines and library versions.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, cast

import numpy as np

_U64: Final = np.uint64
_POLY_BASE: Final = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2^64
_POLY_BASE_INV: Final = pow(_POLY_BASE, -1, 1 << 64)
_SEPARATOR: Final = "\n"


@dataclass(frozen=True, slots=True)
class Normalization:
    """How texts are normalized before tokenizing. Recorded in every lexical manifest."""

    unicode_form: str = "NFKC"
    lowercase: bool = True
    word_categories: str = "LNM"  # Unicode major categories that make up a word
    hash_seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TokenBatch:
    """Word hashes of a batch of texts: text ``i`` owns ``hashes[offsets[i]:offsets[i+1]]``."""

    hashes: np.ndarray  # uint64, one per word, in text order
    offsets: np.ndarray  # int64, len(texts) + 1

    @property
    def n_texts(self) -> int:
        return int(self.offsets.size - 1)

    def lengths(self) -> np.ndarray:
        """Number of words per text."""
        return np.diff(self.offsets)


def normalize_text(text: str, norm: Normalization = Normalization()) -> str:
    """The normalized form of one text (what :func:`tokenize` splits into words)."""
    form = cast(Literal["NFC", "NFD", "NFKC", "NFKD"], norm.unicode_form)
    out = unicodedata.normalize(form, text) if form else text
    return out.lower() if norm.lowercase else out


_BMP_WORD: dict[str, np.ndarray] = {}
_ASTRAL_CACHE: dict[tuple[str, int], bool] = {}


def _bmp_table(categories: str) -> np.ndarray:
    """Word-character flags of the 65,536 code points of the Basic Multilingual Plane."""
    table = _BMP_WORD.get(categories)
    if table is None:
        table = np.fromiter(
            (unicodedata.category(chr(cp))[0] in categories for cp in range(0x10000)),
            dtype=bool,
            count=0x10000,
        )
        _BMP_WORD[categories] = table
    return table


def _is_word_char(cps: np.ndarray, categories: str) -> np.ndarray:
    word = _bmp_table(categories)[np.minimum(cps, 0xFFFF)]
    astral = np.flatnonzero(cps > 0xFFFF)
    if astral.size:
        uniq, inverse = np.unique(cps[astral], return_inverse=True)
        flags = np.empty(uniq.size, dtype=bool)
        for i, cp in enumerate(uniq.tolist()):
            flag = _ASTRAL_CACHE.get((categories, cp))
            if flag is None:
                flag = unicodedata.category(chr(cp))[0] in categories
                _ASTRAL_CACHE[(categories, cp)] = flag
            flags[i] = flag
        word[astral] = flags[inverse]
    return word


_POWERS: list[np.ndarray] = []  # [B^i, B^-i] for i < len, grown on demand
_POWERS_CACHE_MAX = 1 << 24


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``B^i`` and ``B^-i`` modulo 2^64 for ``i <= n`` (cached up to 16M entries)."""
    if _POWERS and _POWERS[0].size > n:
        return _POWERS[0], _POWERS[1]
    size = max(n + 1, 1 << 20)
    tables = []
    with np.errstate(over="ignore"):
        for base in (_POLY_BASE, _POLY_BASE_INV):
            t = np.empty(size, dtype=_U64)
            t[0] = 1
            t[1:] = _U64(base)
            np.cumprod(t, out=t)
            tables.append(t)
    if size <= _POWERS_CACHE_MAX:
        _POWERS[:] = tables
    return tables[0], tables[1]


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijective avalanche mix of uint64 values."""
    x = x.astype(_U64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> _U64(30)
        x *= _U64(0xBF58476D1CE4E5B9)
        x ^= x >> _U64(27)
        x *= _U64(0x94D049BB133111EB)
        x ^= x >> _U64(31)
    return x


def tokenize(texts: list[str], norm: Normalization = Normalization()) -> TokenBatch:
    """Normalize ``texts`` and hash their words, all texts at once."""
    if not texts:
        return TokenBatch(np.empty(0, _U64), np.zeros(1, np.int64))
    normalized = [normalize_text(t, norm) for t in texts]
    lengths = np.fromiter((len(t) for t in normalized), dtype=np.int64, count=len(normalized))
    # Each text is followed by one separator (never a word char), so words cannot cross texts.
    text_starts = np.concatenate(([0], np.cumsum(lengths + 1)))
    joined = _SEPARATOR.join(normalized) + _SEPARATOR
    cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    word = _is_word_char(cps, norm.word_categories)
    edges = np.diff(word.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)

    n = cps.size
    powers, inv_powers = _power_tables(n)
    with np.errstate(over="ignore"):
        prefix = np.zeros(n + 1, dtype=_U64)
        np.cumsum(cps.astype(_U64) * powers[:n], out=prefix[1:])
        inv_at_start = inv_powers[starts]
        raw = (prefix[ends] - prefix[starts]) * inv_at_start
        raw ^= (ends - starts).astype(_U64) * _U64(0xD6E8FEB86659FD93)
        raw ^= mix64(np.array([norm.hash_seed], dtype=_U64))[0]
    hashes = mix64(raw)
    offsets = np.searchsorted(starts, text_starts[:-1], side="left").astype(np.int64)
    offsets = np.append(offsets, starts.size)
    return TokenBatch(hashes, offsets)


def ngram_hashes(batch: TokenBatch, n: int, *, short: str = "drop") -> TokenBatch:
    """Hashes of each text's word ``n``-grams (order-sensitive), as a new TokenBatch.

    ``short="drop"``: a text with fewer than ``n`` words has no n-grams.
    ``short="whole"``: such a text (with at least one word) gets one shingle made of all its
    words, so short texts still have a MinHash signature.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    h = batch.hashes
    lengths = batch.lengths()
    starts = batch.offsets[:-1]
    counts = np.maximum(lengths - n + 1, 0)
    total = int(counts.sum())
    # positions of n-gram starts: for text i, starts[i] + 0 .. counts[i]-1
    pos = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    pos += np.arange(total, dtype=np.int64)
    grams = _combine(h, pos, n)
    if short == "whole":
        short_texts = np.flatnonzero((lengths > 0) & (lengths < n))
        if short_texts.size:
            extra = np.zeros(short_texts.size, dtype=_U64)
            with np.errstate(over="ignore"):
                for k in range(n - 1):
                    inside = np.flatnonzero(k < lengths[short_texts])
                    extra[inside] = (
                        extra[inside] * _U64(_MIX_MUL) + h[starts[short_texts[inside]] + k]
                    )
            extra = mix64(extra ^ _U64(n))
            counts = counts.copy()
            counts[short_texts] = 1
            # splice one shingle per short text in text order
            order_pos = np.concatenate((pos, starts[short_texts]))
            values = np.concatenate((grams, extra))
            sort = np.argsort(order_pos, kind="stable")
            grams = values[sort]
    elif short != "drop":
        raise ValueError(f"short must be 'drop' or 'whole', got {short!r}")
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    return TokenBatch(grams, offsets)


_MIX_MUL: Final = 0xC2B2AE3D27D4EB4F


def _combine(h: np.ndarray, pos: np.ndarray, n: int) -> np.ndarray:
    acc = np.zeros(pos.size, dtype=_U64)
    with np.errstate(over="ignore"):
        for k in range(n):
            acc = acc * _U64(_MIX_MUL) + h[pos + k]
    return mix64(acc ^ _U64(n))
