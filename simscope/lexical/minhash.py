"""MinHash signatures of shingle-hash sets, and the LSH that finds near-duplicates among them.

Two signing engines take the same 64-bit shingle hashes (from ``simscope.normalize``):

- ``rensa`` (default): rensa's ``RMinHash`` over a flat hash buffer with row offsets, in Rust;
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

ENGINES: Final = ("rensa", "datasketch")


def engine_version(engine: str) -> str:
    """The version string of a signing engine (recorded in manifests)."""
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
    if engine == "rensa":
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
