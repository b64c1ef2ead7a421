"""The static encoder: a model2vec model distilled from the transformer, kept as an index.

``model2vec.distill`` runs every token of the transformer's vocabulary through the
transformer once, reduces the token vectors with PCA and weights them (SIF); a text's
embedding is then the mean of its tokens' static vectors: no attention, no windows, no
truncation (every token of a long text counts), thousands of texts per second on one core.

``indexes/static-encoder-<model>-<digest>/`` holds, with its manifest:

- ``vectors.npy``: the token vectors (vocabulary x ``static_pca_dims``, float16 as
  model2vec stores them; float32 in memory);
- ``tokenizer.json``: the tokenizer model2vec built (the transformer's, pruned), as text.

The manifest's params name the source model (its weights' checksum), the distillation
settings and the model2vec version; provenance (seconds taken, torch version, when) is
beside them. Built in ``<name>.incomplete/`` and renamed, checked (checksums, params) on
every load, never pickled: the model is rebuilt from the arrays and the tokenizer's JSON.
Knows nothing of corpora or indexes of texts.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import cache, cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from simscope.errors import SimscopeError
from simscope.storage import atomic_dir, load_array, read_manifest, save_array, slug, write_manifest

logger = logging.getLogger(__name__)

STATIC_KIND = "static-encoder"
SIF_COEFFICIENT = 1e-4
"""model2vec's default SIF weighting of token vectors (rarer tokens weigh more)."""
TOKENIZER_FILE = "tokenizer.json"

_DISTILL_LOCK = threading.Lock()


@dataclass(frozen=True)
class StaticModelFiles:
    """A loaded static encoder: its token vectors, tokenizer and manifest."""

    path: Path | None
    vectors: np.ndarray
    tokenizer_json: str
    manifest: dict[str, Any]

    @cached_property
    def checksum(self) -> str:
        """Digest of the token vectors and the tokenizer: the encoder's identity (the same
        whether the model was just distilled or loaded)."""
        h = xxhash.xxh3_128()
        h.update(f"{self.vectors.dtype.str}{self.vectors.shape}".encode())
        h.update(np.ascontiguousarray(self.vectors).tobytes())
        h.update(self.tokenizer_json.encode("utf-8"))
        return h.hexdigest()


def static_params(model: str, model_checksum: str, pca_dims: int) -> dict[str, Any]:
    """Everything that changes the distilled vectors."""
    return {
        "source_model": model,
        "source_checksum": model_checksum,
        "pca_dims": pca_dims,
        "sif_coefficient": SIF_COEFFICIENT,
        "pooling": "mean",
        "model2vec": version("model2vec"),
    }


def static_dir(root: Path, params: dict[str, Any]) -> Path:
    from simscope.semantic.cache import identity_digest

    name = f"static-encoder-{slug(str(params['source_model']))}-{identity_digest(params)}"
    return Path(root) / name


def load_or_distill(
    source_path: Path, params: dict[str, Any], root: Path | None
) -> StaticModelFiles:
    """The static encoder for ``params``: loaded from ``root`` if built there, else distilled
    (and, with a ``root``, written there atomically for every later run)."""
    if root is None:
        return _distilled(source_path, _freeze(params))
    path = static_dir(root, params)
    with _DISTILL_LOCK:
        if not path.exists():
            # Distilled once per process: a second indexes directory gets the same arrays.
            files = _distilled(source_path, _freeze(params))
            with atomic_dir(path, overwrite=True) as tmp:
                save_array(tmp, "vectors", files.vectors)
                (tmp / TOKENIZER_FILE).write_text(files.tokenizer_json, encoding="utf-8")
                write_manifest(
                    tmp,
                    STATIC_KIND,
                    params,
                    extra={"rows": int(files.vectors.shape[0]), **files.manifest},
                )
            logger.info("static encoder written to %s", path)
        return _load(path, params)


def _load(path: Path, params: dict[str, Any]) -> StaticModelFiles:
    manifest = read_manifest(path, STATIC_KIND, params)
    vectors = load_array(path, "vectors")
    if vectors.ndim != 2 or vectors.shape[0] != manifest.get("rows"):
        raise SimscopeError(f"{path}: vectors disagree with the manifest; delete the directory")
    tokenizer_json = (path / TOKENIZER_FILE).read_text(encoding="utf-8")
    return StaticModelFiles(path, vectors, tokenizer_json, manifest)


def _freeze(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


@cache
def _distilled(source_path: Path, frozen: tuple[tuple[str, Any], ...]) -> StaticModelFiles:
    return _distill(source_path, dict(frozen))


def _distill(source_path: Path, params: dict[str, Any]) -> StaticModelFiles:
    """Run model2vec's distillation on the local transformer (no network)."""
    import torch
    from model2vec.distill import distill

    from simscope.logs import quiet_transformers

    logger.info(
        "distilling a static encoder from %s (pca_dims=%d; once per indexes directory)",
        source_path,
        params["pca_dims"],
    )
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    with quiet_transformers(), _no_bars():
        model = distill(
            model_name=str(source_path),
            pca_dims=int(params["pca_dims"]),
            sif_coefficient=float(params["sif_coefficient"]),
            device="cpu",
        )
    if model.weights is not None or model.token_mapping is not None:  # a model2vec change
        raise RuntimeError("model2vec returned a vocabulary-quantized model; not supported")
    provenance = {
        "distill_seconds": round(time.perf_counter() - start_wall, 1),
        "distill_cpu_seconds": round(time.process_time() - start_cpu, 1),
        "torch": torch.__version__,
        "dims": int(model.dim),
    }
    logger.info("static encoder distilled in %.1f s", provenance["distill_seconds"])
    vectors = np.ascontiguousarray(model.embedding)
    return StaticModelFiles(None, vectors, model.tokenizer.to_str(), {"provenance": provenance})


def _no_bars() -> Any:
    """model2vec draws an "Encoding tokens" bar with tqdm: off while distilling."""
    from functools import partial
    from unittest import mock

    from tqdm import tqdm

    return mock.patch("model2vec.distill.inference.tqdm", partial(tqdm, disable=True))
