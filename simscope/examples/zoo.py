"""A zoo of tiny causal LMs with known pretraining, each fine-tuned into a reward model: the
ground truth that ``simscope demo`` and ``benchmarks/bench_zoo.py`` check the tool against.

**The preference task.** HH-RLHF's harmlessness labels leave models this small at chance, so
the task is built from the same real dialogue text, in a form where what a base model learned
in pretraining decides how good a reward model it becomes: the *chosen* response is a real
assistant reply, the *rejected* one is the same reply with ``swaps`` pairs of neighbouring
words exchanged. Telling them apart needs a sense of English word order in dialogue, which a
model pretrained on dialogue has, one pretrained on Shakespeare has less of (other English),
and one pretrained on Python code hardly at all; bigger models learn more of it from the same
text. The reward models see two corrupted versions of each of 250 records' replies (910
pairs). Measured with the zoo's recipe (1,000 pretraining steps): fully fine-tuned accuracy
on 1,000 other pairs from 0.60-0.63 (32-wide models, any mixture) to 0.80 (the 128-wide model
pretrained on dialogue), each +- 0.03; at 64 wide, dialogue 0.71 against 0.65-0.66 for code
or Shakespeare (benchmarks/README.md, bench_zoo).

**The models.** Sizes ``s`` (32-wide, 1 layer), ``m`` (64, 2) and ``l`` (128, 4) times
mixtures of three real domains: dialogue (HH-RLHF transcripts 1000-2311, never preference
data), Shakespeare and Python standard-library source. A tenth of each domain is held out of
every mixture as the "generic" text whose loss stands in for a public benchmark.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from simscope.examples.data import DemoCorpora, demo_corpora, hh_records, mixture
from simscope.examples.reward import RewardConfig, RewardResult, train_reward_model
from simscope.probe.tiny import TinyLMConfig, train_tiny_lm
from simscope.progress import stage
from simscope.storage import atomic_file, hash_file, hash_texts

logger = logging.getLogger(__name__)

SIZES: Mapping[str, TinyLMConfig] = {
    "s": TinyLMConfig(n_embd=32, n_layer=1, n_head=2, steps=1000),
    "m": TinyLMConfig(n_embd=64, n_layer=2, n_head=2, steps=1000),
    "l": TinyLMConfig(n_embd=128, n_layer=4, n_head=4, steps=1000),
}
MIXTURES: Mapping[str, Mapping[str, float]] = {
    "dialogue": {"dialogue": 1.0},
    "dialogue-bard": {"dialogue": 0.5, "shakespeare": 0.5},
    "bard-code": {"shakespeare": 0.5, "code": 0.5},
    "code": {"code": 1.0},
    "bard": {"shakespeare": 1.0},
}
PRETRAIN_CHARS = 600_000
HELD_OUT_SHARE = 0.1

# Which HH-RLHF records make which pairs (records 1000-2311 are dialogue pretraining text).
PROFILE_RECORDS = range(0, 150)
"""The team's preference data: what simscope profiles each candidate against."""
RM_TRAIN_RECORDS = range(150, 400)
RM_TEST_RECORDS = range(400, 1000)
SWAPS = 6
"""Neighbouring-word swaps per rejected reply: with 2, every tiny RM stayed near chance
(0.52-0.57); a full shuffle was 0.94-0.96 for every model (nothing left to learn)."""


@dataclass(frozen=True)
class ZooModel:
    """One tiny LM of the zoo: a size, a pretraining mixture and a schedule."""

    name: str
    size: str
    mixture: Mapping[str, float]
    lm: TinyLMConfig = field(default_factory=TinyLMConfig)

    @property
    def params(self) -> int:
        """Parameters of the GPT-2 it trains (embeddings included, tied head once)."""
        c = self.lm
        block = 12 * c.n_embd**2 + 13 * c.n_embd
        return c.vocab_size * c.n_embd + c.n_positions * c.n_embd + c.n_layer * block + 2 * c.n_embd


def zoo(
    sizes: Sequence[str] = tuple(SIZES),
    mixtures: Sequence[str] = tuple(MIXTURES),
    steps: int | None = None,
) -> list[ZooModel]:
    """Every (size, mixture) model, named ``<mixture>-<size>``."""
    out = []
    for m in mixtures:
        for s in sizes:
            lm = SIZES[s] if steps is None else replace(SIZES[s], steps=steps)
            out.append(ZooModel(f"{m}-{s}", s, MIXTURES[m], lm))
    return out


# ---- the preference task --------------------------------------------------------------------


def _split_reply(transcript: str) -> tuple[str, str]:
    cut = transcript.rfind("\n\nAssistant:") + len("\n\nAssistant:")
    return transcript[:cut], transcript[cut:].strip()


def swap_words(text: str, swaps: int, rng: np.random.Generator) -> str:
    """``text`` with ``swaps`` pairs of neighbouring words exchanged (whitespace normalised)."""
    words = text.split()
    for _ in range(swaps):
        j = int(rng.integers(0, len(words) - 1))
        words[j], words[j + 1] = words[j + 1], words[j]
    return " ".join(words)


def swap_pairs(
    records: Sequence[Mapping[str, str]],
    indices: Sequence[int],
    *,
    swaps: int = SWAPS,
    min_words: int = 6,
    seed: int = 0,
) -> list[dict[str, str]]:
    """Preference pairs of the zoo's task: per record, its chosen and its rejected HH reply
    (both real text), each against itself with ``swaps`` neighbouring words exchanged.

    Pairs as ``pair_id, prompt, chosen, rejected`` (the ``pairs`` schema); replies shorter
    than ``min_words`` or unchanged by the swaps are left out. Seeded per record, so a record
    gives the same pairs in any selection of records.
    """
    out = []
    for i in indices:
        rng = np.random.default_rng([seed, i])
        for key in ("chosen", "rejected"):
            prompt, reply = _split_reply(records[i][key])
            if len(reply.split()) < min_words:
                continue
            bad = swap_words(reply, swaps, rng)
            if bad == " ".join(reply.split()):
                continue
            out.append(
                {
                    "pair_id": f"hh{i}-{key}",
                    "prompt": prompt,
                    "chosen": " ".join(reply.split()),
                    "rejected": bad,
                }
            )
    return out


def rm_train_pairs(records: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """The reward models' training pairs: two corruption draws of each training reply."""
    return [p for seed in (0, 1) for p in swap_pairs(records, RM_TRAIN_RECORDS, seed=seed)]


def rm_test_pairs(records: Sequence[Mapping[str, str]], n: int = 1000) -> list[dict[str, str]]:
    """The pairs a reward model's accuracy is measured on (never trained on)."""
    return swap_pairs(records, RM_TEST_RECORDS)[:n]


def as_texts(pairs: Sequence[Mapping[str, str]]) -> list[tuple[str, str]]:
    """(prompt + chosen, prompt + rejected): how a reward model sees a pair."""
    return [(f"{p['prompt']} {p['chosen']}", f"{p['prompt']} {p['rejected']}") for p in pairs]


# ---- pretraining ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ZooCorpora:
    """The pretraining pools and the held-out generic text of each domain."""

    pretrain: DemoCorpora
    held_out: DemoCorpora

    def generic_text(self, n_chars: int = 60_000) -> list[str]:
        """Held-out documents, an equal share of characters from each domain."""
        return mixture(
            self.held_out, {"dialogue": 1 / 3, "shakespeare": 1 / 3, "code": 1 / 3}, n_chars, 0
        )


def zoo_corpora() -> ZooCorpora:
    """The demo's three domains with the last tenth of each held out of pretraining."""
    c = demo_corpora()
    parts = {}
    for name in ("dialogue", "shakespeare", "code"):
        docs = c.domain(name)
        cut = len(docs) - max(1, int(HELD_OUT_SHARE * len(docs)))
        parts[name] = (docs[:cut], docs[cut:])
    return ZooCorpora(
        DemoCorpora(*(parts[n][0] for n in ("dialogue", "shakespeare", "code"))),
        DemoCorpora(*(parts[n][1] for n in ("dialogue", "shakespeare", "code"))),
    )


def pretraining_texts(model: ZooModel, corpora: ZooCorpora, seed: int) -> list[str]:
    """The documents ``model`` is pretrained on (its known mixture)."""
    return mixture(corpora.pretrain, model.mixture, PRETRAIN_CHARS, seed)


def train_zoo(
    models: Sequence[ZooModel],
    root: Path,
    corpora: ZooCorpora,
    *,
    seed: int = 0,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, Path]:
    """Train each model into ``root/<name>`` (reused when its recipe is unchanged), on
    ``workers`` processes of one thread each (tiny models gain nothing from threads)."""
    out, todo = {}, []
    for m in models:
        target = Path(root) / m.name
        marker = target / "simscope_tiny.json"
        if marker.is_file() and json.loads(marker.read_text()) == {"seed": seed, **asdict(m.lm)}:
            out[m.name] = target
        else:
            todo.append((m, target))
    jobs = [(pretraining_texts(m, corpora, seed), target, seed, m.lm) for m, target in todo]
    for (m, _), path in zip(
        todo,
        _map(
            _train_one,
            jobs,
            workers,
            desc="pretraining tiny LMs",
            progress=progress,
            labels=[m.name for m, _ in todo],
        ),
        strict=True,
    ):
        out[m.name] = path
    return {m.name: out[m.name] for m in models}


def _train_one(job: tuple[list[str], Path, int, TinyLMConfig]) -> Path:
    texts, target, seed, config = job
    return train_tiny_lm(texts, target, seed=seed, config=config, overwrite=True)


def _map(
    fn: Any,
    jobs: Sequence[Any],
    workers: int,
    *,
    desc: str,
    progress: bool,
    labels: Sequence[str],
) -> list[Any]:
    """``fn`` over ``jobs`` in order, on ``workers`` fresh processes when there are several;
    the progress line names the job running (one at a time) or the one last finished."""
    if not jobs:
        return []
    if workers <= 1 or len(jobs) == 1:
        return [
            fn(jobs[i])
            for i in stage(
                range(len(jobs)), desc, unit="models", enabled=progress, name_of=labels.__getitem__
            )
        ]
    # "spawn": a forked child of a process that has run torch can hang in its thread pools.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(fn, job) for job in jobs]
        results: list[Any] = [None] * len(jobs)
        pending = dict(enumerate(futures))
        finished = ["started"]
        bar = stage(
            range(len(jobs)),
            desc,
            unit="models",
            enabled=progress,
            name_of=lambda _: f"{workers} at a time, last done: {finished[-1]}",
        )
        for _ in bar:
            done = next(iter(wait(pending.values(), return_when=FIRST_COMPLETED).done))
            i = next(k for k, f in pending.items() if f is done)
            results[i] = done.result()
            finished.append(labels[i])
            del pending[i]
        return results


# ---- reward models -------------------------------------------------------------------------


def measure_reward_models(
    models: Mapping[str, Path],
    train: Sequence[Mapping[str, str]],
    test: Sequence[Mapping[str, str]],
    cache: Path,
    config: RewardConfig | None = None,
    *,
    seed: int = 0,
    workers: int = 1,
    progress: bool = False,
) -> dict[str, RewardResult]:
    """Full fine-tuned RM accuracy of each model, cached in ``cache`` (JSON) by everything
    that decides it: the weights, the pairs, the recipe and the seed."""
    config = config or RewardConfig()
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    data_key = hash_texts([t for pair in (*as_texts(train), *as_texts(test)) for t in pair])
    keys = {
        name: hash_texts(
            [hash_file(path / "model.safetensors"), data_key, json.dumps(asdict(config)), str(seed)]
        )
        for name, path in models.items()
    }
    todo = [name for name in models if known.get(name, {}).get("key") != keys[name]]
    jobs = [(models[n], as_texts(train), as_texts(test), config, seed) for n in todo]
    for name, result in zip(
        todo,
        _map(
            _reward_one,
            jobs,
            workers,
            desc="fine-tuning reward models",
            progress=progress,
            labels=todo,
        ),
        strict=True,
    ):
        known[name] = {"key": keys[name], **asdict(result)}
        logger.info("%s: RM accuracy %.3f", name, result.accuracy)
    if todo:
        with atomic_file(cache) as tmp:
            tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    return {
        name: RewardResult(**{k: v for k, v in known[name].items() if k != "key"})
        for name in models
    }


def _reward_one(job: tuple[Path, Any, Any, RewardConfig, int]) -> RewardResult:
    path, train, test, config, seed = job
    return train_reward_model(path, train, test, config, seed=seed, progress=False)


GENERIC_MAX_TOKENS = 128


def public_benchmarks(
    models: Mapping[str, Path], texts: Sequence[str], cache: Path
) -> dict[str, dict[str, float]]:
    """The zoo's "public benchmarks" of each model: ``params_B`` (its parameter count, in
    billions, as a leaderboard gives it) and ``generic_bpb`` (bits per byte on ``texts``,
    held-out text of every domain: lower is better), cached in ``cache`` (JSON) by the
    weights and the texts."""
    from simscope.probe.likelihood import LikelihoodConfig, score_texts
    from simscope.probe.model import load_model

    known = json.loads(cache.read_text()) if cache.is_file() else {}
    text_key = hash_texts([*texts, str(GENERIC_MAX_TOKENS)])
    out, changed = {}, False
    for name, path in models.items():
        key = hash_texts([hash_file(path / "model.safetensors"), text_key])
        if known.get(name, {}).get("key") != key:
            changed = True
            lm = load_model(path, device="cpu", dtype="float32", name=name)
            cfg = LikelihoodConfig(max_tokens=GENERIC_MAX_TOKENS)
            scores = score_texts(lm, texts, cfg, progress=False)
            n_bytes = scores.n_bytes.astype(float)
            known[name] = {
                "key": key,
                "params_B": sum(p.numel() for p in lm.model.parameters()) / 1e9,
                "generic_bpb": float(np.nansum(scores.bits_per_byte * n_bytes) / n_bytes.sum()),
            }
        out[name] = {k: v for k, v in known[name].items() if k != "key"}
    if changed:
        with atomic_file(cache) as tmp:
            tmp.write_text(json.dumps(known, indent=1, sort_keys=True))
    return out


def task_records() -> list[dict[str, str]]:
    """The bundled HH-RLHF records the task pairs are made from."""
    return hh_records()
