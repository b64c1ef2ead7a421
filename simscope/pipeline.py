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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl

from simscope import __version__
from simscope.config import CandidateSection, RunConfig
from simscope.engine import CorpusShards, EngineConfig, make_engine, write_corpus_shards
from simscope.errors import SimscopeError
from simscope.lexical.scorer import minhash_scales
from simscope.lexical.sharded import build_sharded_lexical_indexes
from simscope.overlap.profile import ProfileConfig, build_profile
from simscope.preferences import load_preferences
from simscope.probe.cached import (
    CandidateModel,
    ProbeCache,
    TopicLabels,
    cached_corpus,
    cached_likelihood,
    cached_transfer,
)
from simscope.probe.importer import import_corpus
from simscope.progress import stage
from simscope.records import PROFILE_SCHEMA, split_probe_corpus
from simscope.report import ReportInputs, write_report
from simscope.report.load import REPORT_FILES
from simscope.select import (
    PriorTable,
    read_benchmarks,
    read_candidates,
    read_model_map,
    read_prior,
    read_rm_results,
    rename_models,
    select_models,
    write_selection,
)
from simscope.semantic.index import chunk_document, profile_chunk_words
from simscope.semantic.scorer import SemanticScorer, embed_texts
from simscope.semantic.sharded import build_sharded_semantic_index
from simscope.semantic.topics import Topics, fit_topics, topic_mass
from simscope.storage import (
    atomic_dir,
    check_replaceable,
    foreign_entries,
    hash_corpus_texts,
    hash_file,
    hash_texts,
    slug,
    write_parquet,
)

logger = logging.getLogger(__name__)


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
    """Every stage in order, each under one progress line (``progress``); the stages' own
    bars stay off."""
    loaded = load_preferences(
        cfg.preferences.path,
        schema=None if cfg.preferences.schema == "auto" else cfg.preferences.schema,
        skip_bad=cfg.preferences.skip_bad,
        limit=cfg.preferences.limit,
        progress=False,
    )
    prefs = loaded.pairs
    logger.info(
        "preferences: %d pairs (%s schema, %d bad skipped)",
        prefs.height,
        loaded.schema,
        loaded.n_bad,
    )
    clock = _Clock()
    topics = None
    if cfg.stages.topics:
        for _ in stage(["prompts"], "topics", unit="step", enabled=progress):
            topics = fit_topics(
                prefs.get_column("prompt").to_list(),
                cfg.semantic,
                seed=cfg.seed,
                cache_root=cfg.indexes_dir,
                progress=False,
            )
        clock.lap("topics")
    cache = ProbeCache(Path(cfg.indexes_dir), seed=cfg.seed, n_boot=cfg.n_boot, rebuild=rebuild)
    corpora: dict[str, pl.DataFrame] = {}
    profiles: list[pl.DataFrame] = []
    for c in stage(cfg.candidates, "probe", unit="candidates", enabled=progress, name_of=_name):
        corpora[c.name], rows = _probe_candidate(c, prefs, topics, cfg, cache)
        profiles += rows
    clock.lap("probe: corpora, likelihood, transfer")
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
        progress=False,
        slice_texts={s: prefs.get_column(s).to_list() for s in cfg.slices},
    )
    profile_cfg = ProfileConfig(
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        slices=cfg.slices,
        lexical=replace(cfg.lexical, seed=cfg.seed),
    )
    manifests: dict[str, list[dict[str, Any]]] = {}
    overlap = "lexical + semantic overlap" if cfg.stages.semantic else "lexical overlap"
    for name in stage(sorted(corpora), overlap, unit="corpora", enabled=progress):
        result = build_profile(
            prefs,
            {name: corpora[name]},
            cfg.indexes_dir,
            profile_cfg,
            topics=topics,
            extra_scorers={"semantic": semantic} if cfg.stages.semantic else None,
            rebuild=rebuild_indexes,
            progress=False,
        )
        profiles.append(result.profile)
        manifests.update(result.manifests)
    clock.lap("lexical and semantic profile")
    if topics is not None and cfg.stages.semantic:
        profiles.append(_topic_mass_rows(semantic, topics))
    profile = pl.concat(profiles).sort(["model", "slice", "metric", "topic"], nulls_last=False)
    return _Profiled(prefs, loaded.schema, loaded.n_bad, corpora, profile, manifests, semantic)


def _name(c: CandidateSection) -> str:
    return c.name


def profile_only(
    cfg: RunConfig, out: Path, *, rebuild: bool = False, progress: bool = True
) -> pl.DataFrame:
    """The Profile stage alone (``simscope profile``): write the table to ``out``."""
    done = _profile(cfg, rebuild=rebuild, progress=progress)
    write_parquet(done.profile, Path(out))
    return done.profile


RUN_FILES: Final = (*REPORT_FILES.values(), "report.html")
"""What a run writes into its directory (and all an older simscope's run directory held)."""


def _inputs(cfg: RunConfig) -> list[Path]:
    """Every path a run reads or keeps: none of them may lie inside the run directory."""
    paths = [cfg.preferences.path, Path(cfg.indexes_dir)]
    if cfg.config_path is not None:
        paths.append(cfg.config_path)
    for c in cfg.candidates:
        paths += [p for p in (c.corpus, Path(c.model) if c.model else None) if p is not None]
    for p in (cfg.select.rm_results, cfg.select.model_map, cfg.select.costs):
        if p is not None:
            paths.append(p)
    for named in (cfg.select.benchmarks, cfg.select.prior):
        if named and Path(named).exists():
            paths.append(Path(named))
    return paths


def check_run_dir(out: Path, inputs: Sequence[Path]) -> None:
    """Refuse a run directory the run could not replace without deleting what is not its own:
    one that holds (or is) an input, the config's folder or a parent of it, or a non-empty
    directory simscope did not write."""
    out = Path(out).resolve()
    for path in inputs:
        p = Path(path).resolve()
        if p == out or out in p.parents:
            held = "is" if p == out else "holds"
            raise SimscopeError(
                f"out_dir: {out} {held} {p}, which the run reads; the run directory is replaced "
                'as a whole, so it must be a folder of its own (e.g. out_dir = "run")'
            )
    try:
        check_replaceable(out, legacy_files=RUN_FILES)
    except SimscopeError as e:
        raise SimscopeError(f"out_dir: {e}") from None


def run(cfg: RunConfig, *, rebuild: bool = False, progress: bool = True) -> RunResult:
    """Run every configured stage and write the run directory (see the module doc).

    The select stage's inputs are read first, so a bad file fails before the long work; the
    run directory is written only at the end, as a whole (``<out>.incomplete/`` renamed over
    the previous run's), so a failed run leaves the previous one intact and never a mix.
    """
    out = Path(cfg.out_dir).resolve()
    check_run_dir(out, _inputs(cfg))
    select_inputs = _read_select_inputs(cfg)
    done = _profile(cfg, rebuild=rebuild, progress=progress)
    prefs, corpora, profile, semantic = done.prefs, done.corpora, done.profile, done.semantic

    chosen = None
    if select_inputs is not None:
        rm, benchmarks, prior, costs = select_inputs
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
            prior=prior,
            prior_metric=cfg.select.prior_metric,
            suggest=cfg.select.suggest,
            budget=cfg.select.budget,
            cost=cfg.select.cost,
            costs=costs,
        )
    selection = chosen.selection if chosen else None
    cv_summary = chosen.summary if chosen else None
    verdict = cv_summary.verdict or None if cv_summary else None
    examples = _examples(semantic, corpora) if cfg.stages.semantic else []
    embedding_map = _embedding_map(semantic) if cfg.stages.semantic else None
    provenance = _provenance(cfg, prefs, corpora, done.manifests, done.schema, done.n_bad)

    with atomic_dir(out, overwrite=True, kind="run", legacy_files=RUN_FILES) as tmp:
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


def _read_select_inputs(
    cfg: RunConfig,
) -> tuple[pl.DataFrame | None, pl.DataFrame | None, PriorTable | None, dict[str, float]] | None:
    """The RM results, public benchmarks, prior and costs (models renamed by the map), or
    None when the select stage does not run."""
    if cfg.select.rm_results is None and cfg.select.prior is None:
        return None
    mapping = read_model_map(cfg.select.model_map) if cfg.select.model_map is not None else {}
    rm = (
        rename_models(read_rm_results(cfg.select.rm_results), mapping)
        if cfg.select.rm_results is not None
        else None
    )
    benchmarks = read_benchmarks(cfg.select.benchmarks) if cfg.select.benchmarks else None
    benchmarks = rename_models(benchmarks, mapping) if benchmarks is not None else None
    prior = read_prior(cfg.select.prior, model_map=mapping) if cfg.select.prior else None
    costs = (
        {mapping.get(m, m): c for m, c in read_candidates(cfg.select.costs).costs.items()}
        if cfg.select.costs is not None
        else {}
    )
    return rm, benchmarks, prior, costs


# ---- probe corpora ----------------------------------------------------------------------------


def _probe_candidate(
    c: CandidateSection,
    prefs: pl.DataFrame,
    topics: Topics | None,
    cfg: RunConfig,
    cache: ProbeCache,
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """One candidate's probe corpus (imported, or sampled from its model) and its model's
    likelihood and transfer rows; the model is loaded only for what is not cached."""
    corpus = None
    if c.corpus is not None:
        corpus = import_corpus(
            c.corpus, model=c.name, text_field=c.text_field, n_docs=c.n_docs, seed=cfg.seed
        ).corpus
    if c.model is None:
        assert corpus is not None  # checked in CandidateSection
        return corpus, []
    model = CandidateModel(c.name, c.model, cache, trust_remote_code=c.trust_remote_code)
    try:
        if corpus is None:
            n_docs = c.n_docs if c.n_docs is not None else cfg.generation.n_docs
            corpus = cached_corpus(model, replace(cfg.generation, n_docs=n_docs))
        labels = TopicLabels(topics.labels, topics.names) if topics is not None else None
        rows = []
        if cfg.stages.likelihood:
            rows.append(
                cached_likelihood(model, prefs, cfg.likelihood, slices=cfg.slices, topics=labels)
            )
        if cfg.stages.transfer:
            rows.append(cached_transfer(model, prefs, cfg.transfer, topics=labels))
    finally:
        model.release()
    return corpus, rows


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
    this process are refused by the semantic stage's sharded builder.
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
            build_sharded_lexical_indexes(
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
        same_candidate = len(old.name) == len(target.name)
        if old != target and old.is_dir() and same_candidate and foreign_entries(old) == []:
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
