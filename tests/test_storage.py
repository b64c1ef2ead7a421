"""Directories written whole: marked as simscope's, swapped in atomically, mended after a crash."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simscope import storage
from simscope.errors import SimscopeError
from simscope.storage import MARK, atomic_dir, check_replaceable, recover_dir


def _write(target: Path, text: str, **kwargs: object) -> None:
    with atomic_dir(target, overwrite=True, **kwargs) as tmp:  # type: ignore[arg-type]
        (tmp / "data.txt").write_text(text)


def test_a_written_directory_is_marked_with_what_it_holds(tmp_path: Path) -> None:
    _write(tmp_path / "out", "one")
    mark = json.loads((tmp_path / "out" / MARK).read_text())
    assert mark["files"] == ["data.txt"] and mark["kind"] == "index"
    _write(tmp_path / "out", "two")
    assert (tmp_path / "out" / "data.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no leftovers


def test_the_swap_is_one_atomic_exchange_where_the_system_has_it(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "y").write_text("b")
    if not storage.exchange_dirs(a, b):
        pytest.skip("no renameat2 exchange on this system: the two-rename fallback is tested")
    assert [p.name for p in a.iterdir()] == ["y"] and [p.name for p in b.iterdir()] == ["x"]


def test_a_crash_between_the_fallbacks_two_renames_is_mended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run"
    _write(target, "previous")
    monkeypatch.setattr(storage, "exchange_dirs", lambda a, b: False)
    real_replace = os.replace

    def crash_after_the_first(src: str | Path, dst: str | Path) -> None:
        real_replace(src, dst)
        if Path(dst).name.startswith("run.old-"):
            raise KeyboardInterrupt  # the process dies between the renames

    monkeypatch.setattr(os, "replace", crash_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        _write(target, "next")
    monkeypatch.setattr(os, "replace", real_replace)
    assert not target.exists()  # what the crash left: the previous version under .old-PID
    assert [p.name for p in tmp_path.iterdir()] == [f"run.old-{os.getpid()}"]
    recover_dir(target)
    assert (target / "data.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # the fallback without a crash leaves nothing behind either
    _write(target, "next")
    assert (target / "data.txt").read_text() == "next"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_interrupted_write_is_cleaned_by_the_next(tmp_path: Path) -> None:
    target = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), atomic_dir(target, overwrite=True) as tmp:
        (tmp / "half.txt").write_text("half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []  # an exception leaves nothing
    # a killed process leaves its marked .incomplete directory: the next write removes it
    leftover = tmp_path / "run.incomplete"
    leftover.mkdir()
    (leftover / MARK).write_text('{"kind": "run", "files": []}')
    (leftover / "half.txt").write_text("half")
    _write(target, "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_a_dead_writers_build_directory_is_removed(tmp_path: Path) -> None:
    host = storage.slug(socket.gethostname())
    dead = tmp_path / f"run.incomplete-{host}-{_dead_pid()}"
    alive = tmp_path / f"run.incomplete-{host}-{os.getppid()}"  # a live process (pytest's parent)
    elsewhere = tmp_path / "run.incomplete-another-host-1"  # its writer cannot be checked here
    for leftover in (dead, alive, elsewhere):
        leftover.mkdir()
        (leftover / MARK).write_text('{"kind": "run", "files": []}')
    _write(tmp_path / "run", "whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run", alive.name, elsewhere.name])


_WRITER = """
import sys, time
from pathlib import Path
from simscope.storage import atomic_dir
target, start, tag = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
while time.time() < start:
    time.sleep(0.001)
with atomic_dir(target, overwrite=True, kind="cache") as tmp:
    (tmp / "data.txt").write_text(tag)
    time.sleep(0.2)  # both writers are inside at once
"""


def test_two_processes_writing_one_cache_entry_both_succeed(tmp_path: Path) -> None:
    # Ray workers compile the same encoder into one cache directory at the same moment: each
    # builds in its own directory, and the entry ends up whole (one writer's), with no leftovers
    target = tmp_path / "encoder"
    start = str(time.time() + 1.0)
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(target), start, tag])
        for tag in ("a", "b")
    ]
    assert [w.wait(timeout=60) for w in writers] == [0, 0]
    assert (target / "data.txt").read_text() in {"a", "b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["encoder"]


def test_a_directory_simscope_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep")
    with pytest.raises(SimscopeError) as refused:
        _write(mine, "x")
    assert str(refused.value) == (
        f"{mine}: exists and was not written by simscope (no .simscope mark), so it is not "
        "replaced; choose a new directory, or empty this one"
    )
    assert (mine / "thesis.tex").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    # an empty directory, and an older simscope's run directory (only its files), may be replaced
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "empty", "x")
    old_run = tmp_path / "old-run"
    old_run.mkdir()
    (old_run / "profile.parquet").write_bytes(b"")
    check_replaceable(old_run, legacy_files=("profile.parquet", "report.html"))
    with pytest.raises(SimscopeError, match="not written by simscope"):
        check_replaceable(old_run)


def test_a_leftover_holding_a_users_files_is_refused_not_deleted(tmp_path: Path) -> None:
    leftover = tmp_path / "run.incomplete"
    leftover.mkdir()
    (leftover / "mine.txt").write_text("keep")
    with pytest.raises(SimscopeError) as refused:
        _write(tmp_path / "run", "x")
    assert str(refused.value) == (
        f"{leftover}: left by an interrupted write but holds files simscope did not write; "
        "move it away"
    )
    assert (leftover / "mine.txt").read_text() == "keep"
