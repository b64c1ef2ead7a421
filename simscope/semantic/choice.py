"""What ``auto`` means for the encoder on this machine: measured once, kept under ``indexes/``.

Nothing is decided from CPU flags (a flag may be missing where the instruction exists, and a
runtime may not use an instruction the CPU has). Instead, on a fixed calibration set of
:data:`CALIBRATION_TEXTS` texts of 8-160 words:

- every transformer runtime that can run here (``torch`` fp32 and bf16 weights, ``openvino``
  fp32 and bf16 for mean-pooling models) encodes the set after a warm-up, twice (one far
  behind on a probe of every 6th text is costed from the probe); its cost is the smaller
  CPU time of the two (process CPU seconds, all threads: on a shared machine
  wall time measures the neighbours). A runtime whose vectors agree with torch fp32 at a
  mean cosine below :data:`MIN_AGREEMENT` is never chosen. ``backend`` / ``precision``
  ``auto`` take the cheapest of the rest (among those matching what is fixed), bf16 only
  when clearly cheaper than fp32 (:data:`LOWER_PRECISION_MARGIN`);
- for ``encoder = "auto"``, the static encoder (:mod:`simscope.semantic.static`, distilled
  at this first use) encodes the same set; it is chosen when it is at least
  :data:`STATIC_MIN_SPEEDUP` times cheaper than the chosen transformer runtime (always so on
  CPUs measured so far: 75-250x), else the transformer is.

The measurements and the choice are written atomically to
``indexes/encoder-choice-<model>-<digest>/manifest.json`` and read back by every later run
with that indexes directory, so its indexes and embedding cache keep one identity even where
a re-measurement would come out otherwise (delete the directory, or set the keys, to choose
again). Without an indexes directory the measurement is kept for the process only.
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from simscope.errors import SimscopeError
from simscope.semantic.config import Backend, Precision, SemanticConfig
from simscope.storage import atomic_dir, read_manifest, slug, write_manifest

logger = logging.getLogger(__name__)

CHOICE_KIND = "encoder-choice"
MIN_AGREEMENT = 0.995
LOWER_PRECISION_MARGIN = 0.85
"""bf16 is taken only when it costs at most this share of the best fp32 runtime: where the
CPU lacks native bf16, OpenVINO runs the bf16 hint in fp32 and the two differ by noise."""
"""Least mean cosine to torch fp32 for a runtime to be chosen (bf16 measured 0.9999)."""
STATIC_MIN_SPEEDUP = 10.0
"""``encoder = "auto"`` takes the static encoder when it is at least this much cheaper."""
CALIBRATION_TEXTS = 48
REPEATS = 2
STATIC_REPEAT_SET = 50
PROBE_STEP = 6

_LOCK = threading.Lock()

_CALIBRATION_SOURCE = (
    "The assistant should answer the question the user asked, and say so plainly when it "
    "does not know. A good answer is short, correct and kind; a long answer that wanders "
    "away from the point helps nobody. When the request could hurt someone, the assistant "
    "explains why it will not help and offers something safer instead. Questions about "
    "cooking, travel, history, health, money, programming and the law come up every day, "
    "and each deserves a careful reply. def parse(line): return [int(x) for x in "
    "line.split(',') if x.strip()] # read numbers from a comma separated line. "
    "O, what a rogue and peasant slave am I! Is it not monstrous that this player here, "
    "but in a fiction, in a dream of passion, could force his soul so to his own conceit? "
)


def calibration_texts() -> list[str]:
    """The fixed texts every runtime is timed on: 8 to 160 words, like corpus chunks and
    preference texts (speed depends on lengths, not on what the words say)."""
    words = _CALIBRATION_SOURCE.split()
    lengths = np.linspace(8, 160, CALIBRATION_TEXTS).round().astype(int)
    out = []
    for i, n in enumerate(lengths.tolist()):
        start = (17 * i) % len(words)
        out.append(" ".join((words[start:] + words * 4)[:n]))
    return out


def choice_params(cfg: SemanticConfig) -> dict[str, Any]:
    """What the kept choice depends on: the model (its weights). Other settings (batch size,
    window) move every runtime alike, so one measurement serves them all and the indexes
    directory keeps one encoder identity."""
    from simscope.semantic.embed import model_checksum, resolve_model_path

    path = resolve_model_path(cfg.model)
    return {"model": cfg.model, "model_checksum": model_checksum(path)}


def choice_path(cfg: SemanticConfig, root: Path) -> Path:
    """``indexes/encoder-choice-<model>-<digest>/``: where the measurement for ``cfg`` is kept."""
    from simscope.semantic.cache import identity_digest

    return Path(root) / f"encoder-choice-{slug(cfg.model)}-{identity_digest(choice_params(cfg))}"


def resolve(cfg: SemanticConfig, root: Path | None) -> SemanticConfig:
    """``cfg`` with ``encoder``, ``backend`` and ``precision`` concrete.

    The static encoder has no runtime: its ``backend``/``precision`` are set to what the
    transformer would run with only when asked for (they are not part of its identity).
    """
    if cfg.encoder == "transformer":
        return resolve_runtime(cfg, root)
    if cfg.encoder == "static":
        return cfg
    record = _record(cfg, root, need_static=True)
    runtime = _pick_runtime(cfg, record)
    static = record["static"]
    speedup = runtime["cpu_s"] / max(static["cpu_s"], 1e-9)
    encoder = "static" if speedup >= STATIC_MIN_SPEEDUP else "transformer"
    logger.info(
        "semantic.encoder auto: %s (static encoder %.0fx cheaper than %s %s here)",
        encoder,
        speedup,
        runtime["backend"],
        runtime["precision"],
    )
    if encoder == "static":
        return replace(cfg, encoder="static")
    return replace(
        cfg, encoder="transformer", backend=runtime["backend"], precision=runtime["precision"]
    )


def resolve_runtime(cfg: SemanticConfig, root: Path | None) -> SemanticConfig:
    """``cfg`` with the transformer's ``backend`` and ``precision`` concrete."""
    if cfg.backend != "auto" and cfg.precision != "auto":
        return replace(cfg, encoder="transformer")
    runtime = _pick_runtime(cfg, _record(cfg, root, need_static=False))
    return replace(
        cfg, encoder="transformer", backend=runtime["backend"], precision=runtime["precision"]
    )


def _pick_runtime(cfg: SemanticConfig, record: dict[str, Any]) -> dict[str, Any]:
    fits = [
        r
        for r in record["runtimes"]
        if r["mean_cosine"] >= MIN_AGREEMENT
        and cfg.backend in ("auto", r["backend"])
        and cfg.precision in ("auto", r["precision"])
    ]
    if not fits:
        raise SimscopeError(
            f"semantic: no measured runtime fits backend={cfg.backend!r} precision="
            f"{cfg.precision!r} (measured: "
            + ", ".join(f"{r['backend']} {r['precision']}" for r in record["runtimes"])
            + "); set semantic.backend and semantic.precision to 'auto'"
        )
    best = min(fits, key=lambda r: (r["cpu_s"], r["backend"], r["precision"]))
    exact = [r for r in fits if r["precision"] == "fp32"]
    if best["precision"] != "fp32" and exact:
        best_exact = min(exact, key=lambda r: (r["cpu_s"], r["backend"]))
        if best["cpu_s"] > LOWER_PRECISION_MARGIN * best_exact["cpu_s"]:
            return best_exact
    return best


def _record(cfg: SemanticConfig, root: Path | None, *, need_static: bool) -> dict[str, Any]:
    """The kept measurement for ``cfg``'s model under ``root``, made (and kept) if absent."""
    params = choice_params(cfg)
    if root is None:
        record: dict[str, Any] = {"runtimes": list(_measure_runtimes(cfg))}
        if need_static:
            record["static"] = _measure_static(cfg, None)
        return record
    path = choice_path(cfg, root)
    with _LOCK:
        kept = _read(path, params)
        if kept is not None and (not need_static or "static" in kept):
            return kept
        measured: dict[str, Any] = {
            "runtimes": kept["runtimes"] if kept else list(_measure_runtimes(cfg)),
            "cpu": _cpu_name(),
            "calibration_texts": CALIBRATION_TEXTS,
            "repeats": REPEATS,
        }
        if need_static:
            measured["static"] = _measure_static(cfg, root)
        try:
            with atomic_dir(path, overwrite=kept is not None) as tmp:
                write_manifest(tmp, CHOICE_KIND, params, extra={"measured": measured})
        except (OSError, SimscopeError):
            # Another process kept its measurement first: use that one, so both agree.
            other = _read(path, params)
            if other is None:
                raise
            return other
        logger.info("encoder measurements kept in %s", path)
        return measured


def _read(path: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    manifest = read_manifest(path, CHOICE_KIND, params)
    measured: dict[str, Any] = manifest["measured"]
    return measured


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _time(fn: Any, give_up_above: float = float("inf")) -> tuple[float, float, np.ndarray]:
    """Smallest CPU and wall seconds of up to :data:`REPEATS` runs of ``fn``, and its output;
    a run costing more than ``give_up_above`` CPU seconds is not repeated (it has lost)."""
    cpu, wall = [], []
    out = None
    for _ in range(REPEATS):
        c, w = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
        if cpu[-1] > give_up_above:
            break
    assert out is not None
    return min(cpu), min(wall), out


def _measured_key(cfg: SemanticConfig) -> SemanticConfig:
    """The settings a measurement depends on (the rest are reset to their defaults)."""
    return SemanticConfig(
        model=cfg.model,
        max_tokens=cfg.max_tokens,
        batch_size=cfg.batch_size,
        chunk_overlap_tokens=cfg.chunk_overlap_tokens,
        normalize=cfg.normalize,
        static_pca_dims=cfg.static_pca_dims,
    )


def _measure_runtimes(cfg: SemanticConfig) -> tuple[dict[str, Any], ...]:
    return _measure_runtimes_once(_measured_key(cfg))


@cache
def _measure_runtimes_once(cfg: SemanticConfig) -> tuple[dict[str, Any], ...]:
    """Time every runtime that can run here on the calibration texts (once per process)."""
    from simscope.semantic.embed import (
        Embedder,
        model_info,
        openvino_available,
        resolve_model_path,
    )

    texts = calibration_texts()
    path = resolve_model_path(cfg.model)
    candidates: list[tuple[Backend, Precision]] = [("torch", "fp32"), ("torch", "bf16")]
    if openvino_available() and model_info(path).mean_pooling:
        candidates = [("openvino", "fp32"), ("openvino", "bf16"), *candidates]
    logger.info("measuring encoder runtimes on %d texts (once per indexes directory)", len(texts))
    reference: np.ndarray | None = None
    rows: list[dict[str, Any]] = []
    for backend, precision in sorted(candidates, key=lambda c: c != ("torch", "fp32")):
        embedder = Embedder(
            replace(cfg, encoder="transformer", backend=backend, precision=precision)
        )
        embedder.encode(texts[:4], progress=False)  # load, compile, warm up
        best = min((r["cpu_s"] for r in rows), default=float("inf"))
        # A probe on every 6th text first: a runtime far behind (emulated bf16 runs ~5x
        # slower than fp32) is recorded from the probe instead of timed on the whole set.
        probe = np.arange(0, len(texts), PROBE_STEP)
        c = time.process_time()
        probe_vectors = embedder.encode([texts[i] for i in probe], progress=False)
        probe_cpu = (time.process_time() - c) * len(texts) / probe.size
        if reference is not None and probe_cpu > 3 * best:
            cpu_s, wall_s = probe_cpu, float("nan")
            cos = np.sum(probe_vectors * reference[probe], axis=1)
        else:
            cpu_s, wall_s, vectors = _time(
                lambda e=embedder: e.encode(texts, progress=False), give_up_above=2 * best
            )
            if reference is None:
                reference = vectors
            cos = np.sum(vectors * reference, axis=1)
        rows.append(
            {
                "backend": backend,
                "precision": precision,
                "cpu_s": round(cpu_s, 4),
                "wall_s": None if np.isnan(wall_s) else round(wall_s, 4),
                "mean_cosine": round(float(cos.mean()), 6),
                "from_probe": bool(np.isnan(wall_s)),
            }
        )
        logger.info("  %s %s: %.2f CPU s, mean cosine %.5f", backend, precision, cpu_s, cos.mean())
    return tuple(rows)


def _measure_static(cfg: SemanticConfig, root: Path | None) -> dict[str, Any]:
    """The static encoder's cost on the calibration texts (distilled here at first use).

    Timed on the set repeated :data:`STATIC_REPEAT_SET` times (one pass takes about a
    millisecond, too little to time), reported per pass.
    """
    from simscope.semantic.embed import StaticEmbedder

    texts = calibration_texts()
    embedder = StaticEmbedder(replace(_measured_key(cfg), encoder="static"), root)
    embedder.encode(texts[:4], progress=False)
    many = texts * STATIC_REPEAT_SET
    cpu_s, wall_s, _ = _time(lambda: embedder.encode(many, progress=False))
    cpu_s, wall_s = cpu_s / STATIC_REPEAT_SET, wall_s / STATIC_REPEAT_SET
    logger.info("  static (%d dims): %.5f CPU s", embedder.dim, cpu_s)
    return {"cpu_s": round(cpu_s, 7), "wall_s": round(wall_s, 7), "dims": embedder.dim}
