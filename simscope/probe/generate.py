"""The generation probe: sample a causal LM into a ProbeCorpus, resumably.

Documents are numbered 0..n_docs-1 and cut into batches of ``batch_size``; document ``i``
starts from the model's start token followed by ``prefixes[i % len(prefixes)]`` (the empty
prefix = unconditional). Batches are left-padded and sampled with plain ancestral sampling
(temperature, top-p; no top-k, no repetition penalty, whatever the model's own
generation_config says), each batch under its own seed derived from (seed, batch index), so
a batch's samples do not depend on which batches ran before it in this process.

Batches are written in chunks to ``<out>.incomplete/`` beside the output, with the settings
in ``settings.json``. A rerun with the same settings skips the chunks already there, so an
interrupted run ends with the same corpus as an uninterrupted one; a rerun with other
settings is refused. The finished corpus is written atomically and the directory removed.
Identical output needs the same settings, device and dtype (recorded in the metadata).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm

from simscope.checks import check_seed
from simscope.errors import SimscopeError
from simscope.probe.corpus import read_probe_corpus, write_probe_corpus
from simscope.probe.model import LoadedModel, load_model
from simscope.records import PROBE_SCHEMA
from simscope.storage import atomic_file, read_parquet, write_parquet

logger = logging.getLogger(__name__)

SETTINGS = "settings.json"


@dataclass(frozen=True)
class GenerationConfig:
    """What to sample; every field is stored in the corpus metadata."""

    n_docs: int = 1000
    batch_size: int = 16
    max_new_tokens: int = 256
    temperature: float = 1.0
    """0 = greedy decoding."""
    top_p: float = 1.0
    prefixes: tuple[str, ...] = ("",)
    """Neutral prefixes, used in turn; "" = unconditional from the start token."""
    seed: int = 0
    chunk_docs: int = 256
    """Documents per chunk on disk (rounded up to whole batches): the unit of resumption."""

    def __post_init__(self) -> None:
        for key in ("n_docs", "batch_size", "max_new_tokens", "chunk_docs"):
            if getattr(self, key) < 1:
                raise SimscopeError(f"generation.{key}: expected >= 1, found {getattr(self, key)}")
        check_seed(self.seed, "generation.seed")
        if self.temperature < 0:
            raise SimscopeError(f"generation.temperature: expected >= 0, found {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise SimscopeError(f"generation.top_p: expected in (0, 1], found {self.top_p}")
        if not self.prefixes:
            raise SimscopeError(
                'generation.prefixes: expected at least one prefix ("" = unconditional), found none'
            )

    @property
    def batches_per_chunk(self) -> int:
        return max(1, -(-self.chunk_docs // self.batch_size))


def batch_seed(seed: int, batch_index: int) -> int:
    """The torch seed of one batch: a function of the run's seed and the batch's index only."""
    return int(np.random.SeedSequence([seed, batch_index]).generate_state(1, np.uint32)[0])


def generate_corpus(
    model: str | Path | LoadedModel,
    out_path: Path,
    config: GenerationConfig = GenerationConfig(),
    *,
    name: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> pl.DataFrame:
    """Sample ``config.n_docs`` documents from ``model`` into a ProbeCorpus at ``out_path``.

    ``model`` is a local directory, a model id in the local Hugging Face cache, or a model
    already loaded. ``name`` (default: the model reference) fills the ``model`` column.
    Resumes from ``<out_path>.incomplete/`` when an earlier run with the same settings was
    interrupted. Returns the corpus.
    """
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise SimscopeError(f"{out_path}: already exists; remove it or pass --overwrite")
    lm = (
        model
        if isinstance(model, LoadedModel)
        else load_model(
            model,
            device=device,
            dtype=dtype,
            revision=revision,
            trust_remote_code=trust_remote_code,
            name=name,
        )
    )
    _check_context(lm, config)
    model_name = name or lm.name
    settings = {
        "model": model_name,
        "model_revision": lm.revision,
        "device": lm.device,
        "dtype": lm.dtype,
        "origin": "generated",
        **asdict(config),
        "prefixes": list(config.prefixes),
    }
    work = out_path.with_name(f"{out_path.name}.incomplete")
    done = _resume_state(work, settings, config)
    n_batches = -(-config.n_docs // config.batch_size)
    bar = tqdm(
        total=config.n_docs,
        initial=min(done * config.batch_size, config.n_docs),
        desc=f"generate {model_name}",
        unit="doc",
        disable=not progress,
    )
    new_tokens = 0
    started = time.perf_counter()
    for first in range(done, n_batches, config.batches_per_chunk):
        last = min(first + config.batches_per_chunk, n_batches)
        texts: list[str] = []
        for b in range(first, last):
            batch_texts, n_new = sample_batch(lm, config, b)
            texts.extend(batch_texts)
            new_tokens += n_new
            bar.update(len(batch_texts))
            rate = new_tokens / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix_str(f"{rate:,.0f} tok/s")
        lo = first * config.batch_size
        chunk = pl.DataFrame({"index": np.arange(lo, lo + len(texts)), "text": texts})
        write_parquet(chunk, work / f"chunk-{first:07d}-{last:07d}.parquet")
    bar.close()
    corpus = _assemble(work, model_name, config)
    n_empty = config.n_docs - corpus.height
    if n_empty:
        logger.info("%d of %d samples were empty and are left out", n_empty, config.n_docs)
    write_probe_corpus(corpus, out_path, {**settings, "n_empty_dropped": n_empty})
    shutil.rmtree(work, ignore_errors=True)
    return read_probe_corpus(out_path)


def _resume_state(work: Path, settings: dict[str, Any], config: GenerationConfig) -> int:
    """The number of batches already on disk in ``work`` (created when missing)."""
    settings_file = work / SETTINGS
    if not settings_file.is_file():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        with atomic_file(settings_file) as tmp:
            tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return 0
    try:
        before = json.loads(settings_file.read_text())
    except json.JSONDecodeError:
        before = {}
    diffs = [
        f"{k}: earlier run {before.get(k)!r}, now {v!r}"
        for k, v in settings.items()
        if before.get(k) != v
    ]
    if diffs:
        raise SimscopeError(
            f"{work}: an interrupted run with other settings is there ({'; '.join(diffs)}); "
            "rerun with its settings to resume it, or delete the directory to start over"
        )
    done = 0
    for path in sorted(work.glob("chunk-*.parquet")):
        first, last = (int(x) for x in path.stem.split("-")[1:])
        if first != done:
            break
        done = last
    logger.info("resuming %s after %d batches", work, done)
    return done


def _prompt_ids(lm: LoadedModel, prefix: str) -> list[int]:
    """The start token, then the prefix's tokens: what each document is sampled from."""
    if not prefix:
        return [lm.start_token_id]
    return [lm.start_token_id, *lm.tokenizer(prefix, add_special_tokens=False)["input_ids"]]


def _check_context(lm: LoadedModel, config: GenerationConfig) -> None:
    """Refuse a prompt plus ``max_new_tokens`` longer than the model's positions."""
    context = lm.context
    if context is None:
        return  # the model does not say: transformers decides
    prompt = max(len(_prompt_ids(lm, p)) for p in config.prefixes)
    if prompt + config.max_new_tokens > context:
        raise SimscopeError(
            f"generation.max_new_tokens (--max-new-tokens): {lm.name} has {context} positions and "
            f"its longest prompt takes {prompt}, so at most {context - prompt} new tokens fit; "
            f"found {config.max_new_tokens}"
        )


def sample_batch(lm: LoadedModel, config: GenerationConfig, batch: int) -> tuple[list[str], int]:
    """Sample the documents of batch ``batch``: their texts and the new tokens generated."""
    import torch
    from transformers import GenerationConfig as HFGenerationConfig

    lo = batch * config.batch_size
    hi = min(lo + config.batch_size, config.n_docs)
    prefixes = [config.prefixes[i % len(config.prefixes)] for i in range(lo, hi)]
    tok = lm.tokenizer
    start = lm.start_token_id
    eos = tok.eos_token_id if tok.eos_token_id is not None else start
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    prompts = [_prompt_ids(lm, p) for p in prefixes]
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p) :] = 1
    sample = config.temperature > 0
    gen_cfg = HFGenerationConfig(
        do_sample=sample,
        temperature=config.temperature if sample else None,
        top_p=config.top_p if sample else None,
        # Every other filter set to its neutral value explicitly: a field left unset would be
        # filled from the model's own generation_config (chat-style top_k, min_p, penalties).
        top_k=0 if sample else None,
        min_p=0.0 if sample else None,
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        max_new_tokens=config.max_new_tokens,
        min_new_tokens=0,
        pad_token_id=pad,
        eos_token_id=eos,
        bos_token_id=start,
    )
    torch.manual_seed(batch_seed(config.seed, batch))
    with torch.inference_mode():
        out = lm.model.generate(
            input_ids=ids.to(lm.device),
            attention_mask=mask.to(lm.device),
            generation_config=gen_cfg,
        )
    new = out[:, width:].cpu().tolist()
    texts: list[str] = []
    n_new = 0
    for prefix, seq in zip(prefixes, new, strict=True):
        if eos in seq:
            seq = seq[: seq.index(eos)]
            n_new += 1
        n_new += len(seq)
        texts.append(prefix + tok.decode(seq, skip_special_tokens=True))
    return texts, n_new


def _assemble(work: Path, model_name: str, config: GenerationConfig) -> pl.DataFrame:
    chunks = sorted(work.glob("chunk-*.parquet"))
    frame = pl.concat(
        [
            read_parquet(
                p,
                expected="a chunk of generated documents written by an earlier run",
                fix=f"delete {work} and generate again",
            )
            for p in chunks
        ]
    ).sort("index")
    if frame.height != config.n_docs or frame.get_column("index").to_list() != list(
        range(config.n_docs)
    ):
        raise SimscopeError(
            f"{work}: chunks hold {frame.height} of {config.n_docs} documents, not in order; "
            "delete the directory and generate again"
        )
    width = max(6, len(str(config.n_docs - 1)))
    return (
        frame.filter(pl.col("text").str.strip_chars() != "")
        .select(
            pl.lit(model_name).alias("model"),
            pl.format("gen-{}", pl.col("index").cast(pl.String).str.zfill(width)).alias("doc_id"),
            pl.col("text"),
            pl.lit("generated").alias("origin"),
        )
        .cast(PROBE_SCHEMA)
    )
