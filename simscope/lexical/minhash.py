"""MinHash signatures of shingle-hash sets, and the LSH that finds near-duplicates among them.

Three signing engines take the same 64-bit shingle hashes (from ``simscope.normalize``):

- ``rensa`` (default): rensa's ``RMinHash`` over a flat hash buffer with row offsets, in Rust
  (its digests can only be read back as Python lists: rensa 0.5's digest matrix has no other
  way out, which costs more than the signing);
- ``oph``: one-permutation hashing with optimal densification (Li, Owen & Zhang
  2012; Shrivastava 2017), in numpy: each shingle hash is mixed once with the seed, its high
  bits pick one of ``num_perm`` bins and its low 32 bits are its value there; a bin keeps its
  smallest value; an empty bin takes the value of the first non-empty bin along its own fixed
  pseudo-random order of the bins (the same order in every text, so two texts agree in a
  densified bin exactly when they agree in the bin it copies). Cost: a few passes over the
  hashes, whatever ``num_perm``; the result is integer arithmetic only, the same on any CPU.
  Measured (``benchmarks/bench_lexical.py``): as fast as rensa with its lists on this CPU,
  with datasketch's Jaccard error (MAE 0.030), above rensa's (0.023), so not the default;
- ``datasketch``: datasketch's ``MinHash`` permutations, the reference implementation.

Their signatures are not comparable with each other, so the engine is part of every manifest
and an index signed by one engine refuses queries signed by the other. Candidates come from
datasketch's ``MinHashLSH`` (banding tuned to each threshold), rebuilt from the stored
signatures when an index is loaded, and are verified on the full signatures.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from simscope.errors import SimscopeError
from simscope.normalize import TokenBatch, mix64

ENGINES: Final = ("rensa", "oph", "datasketch")
OPH_VERSION: Final = 1
"""Bumped whenever ``oph`` signatures change, so that indexes signed before are refused."""


def engine_version(engine: str) -> str:
    """The version string of a signing engine (recorded in manifests)."""
    if engine == "oph":
        return f"simscope-oph-{OPH_VERSION}"
    if engine == "rensa":
        import rensa

        return f"rensa-algorithm-{rensa.RMinHash.ALGORITHM_VERSION}"
    if engine == "datasketch":
        import datasketch

        return f"datasketch-{datasketch.__version__}"
    raise SimscopeError(f"unknown MinHash engine {engine!r}; expected one of {', '.join(ENGINES)}")


def sign(shingles: TokenBatch, *, num_perm: int, seed: int, engine: str = "rensa") -> np.ndarray:
    """MinHash signatures, one row of ``num_perm`` uint32 per text of ``shingles``.

    A text without shingles gets the all-ones row (``2^32 - 1``), which matches nothing.
    """
    n = shingles.n_texts
    if n == 0:
        return np.empty((0, num_perm), dtype=np.uint32)
    if engine == "oph":
        # at most 4096 texts at a time: bounded per-bin arrays (smaller chunks were not faster)
        sig = np.empty((n, num_perm), dtype=np.uint32)
        for lo in range(0, n, _OPH_CHUNK_TEXTS):
            hi = min(lo + _OPH_CHUNK_TEXTS, n)
            o = shingles.offsets[lo : hi + 1]
            part = TokenBatch(shingles.hashes[o[0] : o[-1]], o - o[0])
            sig[lo:hi] = _sign_oph(part, num_perm, seed)
    elif engine == "rensa":
        import rensa

        matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            shingles.hashes, shingles.offsets.astype(np.uint64), num_perm=num_perm, seed=seed
        )
        rows = matrix.to_rows()
        sig = np.fromiter(
            itertools.chain.from_iterable(rows), dtype=np.uint32, count=n * num_perm
        ).reshape(n, num_perm)
    elif engine == "datasketch":
        sig = np.empty((n, num_perm), dtype=np.uint32)
        # The shingles are already hashes; datasketch's permutations expect 32-bit ones.
        hashes32 = shingles.hashes & np.uint64(0xFFFFFFFF)
        proto = MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity)
        for i in range(n):
            m = proto.copy()
            m.update_batch(hashes32[shingles.offsets[i] : shingles.offsets[i + 1]])
            sig[i] = m.hashvalues
    else:
        raise SimscopeError(
            f"unknown MinHash engine {engine!r}; expected one of {', '.join(ENGINES)}"
        )
    empty = shingles.lengths() == 0
    sig[empty] = np.iinfo(np.uint32).max
    return sig


def _identity(x: np.uint64) -> int:
    return int(x)


_U64 = np.uint64
_OPH_CHUNK_TEXTS: Final = 4096
_OPH_SEED_SALT: Final = 0x243F6A8885A308D3
_ORDER_SALT: Final = 0x13198A2E03707344


def _seed_key(seed: int, salt: int) -> np.uint64:
    return mix64(np.array([(seed ^ salt) & 0xFFFFFFFFFFFFFFFF], dtype=_U64))[0]


@functools.cache
def _bin_orders(num_perm: int, seed: int) -> np.ndarray:
    """Row ``i``: every bin, in the order an empty bin ``i`` looks for a value (a seeded
    pseudo-random permutation per bin, from sorting hashes: the same on every machine)."""
    cells = np.arange(num_perm * num_perm, dtype=_U64)
    with np.errstate(over="ignore"):
        keys = mix64(cells ^ _seed_key(seed, _ORDER_SALT)).reshape(num_perm, num_perm)
    order = np.argsort(keys, axis=1, kind="stable").astype(np.intp)
    order.flags.writeable = False
    return order


def _sign_oph(shingles: TokenBatch, num_perm: int, seed: int) -> np.ndarray:
    """One-permutation hashing with optimal densification (see the module docstring)."""
    n, k = shingles.n_texts, num_perm
    lengths = shingles.lengths()
    text = np.repeat(np.arange(n, dtype=np.int64), lengths)
    with np.errstate(over="ignore"):
        mixed = mix64(shingles.hashes ^ _seed_key(seed, _OPH_SEED_SALT))
        # high 32 bits -> bin in [0, k) by multiply-shift; low 32 bits -> value
        cell = text * k + ((mixed >> _U64(32)) * _U64(k) >> _U64(32)).astype(np.int64)
    sig = np.full(n * k, np.iinfo(np.uint32).max, dtype=np.uint32)
    np.minimum.at(sig, cell, mixed.astype(np.uint32))
    filled = np.zeros(n * k, dtype=bool)
    filled[cell] = True
    # Densify: each empty bin of a non-empty text copies the first filled bin along its
    # order, looked up one position at a time for the first three (most find one there),
    # then 2, 4, 8, ... at a time, so the loop runs at most log2(k) + 3 times.
    index = np.dtype(np.int32 if n * k < 2**31 else np.int64)
    empty: np.ndarray = np.flatnonzero(~filled & np.repeat(lengths > 0, k)).astype(index)
    bin_ = empty % np.array(k, dtype=index)
    base = empty - bin_
    order = _bin_orders(k, seed).astype(index)
    by_position = np.ascontiguousarray(order.T)  # row p: each bin's p-th bin to look at
    done_cells: list[np.ndarray] = []
    done_src: list[np.ndarray] = []
    pos, step = 0, 1
    while empty.size:
        if step == 1:
            donors = base + by_position[pos][bin_]
            hit = filled[donors]
            done_cells.append(empty[hit])
            done_src.append(donors[hit])
        else:
            window = order[bin_, pos : pos + step]  # the last one may be narrower
            many = (base[:, None] + window).ravel()
            found = np.flatnonzero(filled[many])  # row-major: each row's first comes first
            row = found // window.shape[1]
            first = np.ones(row.size, dtype=bool)
            np.not_equal(row[1:], row[:-1], out=first[1:])
            done_cells.append(empty[row[first]])
            done_src.append(many[found[first]])
            hit = np.zeros(empty.size, dtype=bool)
            hit[row] = True
        miss = ~hit
        empty, bin_, base = empty[miss], bin_[miss], base[miss]
        pos, step = pos + step, (1 if pos + step < 3 else step * 2)
        # every order holds every bin, and each of these texts has a filled one
        assert pos < k or not empty.size
    if done_cells:
        sig[np.concatenate(done_cells)] = sig[np.concatenate(done_src)]
    return sig.reshape(n, k)


def estimate_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Estimated Jaccard similarity between signature ``a`` (one row) and each row of ``b``."""
    return np.mean(np.atleast_2d(b) == a, axis=1)


@functools.cache
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) for ``threshold``, from datasketch's MinHashLSH optimizer (equal weights).

    Cached: the optimizer integrates numerically (~80k scipy ``quad`` calls, seconds).
    """
    bands, rows = _optimal_param(threshold, num_perm, 0.5, 0.5)
    return int(bands), int(rows)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One uint64 key per (row, band): a hash of the band's ``rows`` signature values."""
    sig = signatures.astype(np.uint64)
    keys = np.empty((sig.shape[0], bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for b in range(bands):
            acc = np.full(sig.shape[0], b + 1, dtype=np.uint64)
            for v in sig[:, b * rows : (b + 1) * rows].T:
                acc = acc * np.uint64(0x9E3779B97F4A7C15) + v
            keys[:, b] = mix64(acc)
    return keys


@dataclass
class NearDuplicateFinder:
    """LSH over a signature matrix, one band layout per Jaccard threshold.

    The banding is datasketch MinHashLSH's (same ``(b, r)`` from its optimizer, a candidate is
    any window sharing a whole band with the query) but runs as sorted-array joins in numpy:
    datasketch keeps a Python set per band bucket, and inserting 416k corpus windows took
    44 s here, against well under a second this way. A test checks the candidate sets
    against datasketch's on the same signatures.
    """

    signatures: np.ndarray
    thresholds: Sequence[float]

    def __post_init__(self) -> None:
        empty = (self.signatures == _EMPTY).all(axis=1)
        # Identical windows (boilerplate) are kept once, so candidate lists stay short.
        _, first = np.unique(self.signatures, axis=0, return_index=True)
        self._keep = np.sort(first[~empty[first]])
        # rows as int32 where they fit: a quarter less memory per (window, band)
        if self.signatures.shape[0] < 2**31:
            self._keep = self._keep.astype(np.int32)
        num_perm = self.signatures.shape[1]
        self._sorted: dict[float, list[tuple[np.ndarray, np.ndarray]]] = {}
        for t in self.thresholds:
            b, r = lsh_params(t, num_perm)
            keys = band_keys(self.signatures[self._keep], b, r)
            per_band = []
            for j in range(b):
                order = np.argsort(keys[:, j], kind="stable")
                per_band.append((keys[order, j], self._keep[order]))
            self._sorted[t] = per_band

    def candidates(self, queries: np.ndarray, threshold: float) -> list[set[int]]:
        """LSH candidates (row indices) of each query: rows sharing at least one band."""
        q_idx, c_idx = self._candidate_pairs(queries, threshold)
        out: list[set[int]] = [set() for _ in range(len(queries))]
        for q, c in zip(q_idx.tolist(), c_idx.tolist(), strict=True):
            out[q].add(c)
        return out

    def _candidate_pairs(
        self, queries: np.ndarray, threshold: float
    ) -> tuple[np.ndarray, np.ndarray]:
        b, r = lsh_params(threshold, queries.shape[1])
        qkeys = band_keys(queries, b, r)
        live = ~(queries == _EMPTY).all(axis=1)
        qs, cs = [], []
        for j, (sorted_keys, rows) in enumerate(self._sorted[threshold]):
            lo = np.searchsorted(sorted_keys, qkeys[:, j], side="left")
            hi = np.searchsorted(sorted_keys, qkeys[:, j], side="right")
            n = np.where(live, hi - lo, 0)
            if not n.any():
                continue
            q = np.repeat(np.arange(len(queries)), n)
            start = np.repeat(lo, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
            qs.append(q)
            cs.append(rows[start])
        if not qs:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        pairs = np.unique(np.stack((np.concatenate(qs), np.concatenate(cs))), axis=1)
        return pairs[0], pairs[1]

    def best_matches(self, queries: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """For each query row: the highest verified Jaccard estimate >= ``threshold`` among
        the LSH candidates (0 when none) and the matching row (-1 when none)."""
        best = np.zeros(len(queries))
        where = np.full(len(queries), -1, dtype=np.int64)
        q_idx, c_idx = self._candidate_pairs(queries, threshold)
        for lo in range(0, q_idx.size, 65536):  # bounded memory: pairs x num_perm bytes
            q, c = q_idx[lo : lo + 65536], c_idx[lo : lo + 65536]
            est = np.mean(queries[q] == self.signatures[c], axis=1)
            ok = est >= threshold
            q, c, est = q[ok], c[ok], est[ok]
            order = np.lexsort((-est, q))
            q, c, est = q[order], c[order], est[order]
            first = np.flatnonzero(np.diff(q, prepend=-1) != 0)
            better = est[first] > best[q[first]]
            best[q[first][better]] = est[first][better]
            where[q[first][better]] = c[first][better]
        return best, where


_EMPTY = np.iinfo(np.uint32).max
