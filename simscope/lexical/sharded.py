"""The lexical indexes of a sharded corpus, built out of core on any engine
(:mod:`simscope.engine`: local or Ray).

One pass over the shards computes, per work unit, the parts of every index requested (the
n-gram sets and feature counts, and the MinHash windows at each scale) with the batch
functions of the in-memory builders (:func:`~simscope.lexical.index.ngram_batch`,
:func:`~simscope.lexical.index.sign_batch`); each unit writes its parts as ``.npy`` under
the index's ``.incomplete/parts/``. The driver then assembles each index without holding the
corpus: signatures and window-to-document rows are copied part by part into memory-mapped
arrays; the n-gram sets are merged by hash range (one engine task per range, each taking its
range from every part by binary search) and the ranges concatenated. The arrays, and so
every score computed from them, are identical to :func:`simscope.lexical.index.build_ngram_index`
and :func:`~simscope.lexical.index.build_minhash_index` on the same corpus in memory, and
so are the manifests' parameters (``input_hash`` included), since both builders take the
directory names, parameters, array files and loaders of :mod:`simscope.lexical.index`: either
builder loads the other's index. The manifests differ only in ``execution`` (engine and work
units) and dates.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simscope.engine.base import Engine, Summary
from simscope.engine.shards import (
    CorpusScan,
    CorpusShards,
    ShardUnit,
    check_corpus,
    first_model,
    part_path,
    plan_units,
    read_unit,
    save_part,
    scan_corpus,
)
from simscope.lexical.index import (
    CHUNK_DOC_ARRAY,
    FEATURES_ARRAY,
    MINHASH_KIND,
    NGRAM_KIND,
    SIGNATURES_ARRAY,
    LexicalConfig,
    MinHashIndex,
    NgramIndex,
    load_minhash_index,
    load_ngram_index,
    minhash_index_params,
    minhash_index_path,
    ngram_batch,
    ngram_index_params,
    ngram_index_path,
    ngrams_array,
    sign_batch,
)
from simscope.storage import atomic_dir, write_manifest

logger = logging.getLogger(__name__)

MERGE_RANGE_VALUES = 1 << 23
"""Target number of n-gram hashes per merge task (64 MiB of uint64)."""


@dataclass
class LexicalIndexes:
    """The indexes built or loaded by :func:`build_sharded_lexical_indexes`."""

    ngram: NgramIndex | None
    minhash: dict[int, MinHashIndex] = field(default_factory=dict)


def build_sharded_lexical_indexes(
    shards: CorpusShards,
    root: Path,
    cfg: LexicalConfig,
    engine: Engine,
    *,
    ngrams: bool = True,
    scales: Sequence[int] = (),
    rebuild: bool = False,
    progress: bool = True,
) -> LexicalIndexes:
    """Load each requested index of ``indexes/`` that matches, build the others in one pass.

    Raises SimscopeError like the in-memory builders (an existing index built with other
    parameters, an empty corpus, more than one model) and when the shards are not in
    ``doc_id`` order.
    """
    root = Path(root)
    model = first_model(shards)
    units = plan_units(shards, engine.unit_docs)
    targets: dict[str | int, Path] = {}
    if ngrams:
        targets["ngrams"] = ngram_index_path(root, model)
    for scale in sorted(set(scales)):
        targets[scale] = minhash_index_path(root, model, scale)
    out = LexicalIndexes(None)
    existing = {k: p for k, p in targets.items() if p.exists() and not rebuild}
    if existing:
        input_hash, rows = scan_corpus(engine, units, model, progress=progress)
        for key, path in existing.items():
            _load_into(out, key, path, model, cfg, input_hash)
    todo = {k: p for k, p in targets.items() if k not in existing}
    if not todo:
        return out
    with ExitStack() as stack:
        tmp = {k: stack.enter_context(atomic_dir(p, overwrite=True)) for k, p in todo.items()}
        for d in tmp.values():
            (d / "parts").mkdir()
        task = _LexicalTask(
            cfg,
            ngram_dir=str(tmp["ngrams"] / "parts") if "ngrams" in tmp else None,
            minhash_dirs=tuple((k, str(d / "parts")) for k, d in tmp.items() if isinstance(k, int)),
        )
        summaries = engine.map_units(task, units, desc=f"lexical {model}", progress=progress)
        input_hash, rows = check_corpus(summaries, units, model)
        extra = {"execution": {"engine": engine.name, "units": len(units)}}
        for key, directory in tmp.items():
            parts = directory / "parts"
            if key == "ngrams":
                counts = _merge_ngrams(parts, directory, cfg, len(units), engine, progress)
                _sum_features(parts, directory, len(units))
                shutil.rmtree(parts)
                write_manifest(
                    directory,
                    NGRAM_KIND,
                    ngram_index_params(model, cfg, input_hash),
                    extra={"rows": rows, "ngram_counts": counts, **extra},
                )
            else:
                assert isinstance(key, int)
                windows = _concat_minhash(parts, directory, summaries, key, cfg.num_perm)
                shutil.rmtree(parts)
                write_manifest(
                    directory,
                    MINHASH_KIND,
                    minhash_index_params(model, cfg, key, input_hash),
                    extra={"rows": windows, **extra},
                )
    for key, path in todo.items():
        _load_into(out, key, path, model, cfg, input_hash, mmap=True)
        logger.info("built %s from %d docs in %d units on %s", path, rows, len(units), engine.name)
    return out


def build_sharded_ngram_index(
    shards: CorpusShards,
    root: Path,
    cfg: LexicalConfig,
    engine: Engine,
    *,
    rebuild: bool = False,
    progress: bool = True,
) -> NgramIndex:
    """``indexes/lexical-<model>`` of a sharded corpus (see
    :func:`build_sharded_lexical_indexes`)."""
    built = build_sharded_lexical_indexes(
        shards, root, cfg, engine, ngrams=True, rebuild=rebuild, progress=progress
    )
    assert built.ngram is not None
    return built.ngram


def build_sharded_minhash_index(
    shards: CorpusShards,
    root: Path,
    cfg: LexicalConfig,
    chunk_words: int,
    engine: Engine,
    *,
    rebuild: bool = False,
    progress: bool = True,
) -> MinHashIndex:
    """``indexes/minhash-<model>-w<W>`` of a sharded corpus (see
    :func:`build_sharded_lexical_indexes`)."""
    built = build_sharded_lexical_indexes(
        shards,
        root,
        cfg,
        engine,
        ngrams=False,
        scales=(chunk_words,),
        rebuild=rebuild,
        progress=progress,
    )
    return built.minhash[chunk_words]


# ---- the work of one unit (runs on a worker) -------------------------------------------------


@dataclass(frozen=True)
class _LexicalTask:
    """Reads one unit and writes its parts."""

    cfg: LexicalConfig
    ngram_dir: str | None = None
    minhash_dirs: tuple[tuple[int, str], ...] = ()

    def __call__(self, unit: ShardUnit) -> Summary:
        cfg = self.cfg
        scan = CorpusScan(unit)
        ngram_parts: dict[int, list[np.ndarray]] = {n: [] for n in cfg.ngram_sizes}
        features = np.zeros(1 << cfg.feature_buckets_log2, dtype=np.float64)
        sigs: dict[int, list[np.ndarray]] = {s: [] for s, _ in self.minhash_dirs}
        docs: dict[int, list[np.ndarray]] = {s: [] for s, _ in self.minhash_dirs}
        done = 0
        for batch in read_unit(unit, cfg.batch_docs):
            scan.update(batch)
            if self.ngram_dir is not None:
                batch_ngrams, batch_features = ngram_batch(batch.texts, cfg)
                for n in cfg.ngram_sizes:
                    ngram_parts[n].append(batch_ngrams[n])
                features += batch_features
            for scale, _ in self.minhash_dirs:
                batch_sigs, text_of_chunk = sign_batch(batch.texts, cfg, scale)
                sigs[scale].append(batch_sigs)
                docs[scale].append(text_of_chunk + done)
            done += len(batch.texts)
        if self.ngram_dir is not None:
            for n, parts in ngram_parts.items():
                merged = sorted_unique(np.concatenate(parts)) if parts else np.empty(0, np.uint64)
                save_part(part_path(self.ngram_dir, unit.index, f"n{n}"), merged)
            save_part(part_path(self.ngram_dir, unit.index, "features"), features)
        chunks = {}
        for scale, directory in self.minhash_dirs:
            sig = (
                np.concatenate(sigs[scale])
                if sigs[scale]
                else np.empty((0, cfg.num_perm), np.uint32)
            )
            doc = np.concatenate(docs[scale]) if docs[scale] else np.empty(0, np.int64)
            save_part(part_path(directory, unit.index, "sig"), sig)
            save_part(part_path(directory, unit.index, "doc"), doc)
            chunks[str(scale)] = int(doc.size)
        return {**scan.summary(), "chunks": chunks}


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` of a 1-D array, by sorting in place: numpy 2's hash-based ``unique``
    took 12 s where this takes 1 s on 4M uint64 n-gram hashes here."""
    values.sort()
    if values.size < 2:
        return values
    keep = np.empty(values.size, dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


# ---- assembly on the driver -----------------------------------------------------------------


def _load_into(
    out: LexicalIndexes,
    key: str | int,
    path: Path,
    model: str,
    cfg: LexicalConfig,
    input_hash: str,
    *,
    mmap: bool = False,
) -> None:
    # Just built: the arrays stay on disk (the OS pages them in as needed), checksums known.
    if key == "ngrams":
        params = ngram_index_params(model, cfg, input_hash)
        out.ngram = load_ngram_index(path, params, mmap=mmap, verify_files=not mmap)
    else:
        assert isinstance(key, int)
        params = minhash_index_params(model, cfg, key, input_hash)
        out.minhash[key] = load_minhash_index(path, params, cfg, mmap=mmap, verify_files=not mmap)


class _NpyWriter:
    """Writes one ``.npy`` file part by part: the header, then the rows as they come, never
    mapping the file, so the driver holds one part at a time. The bytes are ``np.save``'s."""

    def __init__(self, path: Path, dtype: type, shape: tuple[int, ...]) -> None:
        self.dtype = np.dtype(dtype)
        self.expected = int(np.prod(shape))
        self.written = 0
        self.file = open(path, "wb")  # noqa: SIM115 - closed in __exit__
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": shape,
        }
        np.lib.format.write_array_header_1_0(self.file, header)

    def write(self, array: np.ndarray) -> None:
        np.ascontiguousarray(array, dtype=self.dtype).tofile(self.file)
        self.written += array.size

    def __enter__(self) -> _NpyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        if exc[0] is None and self.written != self.expected:  # a bug, not a user mistake
            raise RuntimeError(f"{self.file.name}: wrote {self.written} of {self.expected} values")


def _concat_minhash(
    parts: Path, out_dir: Path, summaries: Sequence[Summary], scale: int, num_perm: int
) -> int:
    """signatures.npy and chunk_doc.npy, written part by part in row order."""
    counts = [int(s["chunks"][str(scale)]) for s in summaries]
    total = sum(counts)
    with (
        _NpyWriter(out_dir / f"{SIGNATURES_ARRAY}.npy", np.uint32, (total, num_perm)) as sigs,
        _NpyWriter(out_dir / f"{CHUNK_DOC_ARRAY}.npy", np.int64, (total,)) as chunk_doc,
    ):
        row0 = 0
        for u, (s, n) in enumerate(zip(summaries, counts, strict=True)):
            sig = np.load(part_path(parts, u, "sig"))
            doc = np.load(part_path(parts, u, "doc"))
            if sig.shape != (n, num_perm) or doc.shape != (n,):  # a bug, not a user mistake
                raise RuntimeError(f"unit {u}: parts of shape {sig.shape}, {doc.shape}; want {n}")
            sigs.write(sig)
            chunk_doc.write(doc + row0)
            row0 += int(s["rows"])
    return total


def _sum_features(parts: Path, out_dir: Path, n_units: int) -> None:
    # Counts are integers in float64: the sum is exact in any order.
    total: np.ndarray | None = None
    for u in range(n_units):
        f = np.load(part_path(parts, u, "features"))
        total = f if total is None else total + f
    assert total is not None
    np.save(out_dir / f"{FEATURES_ARRAY}.npy", total, allow_pickle=False)


@dataclass(frozen=True)
class _MergeRange:
    """The unique union of the units' n-gram sets within one range of the uint64 space."""

    parts: str
    n_units: int

    def __call__(self, job: tuple[int, int, int]) -> Summary:
        n, r, n_ranges = job
        step = (1 << 64) // n_ranges
        pieces = []
        for u in range(self.n_units):
            arr = np.load(part_path(self.parts, u, f"n{n}"), mmap_mode="r")
            a = int(np.searchsorted(arr, np.uint64(r * step), side="left")) if r else 0
            if r == n_ranges - 1:
                b = arr.size
            else:
                b = int(np.searchsorted(arr, np.uint64((r + 1) * step), side="left"))
            if b > a:
                pieces.append(np.array(arr[a:b]))
            del arr
        merged = sorted_unique(np.concatenate(pieces)) if pieces else np.empty(0, np.uint64)
        save_part(Path(self.parts) / f"merged-n{n}-r{r:06d}.npy", merged)
        return {"count": int(merged.size)}


def _merge_ngrams(
    parts: Path, out_dir: Path, cfg: LexicalConfig, n_units: int, engine: Engine, progress: bool
) -> dict[str, int]:
    """``ngrams_<n>.npy`` for each n: the sorted unique union of the units' sorted sets,
    merged range by range (each range a task; small sets in this process) and concatenated."""
    jobs = []
    for n in cfg.ngram_sizes:
        upper = sum(_npy_len(part_path(parts, u, f"n{n}")) for u in range(n_units))
        n_ranges = 1 << max(0, int(np.ceil(np.log2(max(upper, 1) / MERGE_RANGE_VALUES))))
        jobs += [(n, r, n_ranges) for r in range(n_ranges)]
    merge = _MergeRange(str(parts), n_units)
    if len(jobs) <= len(cfg.ngram_sizes):  # one range per n: not worth shipping out
        summaries = [merge(job) for job in jobs]
    else:
        summaries = engine.map_units(merge, jobs, desc="merge n-grams", progress=progress)
    counts = {}
    for n in cfg.ngram_sizes:
        mine = [(job[1], s) for job, s in zip(jobs, summaries, strict=True) if job[0] == n]
        total = sum(int(s["count"]) for _, s in mine)
        with _NpyWriter(out_dir / f"{ngrams_array(n)}.npy", np.uint64, (total,)) as out:
            for r, _ in mine:
                out.write(np.load(parts / f"merged-n{n}-r{r:06d}.npy"))
        counts[str(n)] = total
    return counts


def _npy_len(path: Path) -> int:
    return int(np.load(path, mmap_mode="r").shape[0])
