"""Likelihood scoring of a sharded corpus by one model, in an actor pool on any engine
(:mod:`simscope.engine`: local or Ray).

Each worker loads the model once (:func:`simscope.probe.model.load_model`; on Ray an actor,
which may hold a GPU) and scores its units' texts with the probe stage's
:func:`~simscope.probe.likelihood.score_texts`, writing the per-text arrays as ``.npy``
parts under ``work_dir``; the driver concatenates them in row order. The result is the
:class:`~simscope.probe.likelihood.TextScores` that ``score_texts`` gives on the whole corpus
in memory (equal up to floating-point differences between batch compositions).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
)
from simscope.probe.likelihood import LikelihoodConfig, TextScores, score_texts
from simscope.storage import slug

_FIELDS = ("mean_logprob_first_k", "bits_per_byte", "n_tokens", "n_bytes")
_READ_DOCS = 1024


def score_sharded_corpus(
    shards: CorpusShards,
    model: str | Path,
    work_dir: Path,
    engine: Engine,
    cfg: LikelihoodConfig,
    *,
    device: str = "auto",
    dtype: str = "auto",
    revision: str | None = None,
    num_gpus: float = 0.0,
    progress: bool = True,
) -> TextScores:
    """Per-text likelihood scores of the corpus's rows under ``model``, in row order.

    ``work_dir`` holds the parts while the run lasts (on a cluster: storage every node sees).
    """
    corpus_model = first_model(shards)
    units = plan_units(shards, engine.unit_docs)
    parts = Path(work_dir) / f".likelihood-{slug(str(model))}-{os.getpid()}.incomplete"
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    try:
        summaries = engine.map_units_stateful(
            _ScoreTaskFactory(str(model), cfg, device, dtype, revision, str(parts)),
            units,
            desc=f"score {model}",
            num_gpus=num_gpus,
            progress=progress,
        )
        check_corpus(summaries, units, corpus_model)
        arrays = {
            f: np.concatenate([np.load(part_path(parts, u, f)) for u in range(len(units))])
            for f in _FIELDS
        }
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    return TextScores(**arrays)


@dataclass(frozen=True)
class _ScoreTaskFactory:
    """Built once per worker: loads the model, returns the unit function."""

    model: str
    cfg: LikelihoodConfig
    device: str
    dtype: str
    revision: str | None
    parts: str

    def __call__(self) -> _ScoreTask:
        from simscope.probe.model import load_model

        lm = load_model(self.model, device=self.device, dtype=self.dtype, revision=self.revision)
        return _ScoreTask(lm, self.cfg, Path(self.parts))


class _ScoreTask:
    def __init__(self, lm: Any, cfg: LikelihoodConfig, parts: Path) -> None:
        self.lm, self.cfg, self.parts = lm, cfg, parts

    def __call__(self, unit: ShardUnit) -> Summary:
        scan = CorpusScan(unit)
        out: dict[str, list[np.ndarray]] = {f: [] for f in _FIELDS}
        for batch in read_unit(unit, _READ_DOCS):
            scan.update(batch)
            scores = score_texts(self.lm, batch.texts, self.cfg, progress=False)
            for f in _FIELDS:
                out[f].append(getattr(scores, f))
        for f in _FIELDS:
            array = np.concatenate(out[f]) if out[f] else np.empty(0)
            save_part(part_path(self.parts, unit.index, f), array)
        return {**scan.summary(), "model_revision": getattr(self.lm, "revision", None)}
