"""The demo's bundled real corpora and the known mixtures its candidate models learn from.

Three domains: dialogue (HH-RLHF transcripts never used as preference data), Shakespeare,
and Python standard-library source. A candidate's pretraining mixture is a known share of
each, so the demo's answer can be checked against the truth.
"""

from __future__ import annotations

import gzip
import json
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

HH_FILE = "hh-rlhf-harmless-base-test.jsonl.gz"
SHAKESPEARE_FILE = "tinyshakespeare.txt.gz"

PREFERENCE_PAIRS = range(0, 300)
RM_TRAIN_PAIRS = range(300, 800)
RM_TEST_PAIRS = range(800, 1000)
DIALOGUE_PAIRS = range(1000, 2312)


def data_path(name: str) -> Path:
    """Path of a bundled data file."""
    return Path(str(resources.files("simscope.examples") / "data" / name))


def hh_records() -> list[dict[str, str]]:
    """All bundled HH-RLHF pairs, in file order."""
    with gzip.open(data_path(HH_FILE), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def shakespeare_docs() -> list[str]:
    """Shakespeare speeches (blank-line separated blocks of at least 8 words)."""
    with gzip.open(data_path(SHAKESPEARE_FILE), "rt", encoding="utf-8") as f:
        text = f.read()
    return [p.strip() for p in text.split("\n\n") if len(p.split()) >= 8]


def stdlib_docs(max_files: int = 400, max_chars: int = 4000) -> list[str]:
    """Python standard-library source, cut into pieces of at most ``max_chars`` characters."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: list[str] = []
    for path in sorted(root.glob("*.py"))[:max_files]:
        text = path.read_text(encoding="utf-8", errors="replace")
        docs.extend(text[i : i + max_chars] for i in range(0, len(text), max_chars))
    return [d for d in docs if len(d.split()) >= 8]


@dataclass(frozen=True)
class DemoCorpora:
    """The three domains, as lists of documents."""

    dialogue: list[str]
    shakespeare: list[str]
    code: list[str]

    def domain(self, name: str) -> list[str]:
        return {"dialogue": self.dialogue, "shakespeare": self.shakespeare, "code": self.code}[name]


def demo_corpora() -> DemoCorpora:
    records = hh_records()
    dialogue = [records[i]["chosen"] for i in DIALOGUE_PAIRS]
    return DemoCorpora(dialogue, shakespeare_docs(), stdlib_docs())


def mixture(
    corpora: DemoCorpora, shares: Mapping[str, float], n_chars: int, seed: int
) -> list[str]:
    """Documents drawn (without replacement, seeded) so that each domain contributes its
    ``share`` of about ``n_chars`` characters."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for name, share in sorted(shares.items()):
        docs = corpora.domain(name)
        budget = share * n_chars
        for i in rng.permutation(len(docs)):
            if budget <= 0:
                break
            out.append(docs[i])
            budget -= len(docs[i])
    order = rng.permutation(len(out))
    return [out[i] for i in order]
