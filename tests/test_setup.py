"""The set-up promises: README's two commands install from the lock, and CI runs the README's."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^python3 -m venv \.venv && .*$", text, flags=re.MULTILINE)


def lock() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_both_readme_commands_install_from_the_lock() -> None:
    demo, tests = readme_commands()
    assert demo.endswith("simscope demo") and tests.endswith("pytest -q")
    for command in (demo, tests):
        assert "pip install -q -c constraints.txt -e " in command


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tests in [line.strip() for line in ci]


def test_every_requirement_is_pinned_by_the_lock_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    for extra in ("dev", "ray"):
        requirements += [Requirement(r) for r in project["optional-dependencies"][extra]]
    pins = lock()
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (req, pins[name])
    # The CPU build on disk: torch's pin stays the one the README promises.
    assert pins["torch"] == Version("2.13.0")


def test_the_readme_run_config_is_a_valid_config(tmp_path: Path) -> None:
    # every key the README shows exists and holds a valid value (a renamed knob fails here)
    from simscope.config import load_run_config

    (block,) = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    (tmp_path / "simscope.toml").write_text(block)
    cfg = load_run_config(tmp_path / "simscope.toml")
    assert [c.name for c in cfg.candidates] == ["Qwen/Qwen3-0.6B", "my-7b"]
    assert cfg.stages.transfer and cfg.select.suggest == 2
