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

import polars as pl

from simscope import __version__
from simscope.config import CandidateSection, RunConfig
from simscope.engine import CorpusShards, EngineConfig, make_engine, write_corpus_shards
from simscope.errors import SimscopeError
from simscope.lexical.scorer import LexicalScorer, minhash_scales
from simscope.lexical.sharded import build_sharded_lexical_indexes
from simscope.overlap.profile import ProfileConfig, profile_context, profile_rows
from simscope.overlap.scorer import Scorer
from simscope.preferences import load_preferences
from simscope.probe.cached import (
    CandidateModel,
    LikelihoodScorer,
    ProbeCache,
    TransferScorer,
    cached_corpus,
)
from simscope.probe.importer import import_corpus
from simscope.progress import stage
from simscope.records import Candidate, split_probe_corpus
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
from simscope.semantic.index import profile_chunk_words
from simscope.semantic.scorer import SemanticScorer
from simscope.semantic.sharded import build_sharded_semantic_index
from simscope.semantic.topics import fit_topics
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
                rebuild=rebuild,
            )
        clock.lap("topics")
    profile_cfg = ProfileConfig(
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        slices=cfg.slices,
        lexical=replace(cfg.lexical, seed=cfg.seed),
    )
    ctx = profile_context(prefs, profile_cfg, topics)
    cache = ProbeCache(Path(cfg.indexes_dir), seed=cfg.seed, n_boot=cfg.n_boot, rebuild=rebuild)
    model_scorers: list[Scorer] = []
    if cfg.stages.likelihood:
        model_scorers.append(LikelihoodScorer(cfg.likelihood))
    if cfg.stages.transfer:
        model_scorers.append(TransferScorer(cfg.transfer))
    corpora: dict[str, pl.DataFrame] = {}
    profiles: list[pl.DataFrame] = []
    for c in stage(cfg.candidates, "probe", unit="candidates", enabled=progress, name_of=_name):
        model = (
            CandidateModel(c.name, c.model, cache, trust_remote_code=c.trust_remote_code)
            if c.model is not None
            else None
        )
        try:
            corpora[c.name] = _probe_corpus(c, model, cfg)
            if model is not None and model_scorers:
                profiles.append(profile_rows(ctx, [Candidate(c.name, model=model)], model_scorers))
        finally:
            if model is not None:
                model.release()
    clock.lap("probe: corpora, likelihood, transfer")
    if cfg.execution is not None:
        _build_indexes_on_engine(cfg, cfg.execution, prefs, corpora, rebuild, progress)
        clock.lap(f"indexes on the {cfg.execution.kind} engine")
    # Indexes just built on an engine are loaded, not built again.
    rebuild_indexes = rebuild and cfg.execution is None
    lexical = LexicalScorer(
        Path(cfg.indexes_dir), profile_cfg.lexical, rebuild=rebuild_indexes, progress=False
    )
    semantic = SemanticScorer(
        cfg.indexes_dir,
        cfg.semantic,
        seed=cfg.seed,
        n_boot=cfg.n_boot,
        rebuild=rebuild_indexes,
        progress=False,
        slice_texts={s: prefs.get_column(s).to_list() for s in cfg.slices},
        topics=topics,
    )
    overlap_scorers: list[Scorer] = [lexical, *([semantic] if cfg.stages.semantic else [])]
    overlap = "lexical + semantic overlap" if cfg.stages.semantic else "lexical overlap"
    for name in stage(sorted(corpora), overlap, unit="corpora", enabled=progress):
        profiles.append(profile_rows(ctx, [Candidate(name, corpora[name])], overlap_scorers))
    clock.lap("lexical and semantic profile")
    profile = pl.concat(profiles).sort(["model", "slice", "metric", "topic"], nulls_last=False)
    manifests = dict(lexical.manifests)
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
    examples = semantic.examples(corpora) if cfg.stages.semantic else []
    embedding_map = semantic.embedding_map() if cfg.stages.semantic else None
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


def _probe_corpus(
    c: CandidateSection, model: CandidateModel | None, cfg: RunConfig
) -> pl.DataFrame:
    """The candidate's probe corpus: imported, or sampled from its model (cached)."""
    if c.corpus is not None:
        return import_corpus(
            c.corpus, model=c.name, text_field=c.text_field, n_docs=c.n_docs, seed=cfg.seed
        ).corpus
    assert model is not None  # checked in CandidateSection: a model or a corpus
    n_docs = c.n_docs if c.n_docs is not None else cfg.generation.n_docs
    return cached_corpus(model, replace(cfg.generation, n_docs=n_docs))


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
