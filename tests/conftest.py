"""Shared fixtures: small real corpora bundled in tests/data (see its README)."""

from __future__ import annotations

import gzip
import json
import sysconfig
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def hh_path() -> Path:
    """HH-RLHF harmless-base test split, full transcripts (2,312 pairs), gzipped JSONL."""
    return DATA / "hh-rlhf-harmless-base-test.jsonl.gz"


@pytest.fixture(scope="session")
def hh_records(hh_path: Path) -> list[dict[str, str]]:
    with gzip.open(hh_path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    with gzip.open(DATA / "tinyshakespeare.txt.gz", "rt", encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="session")
def shakespeare_paragraphs(shakespeare_text: str) -> list[str]:
    """Speeches of tinyshakespeare (blank-line separated), a literary domain."""
    return [p.strip() for p in shakespeare_text.split("\n\n") if len(p.split()) >= 8]


@pytest.fixture(scope="session")
def stdlib_texts() -> list[str]:
    """Python standard-library modules (sorted, first 300 files), a code domain."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py"))[:300]
    return [p.read_text(encoding="utf-8", errors="replace") for p in files]
