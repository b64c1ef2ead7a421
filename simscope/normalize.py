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

import itertools
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, cast

import numpy as np

_U64: Final = np.uint64
_POLY_BASE: Final = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2^64
_POLY_BASE_INV: Final = pow(_POLY_BASE, -1, 1 << 64)
_SEPARATOR: Final = "\x00"  # never a word character, and (nearly) never in a text


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
    size = max(2 * n + 1, 1 << 20)  # room to grow: batches differ a little in length
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


_FORMS: Final = ("NFC", "NFD", "NFKC", "NFKD", "")
_ODD: Final = np.uint64(0x7FFFFFFF)  # not a code point: "look this one up the slow way"
_WORD_BIT: Final = np.uint64(1 << 63)
_LOWER_WORD: dict[str, np.ndarray] = {}


def _lower_word_table(categories: str) -> np.ndarray:
    """Per Basic Multilingual Plane code point: its ``str.lower`` (uint64, ready for the word
    hashes) with the word-character flag of that lower case in bit 63; ``_ODD`` where no
    table entry can stand for ``str.lower`` (a lower case of several code points such as
    U+0130's, one that depends on the context: capital sigma) and at the surrogates, which
    stand for astral code points in UTF-16."""
    table = _LOWER_WORD.get(categories)
    if table is None:
        word = _bmp_table(categories)
        table = np.full(0x10000, _ODD, dtype=_U64)
        for cp in range(0x10000):
            if 0xD800 <= cp < 0xE000 or cp == 0x03A3:
                continue
            low = chr(cp).lower()
            if len(low) == 1 and ord(low) < 0x10000:
                table[cp] = ord(low) | (int(word[ord(low)]) << 63)
        _LOWER_WORD[categories] = table
    return table


_CHUNK_CHARS: Final = 1 << 18
"""Characters tokenized at once: the buffers (8 bytes per character) then stay in the CPU's
caches; 2,000 texts at a time ran half as fast here."""


def tokenize(texts: list[str], norm: Normalization = Normalization()) -> TokenBatch:
    """Normalize ``texts`` and hash their words, all texts at once.

    The same word hashes as :func:`normalize_text` on each text, split on its own, with less
    work per text: an ASCII text is left as it is by every normalization form (and
    ``unicodedata.normalize`` returns an already normalized text as it is), and lower case and
    word flags are one table lookup over the whole batch (UTF-16). Only the rare texts holding
    a code point the table cannot stand for (astral ones such as emoji, a lower case of
    several code points such as U+0130's, one that depends on the context: capital sigma) go
    through ``str.lower`` and are split apart, then put back in their place.
    """
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    if lengths.sum() <= _CHUNK_CHARS:
        return _tokenize_chunk(texts, norm)
    # cut before the text that crosses each multiple of _CHUNK_CHARS (at least one text each)
    cuts = np.unique(
        np.searchsorted(
            np.cumsum(lengths),
            np.arange(1, 1 + lengths.sum() // _CHUNK_CHARS) * _CHUNK_CHARS,
            side="right",
        )
    )
    bounds = [0, *(int(c) for c in cuts if 0 < c < len(texts)), len(texts)]
    parts = [_tokenize_chunk(texts[a:b], norm) for a, b in itertools.pairwise(bounds)]
    offsets = [parts[0].offsets]
    for part in parts[1:]:
        offsets.append(part.offsets[1:] + offsets[-1][-1])
    return TokenBatch(np.concatenate([p.hashes for p in parts]), np.concatenate(offsets))


def _tokenize_chunk(texts: list[str], norm: Normalization) -> TokenBatch:
    if not texts:
        return TokenBatch(np.empty(0, _U64), np.zeros(1, np.int64))
    form = norm.unicode_form
    if form not in _FORMS:
        raise ValueError(f"unknown Unicode normalization form {form!r}")
    normalized = [
        t if t.isascii() or not form else unicodedata.normalize(form, t)  # type: ignore[arg-type]
        for t in texts
    ]
    joined = _SEPARATOR.join(normalized) + _SEPARATOR
    if joined.isascii():
        raw = joined.encode("ascii")
        if norm.lowercase:
            raw = raw.lower()
        flags = _bmp_table(norm.word_categories)[:128].tobytes()
        word = np.frombuffer(raw.translate(flags + bytes(128)), dtype=bool)
        return _hash_words(np.frombuffer(raw, dtype=np.uint8), word, _ends(normalized), norm)
    if not norm.lowercase:
        return _tokenize_slowly(normalized, norm)
    table = _lower_word_table(norm.word_categories)
    units = np.frombuffer(joined.encode("utf-16-le", "surrogatepass"), dtype=np.uint16)
    ends = np.flatnonzero(units == 0)
    if ends.size != len(texts):  # a text holds the separator itself
        return _tokenize_slowly(normalized, norm)
    looked_up = table[units]
    odd = np.flatnonzero(looked_up == _ODD)
    if odd.size == 0:
        word = looked_up >= _WORD_BIT
        np.bitwise_and(looked_up, ~_WORD_BIT, out=looked_up)
        return _hash_words(looked_up, word, ends, norm)
    slow = np.unique(np.searchsorted(ends, odd, side="left"))
    fast = np.setdiff1d(np.arange(len(texts)), slow)
    slow_part = _tokenize_slowly([normalized[i] for i in slow.tolist()], norm)
    fast_part = _tokenize_chunk([normalized[i] for i in fast.tolist()], norm)
    return _interleave(len(texts), ((fast, fast_part), (slow, slow_part)))


def _ends(texts: list[str]) -> np.ndarray:
    """Where each text's separator lies in the joined buffer (one code unit per character)."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    return np.cumsum(lengths + 1) - 1


def _tokenize_slowly(normalized: list[str], norm: Normalization) -> TokenBatch:
    """:func:`tokenize` of already normalized texts, lowering each with ``str.lower``."""
    if not normalized:
        return TokenBatch(np.empty(0, _U64), np.zeros(1, np.int64))
    done = [t.lower() for t in normalized] if norm.lowercase else normalized
    cps = np.frombuffer((_SEPARATOR.join(done) + _SEPARATOR).encode("utf-32-le"), np.uint32)
    return _hash_words(cps, _is_word_char(cps, norm.word_categories), _ends(done), norm)


def _interleave(n: int, parts: Iterable[tuple[np.ndarray, TokenBatch]]) -> TokenBatch:
    """One TokenBatch of ``n`` texts from batches of some of them (their indices, in order)."""
    parts = list(parts)
    lengths = np.zeros(n, dtype=np.int64)
    for rows, batch in parts:
        lengths[rows] = batch.lengths()
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    hashes = np.empty(int(offsets[-1]), dtype=_U64)
    for rows, batch in parts:
        shift = np.repeat(offsets[rows] - batch.offsets[:-1], batch.lengths())
        hashes[shift + np.arange(batch.hashes.size)] = batch.hashes
    return TokenBatch(hashes, offsets)


def _hash_words(
    cps: np.ndarray, word: np.ndarray, ends: np.ndarray, norm: Normalization
) -> TokenBatch:
    """Word hashes of a buffer of code points, its word flags and its texts' separators."""
    # Each text is followed by one separator (never a word char), so words cannot cross texts
    # and the buffer ends outside a word: its changes alternate start, end, start, end, ...
    edges = np.flatnonzero(word[1:] != word[:-1]) + 1
    if word[0]:
        edges = np.concatenate(([0], edges))
    starts, stops = edges[0::2], edges[1::2]
    n = cps.size
    powers, inv_powers = _power_tables(n)
    with np.errstate(over="ignore"):
        prefix = np.empty(n + 1, dtype=_U64)
        prefix[0] = 0
        prefix[1:] = cps  # widen first (a no-op copy for uint64): mixed types multiply slowly
        np.multiply(prefix[1:], powers[:n], out=prefix[1:])
        np.cumsum(prefix[1:], out=prefix[1:])
        raw = (prefix[stops] - prefix[starts]) * inv_powers[starts]
        raw ^= (stops - starts).astype(_U64) * _U64(0xD6E8FEB86659FD93)
        raw ^= mix64(np.array([norm.hash_seed], dtype=_U64))[0]
    hashes = mix64(raw)
    text_starts = np.concatenate(([0], ends[:-1] + 1))
    offsets = np.searchsorted(starts, text_starts, side="left").astype(np.int64)
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
    """The n-gram hash at each start position ``pos`` of the flat word-hash array ``h``."""
    if pos.size == 0:
        return np.empty(0, dtype=_U64)
    # Over every start position at once with contiguous slices (faster than gathering
    # h[pos + k] n times), then keep the starts whose n words lie in one text.
    m = h.size - n + 1
    acc = np.zeros(m, dtype=_U64)
    with np.errstate(over="ignore"):
        for k in range(n):
            acc *= _U64(_MIX_MUL)
            acc += h[k : k + m]
    return mix64(acc[pos] ^ _U64(n))
