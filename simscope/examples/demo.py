"""``simscope demo``: the whole pipeline on bundled real data, with answers that are known.

Six tiny causal LMs are trained (seconds each, cached) on known mixtures of three real
domains: dialogue (HH-RLHF transcripts never used as preference data), Shakespeare and Python
standard-library source. Five of them get a measured reward-model accuracy (a Bradley-Terry
reward head on the frozen model, trained on held-out HH-RLHF pairs and tested on others,
see ``reward.py``); the sixth is the
untried candidate the selection must place. One candidate's probe corpus is imported (a sample
of its known pretraining text) instead of sampled. Then the demo writes a run config and runs
``simscope run`` on it, exactly as a user would.
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
from simscope.examples.data import (
    PREFERENCE_PAIRS,
    RM_TEST_PAIRS,
    RM_TRAIN_PAIRS,
    demo_corpora,
    hh_records,
    mixture,
)
from simscope.examples.reward import train_reward_model
from simscope.pipeline import RunResult, run
from simscope.probe.tiny import TinyLMConfig, train_tiny_lm
from simscope.storage import atomic_file, hash_file, hash_texts, outdated_indexes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoCandidate:
    """A tiny LM with a known pretraining mixture."""

    name: str
    mixture: dict[str, float]
    measure_rm: bool = True
    imported: bool = False


CANDIDATES = (
    DemoCandidate("tiny-dialogue", {"dialogue": 1.0}),
    DemoCandidate("tiny-dialogue-bard", {"dialogue": 0.5, "shakespeare": 0.5}, imported=True),
    DemoCandidate("tiny-bard-code", {"shakespeare": 0.5, "code": 0.5}),
    DemoCandidate("tiny-code", {"code": 1.0}),
    DemoCandidate("tiny-bard", {"shakespeare": 1.0}),
    DemoCandidate("tiny-mostly-dialogue", {"dialogue": 0.75, "code": 0.25}, measure_rm=False),
)
PRETRAIN_CHARS = 250_000
RM_TRAIN_N = 200
LM_CONFIG = TinyLMConfig(steps=150)


def run_demo(
    work_dir: Path, *, seed: int = 0, rebuild: bool = False, progress: bool = True
) -> RunResult:
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
    records = hh_records()
    prefs_path = work_dir / "preferences.jsonl"
    if not prefs_path.is_file():
        with atomic_file(prefs_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            for i in PREFERENCE_PAIRS:
                f.write(json.dumps(records[i]) + "\n")

    corpora = demo_corpora()
    models = work_dir / "models"
    for c in CANDIDATES:
        texts = mixture(corpora, c.mixture, PRETRAIN_CHARS, seed)
        if not (models / c.name / "config.json").is_file():
            logger.info("training %s on %s", c.name, c.mixture)
            train_tiny_lm(texts, models / c.name, seed=seed, config=LM_CONFIG, progress=progress)
        if c.imported:
            sample = work_dir / "imported" / f"{c.name}.jsonl"
            if not sample.is_file():
                sample.parent.mkdir(parents=True, exist_ok=True)
                with atomic_file(sample) as tmp, open(tmp, "w", encoding="utf-8") as f:
                    for t in texts[:: max(len(texts) // 150, 1)]:
                        f.write(json.dumps({"text": t}) + "\n")

    logger.info("models ready: %.1f s", time.perf_counter() - start)
    rm_path = _measure_reward_models(work_dir, models, records, seed, progress)
    logger.info("reward models measured: %.1f s", time.perf_counter() - start)
    config_path = work_dir / "simscope.toml"
    config_path.write_text(_config_text(rm_path.name, seed))
    return run(load_run_config(config_path), rebuild=rebuild, progress=progress)


def _measure_reward_models(
    work_dir: Path, models: Path, records: list[dict[str, str]], seed: int, progress: bool
) -> Path:
    """RM accuracy of each measured candidate, cached by the model's weights."""
    train = [(records[i]["chosen"], records[i]["rejected"]) for i in RM_TRAIN_PAIRS][:RM_TRAIN_N]
    test = [(records[i]["chosen"], records[i]["rejected"]) for i in RM_TEST_PAIRS]
    path = work_dir / "rm_results.csv"
    cache = work_dir / "rm_results.cache.json"
    known: dict[str, dict[str, float | str]] = (
        json.loads(cache.read_text()) if cache.is_file() else {}
    )
    rows = []
    for c in CANDIDATES:
        if not c.measure_rm:
            continue
        key = hash_texts(
            [hash_file(models / c.name / "model.safetensors"), str(seed), str(RM_TRAIN_N)]
        )
        if known.get(c.name, {}).get("key") != key:
            result = train_reward_model(models / c.name, train, test, seed=seed, progress=progress)
            known[c.name] = {"key": key, "accuracy": result.accuracy}
            logger.info(
                "%s: RM accuracy %.3f on %d test pairs", c.name, result.accuracy, result.n_test
            )
        rows.append((c.name, "accuracy", known[c.name]["accuracy"]))
    with atomic_file(cache) as tmp:
        tmp.write_text(json.dumps(known, indent=1))
    with atomic_file(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "metric", "score"])
        w.writerows(rows)
    return path


def _config_text(rm_file: str, seed: int) -> str:
    lines = [
        "# Written by `simscope demo`: the run config for the bundled example.",
        f"seed = {seed}",
        'out_dir = "run"',
        'indexes_dir = "indexes"',
        "n_boot = 100",
        "",
        "[preferences]",
        'path = "preferences.jsonl"   # HH-RLHF transcripts (schema detected: hh)',
        "",
        "[generation]",
        "n_docs = 48",
        "batch_size = 48",
        "max_new_tokens = 64",
        "",
        "[likelihood]",
        "max_tokens = 64",
        "",
        "[semantic]",
        "n_boot = 100",
        "mauve_seeds = [0, 1]",
        "max_topics = 2",
        "",
        "[select]",
        f'rm_results = "{rm_file}"   # measured: Bradley-Terry RM accuracy on held-out pairs',
        'target = "accuracy"',
        "n_boot = 300",
        "",
    ]
    for c in CANDIDATES:
        lines += ["[[candidates]]", f'name = "{c.name}"', f'model = "models/{c.name}"']
        if c.imported:
            lines += [
                f'corpus = "imported/{c.name}.jsonl"   # a sample of its known pretraining text'
            ]
        lines.append("")
    return "\n".join(lines)


def default_work_dir() -> Path:
    """Where the demo keeps its cache: ``$SIMSCOPE_DEMO_DIR`` or ``./simscope-demo``."""
    value = os.environ.get("SIMSCOPE_DEMO_DIR")
    path = Path(value) if value else Path.cwd() / "simscope-demo"
    if path.exists() and not path.is_dir():
        raise SimscopeError(f"{path}: exists and is not a directory; set SIMSCOPE_DEMO_DIR")
    return path
