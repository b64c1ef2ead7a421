"""Read a ReportInputs from the files a run leaves in its output directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import polars as pl

from simscope.errors import SimscopeError
from simscope.readers import find_surrogate, surrogate_error
from simscope.report.html import ReportInputs
from simscope.select.command import read_summary
from simscope.storage import read_parquet

REPORT_FILES: Final = {
    "profile": "profile.parquet",
    "selection": "selection.parquet",
    "cv_summary": "cv_summary.json",
    "examples": "examples.json",
    "embedding_map": "embedding_map.parquet",
    "provenance": "provenance.json",
}
"""ReportInputs field -> file name in a run directory; only the profile is required."""


def load_report_inputs(run_dir: Path) -> ReportInputs:
    """The report's inputs from ``run_dir``; a missing optional file means "not run"."""
    run_dir = Path(run_dir)
    profile_path = run_dir / REPORT_FILES["profile"]
    if not profile_path.is_file():
        raise SimscopeError(
            f"{profile_path}: not found; expected the Profile table of a run in {run_dir}. "
            "Run `simscope run CONFIG.toml` first, or point at its output directory"
        )

    def parquet(field: str) -> pl.DataFrame | None:
        path = run_dir / REPORT_FILES[field]
        if not path.is_file():
            return None
        return read_parquet(
            path,
            expected=f"the {field} table of a run",
            fix="rerun the stage that writes it",
        )

    def read_json(field: str, default: Any) -> Any:
        path = run_dir / REPORT_FILES[field]
        if not path.is_file():
            return default
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise SimscopeError(
                f"{path}:{e.lineno}: invalid JSON ({e.msg}); rewrite the file or rerun the stage"
            ) from None
        except UnicodeDecodeError as e:
            raise SimscopeError(
                f"{path}: not UTF-8 text (byte {e.start}); rewrite the file or rerun the stage"
            ) from None
        found = find_surrogate(data)
        if found:  # no HTML file can hold it
            problem = surrogate_error(str(path), found[0] or "(top level)", found[1])
            raise SimscopeError(f"{problem}; rewrite the file or rerun the stage")
        return data

    examples = read_json("examples", [])
    if not isinstance(examples, list):
        raise SimscopeError(
            f"{run_dir / REPORT_FILES['examples']}: expected a JSON list of examples, "
            f"found {type(examples).__name__}"
        )
    cv_path = run_dir / REPORT_FILES["cv_summary"]
    cv = read_summary(cv_path) if cv_path.is_file() else None
    provenance = read_json("provenance", {})
    profile = parquet("profile")
    assert profile is not None  # checked above
    return ReportInputs(
        profile=profile,
        selection=parquet("selection"),
        cv_summary=cv,
        examples=examples,
        embedding_map=parquet("embedding_map"),
        provenance=provenance if isinstance(provenance, dict) else {"provenance": provenance},
    )
