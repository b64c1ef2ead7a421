"""The zoo's job runner: results in job order, on one process or several, jobs named."""

from __future__ import annotations

import pytest

from simscope.examples.zoo import _map


@pytest.mark.parametrize("workers", [1, 2])
def test_map_keeps_the_job_order_and_names_the_jobs(
    workers: int, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _map(abs, [-3, -1, -2], workers, desc="jobs", progress=True, labels=["a", "b", "c"])
    assert out == [3, 1, 2]
    line = capsys.readouterr().err
    assert "jobs: 3/3 models" in line and "done" in line
    if workers == 1:
        assert all(name in line for name in ("a", "b", "c"))  # the job running is named
    else:
        assert "2 at a time, last done:" in line
    assert _map(abs, [], workers, desc="jobs", progress=False, labels=[]) == []
