"""The embedding cache on disk: vectors keyed by (encoder identity, text hash), never pickled.

``indexes/embcache-<model>-<identity>/`` holds one shard directory per write
(``shard-<time>-<pid>/`` with ``keys.npy``, ``vectors.npy`` and a manifest), each written
atomically, so concurrent runs only ever add whole shards. The identity (model, its weights'
checksum, precision, window, pooling, normalization) is in every shard's manifest; a text
is looked up by the xxh3-128 hash of its normalized form. Knows nothing of models or indexes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from simscope.errors import SimscopeError
from simscope.storage import (
    atomic_dir,
    check_replaceable,
    load_array,
    read_manifest,
    save_array,
    slug,
    write_manifest,
)

logger = logging.getLogger(__name__)

CACHE_KIND = "embedding-cache"


def text_key(text: str) -> bytes:
    """The cache key of an (already normalized) text: its xxh3-128 digest."""
    return xxhash.xxh3_128_digest(text.encode("utf-8"))


def identity_digest(identity: dict[str, Any]) -> str:
    """A short stable digest of an encoder identity, for directory names."""
    blob = json.dumps(identity, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


class EmbeddingCache:
    """Embeddings of texts under one encoder identity, as shards of plain arrays."""

    def __init__(self, root: Path, identity: dict[str, Any], *, rebuild: bool = False) -> None:
        self.identity = dict(identity)
        self.rebuild = rebuild
        """Drop (and so re-embed) a damaged shard instead of refusing it: ``--rebuild``."""
        name = slug(str(identity.get("model", "model")))
        self.path = Path(root) / f"embcache-{name}-{identity_digest(self.identity)}"
        self._rows: dict[bytes, int] | None = None
        self._vectors: list[np.ndarray] = []
        self._offset = 0

    def _load(self) -> dict[bytes, int]:
        if self._rows is not None:
            return self._rows
        rows: dict[bytes, int] = {}
        if self.path.is_dir():
            shards = sorted(
                p
                for p in self.path.iterdir()
                if p.is_dir() and p.name.startswith("shard-") and "." not in p.name
            )
            for shard in shards:
                try:
                    read_manifest(shard, CACHE_KIND, self.identity)
                    keys, vectors = load_array(shard, "keys"), load_array(shard, "vectors")
                except SimscopeError as e:
                    if not self.rebuild:
                        raise SimscopeError(
                            f"{e} (a shard of the embedding cache: --rebuild drops it and "
                            "embeds its texts again)"
                        ) from None
                    check_replaceable(shard)  # only a shard simscope wrote whole is deleted
                    logger.warning(
                        "%s: damaged (%s); dropped, its texts are embedded again", shard, e
                    )
                    shutil.rmtree(shard, ignore_errors=True)  # another worker may race
                    continue
                self._append(rows, keys, vectors)
        self._rows = rows
        logger.debug("embedding cache %s: %d vectors", self.path, len(rows))
        return rows

    def _append(self, rows: dict[bytes, int], keys: np.ndarray, vectors: np.ndarray) -> None:
        raw = np.ascontiguousarray(keys, dtype=np.uint8).tobytes()
        for i in range(keys.shape[0]):
            rows.setdefault(raw[16 * i : 16 * i + 16], self._offset + i)
        self._vectors.append(vectors)
        self._offset += keys.shape[0]

    def __len__(self) -> int:
        return len(self._load())

    def lookup(self, keys: list[bytes], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for ``keys`` (zeros where missing) and a mask of the keys found."""
        rows = self._load()
        where = np.array([rows.get(k, -1) for k in keys], dtype=np.int64)
        found = where >= 0
        out = np.zeros((len(keys), dim), dtype=np.float32)
        if found.any():
            stacked = np.concatenate(self._vectors) if len(self._vectors) > 1 else self._vectors[0]
            self._vectors = [stacked]
            out[found] = stacked[where[found]]
        return out, found

    def add(self, keys: list[bytes], vectors: np.ndarray) -> None:
        """Store new vectors as one shard (written atomically)."""
        if not keys:
            return
        rows = self._load()
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), 16)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.path.mkdir(parents=True, exist_ok=True)
        shard = self.path / f"shard-{time.time_ns():020d}-{os.getpid()}"
        with atomic_dir(shard) as tmp:
            save_array(tmp, "keys", key_array)
            save_array(tmp, "vectors", vectors)
            write_manifest(tmp, CACHE_KIND, self.identity, extra={"rows": len(keys)})
        self._append(rows, key_array, vectors)
