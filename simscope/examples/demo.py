"""``simscope demo``: the whole pipeline on bundled real data, with answers that are known.

Eight tiny causal LMs of the zoo (``simscope.examples.zoo``: two sizes, pretraining mixtures of
real dialogue, Shakespeare and Python source) are the candidates. The team's preference data is
the zoo's task (a real HH-RLHF reply against the same reply with neighbouring words swapped).
Six candidates are *measured*: each is fully fine-tuned into a reward model and its accuracy
on held-out pairs goes into ``rm_results.csv``, as a team's past RM runs would. Two are
*untried*: the selection must rank them. Their reward models are trained too, after the run,
only to show the truth beside the decision (``DemoResult.truth``); nothing of them reaches
the selection. ``benchmarks.csv`` holds what a leaderboard would (size, bits per byte on
held-out generic text). One candidate's probe corpus is imported (a sample of its known
pretraining text) instead of sampled from the model. The demo then writes a run config and
runs ``simscope run`` on it, exactly as a user would.

Measured (seed 0): the six measured accuracies span 0.60-0.66 with intervals of +-0.03, the
untried ``tiny-dialogue-m`` (0.708) and ``tiny-code-s`` (0.601) are predicted in that order,
and the verdict is "no reliable ranking": six models this close cannot show that any
predictor orders held-out pairs better than chance. The split was chosen so that both
untried models differ in size and in closeness to the task; with the two 64-wide dialogue
and Shakespeare models untried instead, size ties them and no measured signal separates them.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from simscope.config import load_run_config
from simscope.errors import SimscopeError
from simscope.examples.reward import RewardResult
from simscope.examples.zoo import (
    MIXTURES,
    PROFILE_RECORDS,
    SIZES,
    ZooCorpora,
    ZooModel,
    measure_reward_models,
    pretraining_texts,
    public_benchmarks,
    rm_test_pairs,
    rm_train_pairs,
    swap_pairs,
    task_records,
    train_zoo,
    zoo_corpora,
)
from simscope.pipeline import RunResult, run
from simscope.probe.model import usable_cpus
from simscope.storage import atomic_file, outdated_indexes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoCandidate:
    """A zoo model in the demo: measured (its RM accuracy is given) or untried."""

    mixture: str
    size: str
    measured: bool = True
    imported: bool = False

    @property
    def name(self) -> str:
        return f"tiny-{self.mixture}-{self.size}"

    def model(self) -> ZooModel:
        return ZooModel(self.name, self.size, MIXTURES[self.mixture], SIZES[self.size])


CANDIDATES = (
    DemoCandidate("dialogue", "s"),
    DemoCandidate("bard", "s"),
    DemoCandidate("code", "m"),
    DemoCandidate("bard", "m"),
    DemoCandidate("bard-code", "m", imported=True),
    DemoCandidate("dialogue-bard", "m"),
    DemoCandidate("dialogue", "m", measured=False),
    DemoCandidate("code", "s", measured=False),
)
IMPORTED_DOCS = 150


@dataclass
class DemoResult:
    """The run's result, and the held-out truth: the untried candidates' measured accuracy."""

    run: RunResult
    truth: dict[str, RewardResult]


def run_demo(
    work_dir: Path, *, seed: int = 0, rebuild: bool = False, progress: bool = True
) -> DemoResult:
    """Prepare the bundled example under ``work_dir`` (cached) and run the pipeline on it.

    ``work_dir`` is the demo's own cache: indexes an older simscope wrote there are deleted
    and rebuilt; ``rebuild`` rebuilds every index.
    """
    start = time.perf_counter()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in outdated_indexes(work_dir / "indexes"):
        logger.info("deleting %s (written by an older simscope)", stale)
        shutil.rmtree(stale)
    records = task_records()
    prefs_path = work_dir / "preferences.jsonl"
    with atomic_file(prefs_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for pair in swap_pairs(records, PROFILE_RECORDS):
            f.write(json.dumps(pair) + "\n")

    corpora = zoo_corpora()
    workers = min(2, usable_cpus())
    models = {c.name: c.model() for c in CANDIDATES}
    paths = train_zoo(
        list(models.values()),
        work_dir / "models",
        corpora,
        seed=seed,
        workers=workers,
        progress=progress,
    )
    for c in CANDIDATES:
        if c.imported:
            _write_imported(
                work_dir / "imported" / f"{c.name}.jsonl", models[c.name], corpora, seed
            )
    logger.info("models ready: %.1f s", time.perf_counter() - start)

    train, test = rm_train_pairs(records), rm_test_pairs(records)
    measured = {c.name: paths[c.name] for c in CANDIDATES if c.measured}
    results = measure_reward_models(
        measured,
        train,
        test,
        work_dir / "rm_results.cache.json",
        seed=seed,
        workers=workers,
        progress=progress,
    )
    rm_path = work_dir / "rm_results.csv"
    with atomic_file(rm_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "metric", "score"])
        w.writerows((name, "accuracy", r.accuracy) for name, r in results.items())
    logger.info("reward models measured: %.1f s", time.perf_counter() - start)

    # What a team finds on a leaderboard: size, and loss on generic text (no RM result)
    benchmarks = public_benchmarks(
        paths, corpora.generic_text(), work_dir / "benchmarks.cache.json"
    )
    bench_path = work_dir / "benchmarks.csv"
    with atomic_file(bench_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "benchmark", "score"])
        w.writerows(
            (name, bench, score)
            for name, scores in sorted(benchmarks.items())
            for bench, score in sorted(scores.items())
        )

    config_path = work_dir / "simscope.toml"
    config_path.write_text(_config_text(rm_path.name, seed))
    result = run(load_run_config(config_path), rebuild=rebuild, progress=progress)
    # The truth, measured only now: the selection above never saw it.
    untried = {c.name: paths[c.name] for c in CANDIDATES if not c.measured}
    truth = measure_reward_models(
        untried,
        train,
        test,
        work_dir / "truth.cache.json",
        seed=seed,
        workers=workers,
        progress=progress,
    )
    return DemoResult(result, truth)


def _write_imported(path: Path, model: ZooModel, corpora: ZooCorpora, seed: int) -> None:
    """A sample of the candidate's known pretraining text, as a corpus made elsewhere."""
    if path.is_file():
        return
    texts = pretraining_texts(model, corpora, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for t in texts[:: max(len(texts) // IMPORTED_DOCS, 1)]:
            f.write(json.dumps({"text": t}) + "\n")


def _config_text(rm_file: str, seed: int) -> str:
    lines = [
        "# Written by `simscope demo`: the run config for the bundled example.",
        f"seed = {seed}",
        'out_dir = "run"',
        'indexes_dir = "indexes"',
        "n_boot = 100",
        "",
        "[preferences]",
        'path = "preferences.jsonl"   # real HH-RLHF replies vs the same with words swapped',
        'schema = "pairs"',
        "",
        "[generation]",
        "n_docs = 64",
        "batch_size = 64",
        "max_new_tokens = 96",
        "",
        "[likelihood]",
        "max_tokens = 96",
        "",
        "[transfer]",
        "max_tokens = 96",
        "",
        "[semantic]",
        "n_boot = 100",
        "mauve_seeds = [0, 1]",
        "max_topics = 2",
        "",
        "[select]",
        f'rm_results = "{rm_file}"   # measured: fully fine-tuned RM accuracy on held-out pairs',
        'target = "accuracy"',
        'benchmarks = "benchmarks.csv"   # size (params_B) and bits per byte on generic text',
        "suggest = 1",
        "",
    ]
    for c in CANDIDATES:
        lines += ["[[candidates]]", f'name = "{c.name}"', f'model = "models/{c.name}"']
        if c.imported:
            lines += [f'corpus = "imported/{c.name}.jsonl"   # a sample of its pretraining text']
        lines.append("")
    return "\n".join(lines)


def default_work_dir() -> Path:
    """Where the demo keeps its cache: ``$SIMSCOPE_DEMO_DIR`` or ``./simscope-demo``."""
    value = os.environ.get("SIMSCOPE_DEMO_DIR")
    path = Path(value) if value else Path.cwd() / "simscope-demo"
    if path.exists() and not path.is_dir():
        raise SimscopeError(f"{path}: exists and is not a directory; set SIMSCOPE_DEMO_DIR")
    return path
