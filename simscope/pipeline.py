"""``simscope run CONFIG.toml``: the whole pipeline from one config, stage after stage.

This module owns the run configuration (``RunConfig``, read from TOML and validated by
``simscope.config``), the order of the stages, and the run directory it writes:
``profile.parquet``, ``selection.parquet`` and ``cv_summary.json`` (when RM results are given),
``examples.json``, ``embedding_map.parquet``, ``provenance.json`` and ``report.html``.
Indexes, generated probe corpora and embeddings are cached under ``indexes_dir`` and reused
by later runs. It computes nothing itself: every number comes from a stage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from simscope import __version__
from simscope.config import from_mapping, load_toml
from simscope.engine import CorpusShards, EngineConfig, make_engine, write_corpus_shards
from simscope.engine.lexical import build_lexical_indexes
from simscope.engine.semantic import build_semantic_index as build_sharded_semantic_index
from simscope.errors import SimscopeError
from simscope.lexical.index import LexicalConfig
from simscope.lexical.scorer import minhash_scales
from simscope.overlap.profile import ProfileConfig, build_profile
from simscope.preferences import load_preferences
from simscope.probe.corpus import read_probe_corpus
from simscope.probe.generate import GenerationConfig, generate_corpus
from simscope.probe.importer import import_corpus
from simscope.probe.likelihood import LikelihoodConfig, score_preferences
from simscope.probe.model import load_model
from simscope.records import PROFILE_SCHEMA, SLICES, split_probe_corpus
from simscope.report import ReportInputs, write_report
from simscope.report.load import REPORT_FILES
from simscope.select import (
    read_benchmarks,
    read_model_map,
    read_rm_results,
    rename_models,
    select_models,
    write_selection,
)
from simscope.semantic.config import SemanticConfig
from simscope.semantic.index import chunk_document, profile_chunk_words
from simscope.semantic.scorer import SemanticScorer, embed_texts
from simscope.semantic.topics import Topics, fit_topics, topic_mass
from simscope.stats import DEFAULT_N_BOOT
from simscope.storage import (
    atomic_dir,
    hash_corpus_texts,
    hash_file,
    hash_texts,
    slug,
    write_parquet,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreferencesSection:
    """Where the preference data is and how to read it."""

    path: Path
    schema: str = "auto"
    skip_bad: bool = False
    limit: int | None = None


@dataclass(frozen=True)
class CandidateSection:
    """One candidate base model: a model to probe, a corpus made elsewhere, or both.

    ``model`` (a local directory or a model id in the local Hugging Face cache) is sampled
    for a probe corpus unless ``corpus`` is given, and scored for likelihood. ``corpus`` is
    imported (JSONL/JSON/CSV/Parquet with ``text_field``, .txt, a directory, or a ProbeCorpus).
    """

    name: str
    model: str | None = None
    corpus: Path | None = None
    text_field: str = "text"
    n_docs: int | None = None


@dataclass(frozen=True)
class SelectSection:
    """Inputs of the select stage; it runs when ``rm_results`` is given."""

    rm_results: Path | None = None
    target: str | None = None
    benchmarks: str | None = None
    model_map: Path | None = None
    coverage: float = 0.9
    n_boot: int = 1000

    def __post_init__(self) -> None:
        if not 0.0 < self.coverage < 1.0:
            raise SimscopeError(f"select.coverage: expected in (0, 1), found {self.coverage}")
        if self.n_boot < 1:
            raise SimscopeError(f"select.n_boot: expected >= 1, found {self.n_boot}")


@dataclass(frozen=True)
class StagesSection:
    """Which scorers run besides the lexical one, which always does (all by default)."""

    semantic: bool = True
    likelihood: bool = True
    topics: bool = True


@dataclass(frozen=True)
class RunConfig:
    """The whole pipeline's configuration; ``seed`` reaches every random step.

    ``execution`` (an ``[execution]`` table) builds the corpora's indexes on an engine
    (``kind = "local"`` out of core in this process, ``"ray"`` on a Ray cluster) before the
    profile loads them; without it the stages build them in memory. The indexes, and so the
    Profile, are the same either way.
    """

    preferences: PreferencesSection
    candidates: tuple[CandidateSection, ...]
    seed: int = 0
    out_dir: Path = Path("simscope-out")
    indexes_dir: Path = Path("indexes")
    n_boot: int = DEFAULT_N_BOOT
    slices: tuple[str, ...] = SLICES
    stages: StagesSection = field(default_factory=StagesSection)
    lexical: LexicalConfig = field(default_factory=LexicalConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    select: SelectSection = field(default_factory=SelectSection)
    execution: EngineConfig | None = None

    def __post_init__(self) -> None:
        if not self.candidates:
            raise SimscopeError(
                "candidates: expected at least one [[candidates]] table, found none"
            )
        names = [c.name for c in self.candidates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SimscopeError(f"candidates: each name once; found {dupes} more than once")
        for c in self.candidates:
            if c.model is None and c.corpus is None:
                raise SimscopeError(
                    f"candidates: {c.name!r} needs a model to probe or a corpus to import; "
                    "found neither"
                )
        bad = [s for s in self.slices if s not in SLICES]
        if bad or not self.slices:
            raise SimscopeError(
                f"slices: expected a non-empty subset of {list(SLICES)}, found {list(self.slices)}"
            )
        if self.n_boot < 0:
            raise SimscopeError(f"n_boot: expected >= 0, found {self.n_boot}")
        if self.select.rm_results is not None and not self.select.target:
            raise SimscopeError(
                "select.target: expected the RM results metric to predict (e.g. 'accuracy'), "
                "found none"
            )


def load_run_config(path: Path) -> RunConfig:
    """Read and validate a run config; relative paths are taken from the config's folder."""
    path = Path(path)
    cfg = from_mapping(RunConfig, load_toml(path), f"{path}")
    base = path.parent

    def resolve(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else base / p

    def resolve_model(m: str | None) -> str | None:
        # a relative path that exists beside the config is a directory; else a hub id
        if m is None or Path(m).is_absolute() or not (base / m).exists():
            return m
        return str(base / m)

    return replace(
        cfg,
        preferences=replace(cfg.preferences, path=resolve(cfg.preferences.path) or Path()),
        candidates=tuple(
            replace(c, corpus=resolve(c.corpus), model=resolve_model(c.model))
            for c in cfg.candidates
        ),
        out_dir=resolve(cfg.out_dir) or cfg.out_dir,
        indexes_dir=resolve(cfg.indexes_dir) or cfg.indexes_dir,
        select=replace(
            cfg.select,
            rm_results=resolve(cfg.select.rm_results),
            model_map=resolve(cfg.select.model_map),
            benchmarks=(
                str(base / cfg.select.benchmarks)
                if cfg.select.benchmarks and (base / cfg.select.benchmarks).exists()
                else cfg.select.benchmarks
            ),
        ),
    )


@dataclass
class RunResult:
    """What a run wrote, and the tables behind it."""

    out_dir: Path
    report: Path
    profile: pl.DataFrame
    selection: pl.DataFrame | None
    verdict: str | None


class _Clock:
    """Logs how long each stage took (stderr, info level)."""

    def __init__(self) -> None:
        self.last = time.perf_counter()

    def lap(self, what: str) -> None:
        now = time.perf_counter()
        logger.info("%s: %.1f s", what, now - self.last)
        self.last = now


@dataclass
class _Profiled:
    prefs: pl.DataFrame
    schema: str
    n_bad: int
    corpora: dict[str, pl.DataFrame]
    profile: pl.DataFrame
    manifests: dict[str, list[dict[str, Any]]]
    semantic: SemanticScorer


def _profile(cfg: RunConfig, *, rebuild: bool, progress: bool) -> _Profiled:
    loaded = load_preferences(
        cfg.preferences.path,
        schema=None if cfg.preferences.schema == "auto" else cfg.preferences.schema,
        skip_bad=cfg.preferences.skip_bad,
        limit=cfg.preferences.limit,
    )
    prefs = loaded.pairs
    logger.info(
        "preferences: %d pairs (%s schema, %d bad skipped)",
        prefs.height,
        loaded.schema,
        loaded.n_bad,
    )
    clock = _Clock()
    corpora = {c.name: _probe_corpus(c, cfg, progress) for c in cfg.candidates}
    clock.lap("probe corpora")
    topics = None
    if cfg.stages.topics:
        topics = fit_topics(
            prefs.get_column("prompt").to_list(),
            cfg.semantic,
            seed=cfg.seed,
            cache_root=cfg.indexes_dir,
            progress=progress,
        )
        clock.lap("topics")
    if cfg.execution is not None:
        _build_indexes_on_engine(cfg, cfg.execution, prefs, corpora, rebuild, progress)
        clock.lap(f"indexes on the {cfg.execution.kind} engine")
    # Indexes just built on an engine are loaded, not built again.
    rebuild_indexes = rebuild and cfg.execution is None
    semantic = SemanticScorer(
        cfg.indexes_dir,
        cfg.semantic,
        seed=cfg.seed,
        n_boot=cfg.n_boot,
        rebuild=rebuild_indexes,
        progress=progress,
        slice_texts={s: prefs.get_column(s).to_list() for s in cfg.slices},
    )
    profile_cfg = ProfileConfig(
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        slices=cfg.slices,
        lexical=replace(cfg.lexical, seed=cfg.seed),
    )
    result = build_profile(
        prefs,
        corpora,
        cfg.indexes_dir,
        profile_cfg,
        topics=topics,
        extra_scorers={"semantic": semantic} if cfg.stages.semantic else None,
        rebuild=rebuild_indexes,
        progress=progress,
    )
    clock.lap("lexical and semantic profile")
    profiles = [result.profile]
    if topics is not None and cfg.stages.semantic:
        profiles.append(_topic_mass_rows(semantic, topics))
    if cfg.stages.likelihood:
        for c in cfg.candidates:
            if c.model is not None:
                profiles.append(_likelihood_rows(c, c.model, prefs, topics, cfg, rebuild, progress))
    if cfg.stages.likelihood:
        clock.lap("likelihood")
    profile = pl.concat(profiles).sort(["model", "slice", "metric", "topic"], nulls_last=False)
    return _Profiled(
        prefs, loaded.schema, loaded.n_bad, corpora, profile, result.manifests, semantic
    )


def _likelihood_rows(
    c: CandidateSection,
    model: str,
    prefs: pl.DataFrame,
    topics: Topics | None,
    cfg: RunConfig,
    rebuild: bool,
    progress: bool,
) -> pl.DataFrame:
    """One model's likelihood Profile rows, cached under ``indexes/likelihood/`` by every
    input that changes them (weights, texts, topics, settings, seed)."""
    key = hash_texts(
        [
            c.name,
            _model_fingerprint(model),
            hash_texts([t for s in cfg.slices for t in prefs.get_column(s).to_list()]),
            hash_texts(prefs.get_column("prompt").to_list()),
            json.dumps(dataclasses.asdict(cfg.likelihood), sort_keys=True),
            json.dumps([cfg.slices, cfg.n_boot, cfg.seed]),
            "" if topics is None else hash_texts([*topics.names, topics.labels.tobytes().hex()]),
        ]
    )[:24]
    path = Path(cfg.indexes_dir) / "likelihood" / f"{slug(c.name)}-{key}.parquet"
    if path.is_file() and not rebuild:
        logger.info("likelihood for %s: reusing %s", c.name, path)
        return pl.read_parquet(path)
    lm = load_model(model, name=c.name)
    rows = score_preferences(
        lm,
        prefs,
        cfg.likelihood,
        slices=cfg.slices,
        topic_labels=topics.labels if topics else None,
        topic_names=topics.names if topics else None,
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        progress=progress,
    ).profile
    write_parquet(rows, path)
    return rows


def profile_only(
    cfg: RunConfig, out: Path, *, rebuild: bool = False, progress: bool = True
) -> pl.DataFrame:
    """The Profile stage alone (``simscope profile``): write the table to ``out``."""
    done = _profile(cfg, rebuild=rebuild, progress=progress)
    write_parquet(done.profile, Path(out))
    return done.profile


def run(cfg: RunConfig, *, rebuild: bool = False, progress: bool = True) -> RunResult:
    """Run every configured stage and write the run directory (see the module doc).

    The select stage's inputs are read first, so a bad file fails before the long work; the
    run directory is written only at the end, as a whole (``<out>.incomplete/`` renamed over
    the previous run's), so a failed run leaves the previous one intact and never a mix.
    """
    out = Path(cfg.out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise SimscopeError(f"out_dir: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT_FILES["profile"]).is_file():
        raise SimscopeError(
            f"out_dir: {out} holds files but no {REPORT_FILES['profile']}, so it is not a "
            "simscope run directory; the run replaces its directory as a whole: choose a new one"
        )
    select_inputs = _read_select_inputs(cfg)
    done = _profile(cfg, rebuild=rebuild, progress=progress)
    prefs, corpora, profile, semantic = done.prefs, done.corpora, done.profile, done.semantic

    chosen = None
    if select_inputs is not None:
        rm, benchmarks = select_inputs
        assert cfg.select.target is not None  # checked in RunConfig
        chosen = select_models(
            profile,
            benchmarks,
            rm,
            target_metric=cfg.select.target,
            seed=cfg.seed,
            candidates=[c.name for c in cfg.candidates],
            coverage=cfg.select.coverage,
            n_boot=cfg.select.n_boot,
        )
    selection = chosen.selection if chosen else None
    cv_summary = chosen.cv_summary if chosen else None
    verdict = (str(cv_summary.get("verdict", "")) or None) if cv_summary else None
    examples = _examples(semantic, corpora) if cfg.stages.semantic else []
    embedding_map = _embedding_map(semantic) if cfg.stages.semantic else None
    provenance = _provenance(cfg, prefs, corpora, done.manifests, done.schema, done.n_bad)

    with atomic_dir(out, overwrite=True) as tmp:
        write_parquet(profile, tmp / REPORT_FILES["profile"])
        if chosen is not None:
            write_selection(chosen, tmp)
        (tmp / REPORT_FILES["examples"]).write_text(
            json.dumps(examples, indent=1, ensure_ascii=False)
        )
        if embedding_map is not None:
            write_parquet(embedding_map, tmp / REPORT_FILES["embedding_map"])
        (tmp / REPORT_FILES["provenance"]).write_text(json.dumps(provenance, indent=1, default=str))
        write_report(
            ReportInputs(
                profile=profile,
                selection=selection,
                cv_summary=cv_summary,
                examples=examples,
                embedding_map=embedding_map,
                provenance=provenance,
            ),
            tmp / "report.html",
        )
    return RunResult(out, out / "report.html", profile, selection, verdict)


def _read_select_inputs(cfg: RunConfig) -> tuple[pl.DataFrame, pl.DataFrame | None] | None:
    """The RM results and public benchmarks (models renamed by the map), or None when the
    select stage does not run."""
    if cfg.select.rm_results is None:
        return None
    rm = read_rm_results(cfg.select.rm_results)
    benchmarks = read_benchmarks(cfg.select.benchmarks) if cfg.select.benchmarks else None
    if cfg.select.model_map is not None:
        mapping = read_model_map(cfg.select.model_map)
        rm = rename_models(rm, mapping)
        benchmarks = rename_models(benchmarks, mapping) if benchmarks is not None else None
    return rm, benchmarks


# ---- probe corpora ----------------------------------------------------------------------------


def _probe_corpus(c: CandidateSection, cfg: RunConfig, progress: bool) -> pl.DataFrame:
    if c.corpus is not None:
        return import_corpus(
            c.corpus, model=c.name, text_field=c.text_field, n_docs=c.n_docs, seed=cfg.seed
        ).corpus
    assert c.model is not None
    gen = replace(cfg.generation, seed=cfg.seed, n_docs=c.n_docs or cfg.generation.n_docs)
    # A generated corpus is cached under indexes/ by everything that decides its content.
    key = hash_texts(
        [
            c.name,
            c.model,
            json.dumps(dataclasses.asdict(gen), sort_keys=True),
            _model_fingerprint(c.model),
        ]
    )[:16]
    path = Path(cfg.indexes_dir) / "corpora" / f"{slug(c.name)}-{key}.parquet"
    if path.is_file():
        logger.info("probe corpus for %s: reusing %s", c.name, path)
        return read_probe_corpus(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return generate_corpus(c.model, path, gen, name=c.name, progress=progress)


def _model_fingerprint(model: str) -> str:
    """Checksums of a local model directory's config and weight files (a hub id: itself)."""
    path = Path(model)
    if not path.is_dir():
        return model
    files = sorted(p for p in path.iterdir() if p.suffix in {".json", ".safetensors", ".txt"})
    return hash_texts([f"{p.name}:{hash_file(p)}" for p in files])


# ---- indexes on an engine ---------------------------------------------------------------------


def _build_indexes_on_engine(
    cfg: RunConfig,
    execution: EngineConfig,
    prefs: pl.DataFrame,
    corpora: Mapping[str, pl.DataFrame],
    rebuild: bool,
    progress: bool,
) -> None:
    """Build every index the profile will ask for on ``execution``'s engine, from parquet
    shards of each corpus under ``indexes/shards/`` (kept: a later run reuses them); the
    profile then loads them, since their manifests match the in-memory builders'.

    Paths handed to the workers are absolute; on a cluster of several machines the indexes
    directory must be on storage every node sees, at the same path. Workers that embed unlike
    this process are refused by the engine's semantic builder.
    """
    root = Path(cfg.indexes_dir).resolve()
    lexical = replace(cfg.lexical, seed=cfg.seed)
    texts = {s: prefs.get_column(s).to_list() for s in cfg.slices}
    scales = sorted({w for t in texts.values() for w in minhash_scales(t, lexical)})
    chunk_words = profile_chunk_words(texts, cfg.semantic)  # one scale, as SemanticScorer
    shards = {
        name: _corpus_shards(root, name, corpora[name], execution, rebuild) for name in corpora
    }
    engine = make_engine(execution)
    try:
        for name in sorted(corpora):
            build_lexical_indexes(
                shards[name],
                root,
                lexical,
                engine,
                scales=scales,
                rebuild=rebuild,
                progress=progress,
            )
            if not cfg.stages.semantic:
                continue
            build_sharded_semantic_index(
                shards[name],
                root,
                cfg.semantic,
                engine,
                chunk_words=chunk_words,
                num_gpus=execution.model_gpus,
                rebuild=rebuild,
                progress=progress,
            )
    finally:
        engine.close()


def _corpus_shards(
    root: Path, name: str, corpus: pl.DataFrame, execution: EngineConfig, rebuild: bool
) -> CorpusShards:
    """``indexes/shards/<name>-<content key>/``: the corpus as parquet shards in ``doc_id``
    order, written once per content (older versions of the same candidate's are deleted)."""
    _, texts = split_probe_corpus(corpus)  # checked: one model, no nulls; in doc_id order
    ordered = corpus.sort("doc_id")
    key = hash_texts([name, hash_texts(ordered.get_column("doc_id")), hash_corpus_texts(texts)])[
        :16
    ]
    parent = root / "shards"
    target = parent / f"{slug(name)}-{key}"
    if rebuild or not target.is_dir():
        with atomic_dir(target, overwrite=True) as tmp:
            write_corpus_shards(ordered, tmp, row_group_rows=min(execution.unit_docs, 8192))
    for old in parent.glob(f"{slug(name)}-*"):
        if old != target and old.is_dir() and len(old.name) == len(target.name):
            shutil.rmtree(old)
    return CorpusShards.from_path(target)


# ---- the semantic evidence for the report -------------------------------------------------


def _topic_mass_rows(semantic: SemanticScorer, topics: Topics) -> pl.DataFrame:
    """``semantic.topic_mass_ratio`` per model and topic, under the prompt slice (topics are
    clusters of prompts); a single number per topic, so no interval."""
    frames = []
    for (model, slice_), index in sorted(semantic.indexes.items()):
        if slice_ != "prompt":
            continue
        mass = topic_mass(index, topics)
        frames.append(
            mass.select(
                pl.lit(model).alias("model"),
                pl.lit("prompt").alias("slice"),
                pl.col("topic"),
                pl.lit("semantic.topic_mass_ratio").alias("metric"),
                pl.col("mass_ratio").alias("value"),
                pl.lit(None, dtype=pl.Float64).alias("ci_low"),
                pl.lit(None, dtype=pl.Float64).alias("ci_high"),
            )
        )
    return pl.concat(frames) if frames else pl.DataFrame(schema=PROFILE_SCHEMA)


def _examples(
    semantic: SemanticScorer, corpora: Mapping[str, pl.DataFrame]
) -> list[dict[str, str]]:
    """Per model: the chosen responses closest to its corpus, beside that corpus chunk."""
    out = []
    for (model, slice_), scores in sorted(semantic.scores.items()):
        if slice_ != "chosen":
            continue
        index = semantic.indexes[(model, slice_)]
        docs = corpora[model].sort("doc_id").get_column("text").to_list()
        for i in np.argsort(-scores.nn_cosine, kind="stable")[:2].tolist():
            chunk = int(scores.nn_chunk[i])
            doc = int(index.chunk_doc[chunk])
            first = int(np.searchsorted(index.chunk_doc, doc))
            pieces = chunk_document(docs[doc], index.chunk_words)
            out.append(
                {
                    "model": model,
                    "slice": slice_,
                    "preference_text": semantic.texts[slice_][i],
                    "probe_text": pieces[min(chunk - first, len(pieces) - 1)],
                    "score_label": f"cosine {scores.nn_cosine[i]:.3f}",
                }
            )
    return out


def _embedding_map(semantic: SemanticScorer) -> pl.DataFrame | None:
    """A 2-D PCA map of the chosen responses and each model's corpus chunks."""
    keys = sorted(k for k in semantic.indexes if k[1] == "chosen")
    if not keys:
        return None
    queries = embed_texts(
        semantic.indexes[keys[0]], semantic.texts["chosen"], semantic.cfg, progress=False
    )
    blocks = [(queries, "preference", "preference data")]
    rng = np.random.default_rng(semantic.seed)
    for model, _ in keys:
        v = semantic.indexes[(model, "chosen")].vectors
        take = rng.choice(v.shape[0], size=min(v.shape[0], 500), replace=False)
        blocks.append((v[np.sort(take)], "probe", model))
    x = np.concatenate([b[0] for b in blocks]).astype(np.float64)
    x -= x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    kinds = np.concatenate([[b[1]] * b[0].shape[0] for b in blocks])
    models = np.concatenate([[b[2]] * b[0].shape[0] for b in blocks])
    return pl.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "kind": kinds, "model": models})


def _provenance(
    cfg: RunConfig,
    prefs: pl.DataFrame,
    corpora: Mapping[str, pl.DataFrame],
    manifests: Mapping[str, list[dict[str, Any]]],
    schema: str,
    n_bad: int,
) -> dict[str, Any]:
    packages = {}
    for name in (
        "polars",
        "numpy",
        "torch",
        "transformers",
        "sentence-transformers",
        "faiss-cpu",
        "datasketch",
        "rensa",
    ):
        try:
            packages[name] = version(name)
        except Exception:  # a missing package is just not listed
            continue
    return {
        "simscope_version": __version__,
        "python": platform.python_version(),
        "packages": packages,
        "seed": cfg.seed,
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
        "preferences": {
            "path": str(cfg.preferences.path),
            "file_hash": hash_file(cfg.preferences.path),
            "schema": schema,
            "pairs": prefs.height,
            "bad_skipped": n_bad,
        },
        "corpora": {
            m: {
                "docs": c.height,
                "origin": sorted(set(c.get_column("origin").to_list())),
                "text_hash": hash_texts(c.sort("doc_id").get_column("text").to_list()),
            }
            for m, c in corpora.items()
        },
        "index_manifests": {m: list(v) for m, v in manifests.items()},
    }
