"""The Ray engine: work units as a Ray Data pipeline, on a running cluster or a local one.

The dataset holds one row per work unit; ``map_batches`` (one unit per batch, one CPU per
task) runs the unit function, which reads its own slice of the corpus shards, so no process
ever holds the corpus and the driver only receives small summaries. Ray Data's own readers
are not used because they do not say which global row a record is, and the indexes need
that to come out identical to the local engine's. A task whose worker dies is retried
(``max_retries``); after the last retry the run raises and the caller's ``.incomplete/``
directory is removed, so an index is either complete or absent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from simscope.engine.base import EngineConfig, Summary, U
from simscope.errors import SimscopeError

logger = logging.getLogger(__name__)

try:
    import ray
    import ray.data
except ImportError:  # pragma: no cover - exercised only without the extra
    ray = None  # type: ignore[assignment]

_USER_ERROR = "__simscope_error__"
# Worker deaths that retries could not cure: an environment problem the user can act on.
_DEATHS = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ObjectLostError")


def _run_units(
    batch: dict[str, np.ndarray], fn: Callable[[Any], Summary], units: Sequence[Any]
) -> dict[str, np.ndarray]:
    idx = [int(i) for i in batch["unit"]]
    out = []
    for i in idx:
        try:
            summary = fn(units[i])
        except SimscopeError as e:
            # Ray Data passes on a remote exception's traceback as text, not the exception:
            # a user mistake comes back as a value, to be raised on the driver.
            summary = {_USER_ERROR: str(e)}
        out.append(json.dumps(summary, sort_keys=True))
    return {"unit": np.asarray(idx, dtype=np.int64), "summary": np.asarray(out, dtype=object)}


class _UnitActor:
    """One worker of an actor pool: builds the unit function (loads its model) once."""

    def __init__(self, make_fn: Callable[[], Callable[[Any], Summary]], units: Sequence[Any]):
        self.fn = make_fn()
        self.units = units

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _run_units(batch, self.fn, self.units)


class RayEngine:
    """Runs work units as Ray Data ``map_batches`` tasks."""

    name = "ray"

    def __init__(self, cfg: EngineConfig | None = None) -> None:
        cfg = cfg or EngineConfig(kind="ray")
        if ray is None:
            raise SimscopeError(
                "execution.kind = 'ray' needs Ray; install the extra: pip install 'simscope[ray]'"
            )
        self.cfg = cfg
        self.unit_docs = cfg.unit_docs
        self._owned = False
        if not ray.is_initialized():
            if cfg.address:
                try:
                    ray.init(address=cfg.address, configure_logging=False, log_to_driver=False)
                except ConnectionError as e:
                    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    raise SimscopeError(
                        f"execution.address = {cfg.address!r}: no Ray cluster answered "
                        f"({first}); start one (`ray start --head`) or leave address out "
                        "to start a local cluster"
                    ) from None
            else:
                store = cfg.object_store_mb * 2**20 if cfg.object_store_mb else None
                ray.init(
                    num_cpus=cfg.num_cpus,
                    object_store_memory=store,
                    include_dashboard=False,
                    configure_logging=False,
                    log_to_driver=False,
                )
                self._owned = True
            logger.info("ray: %s CPUs in the cluster", ray.cluster_resources().get("CPU"))

    def map_units(
        self, fn: Callable[[U], Summary], units: Sequence[U], *, desc: str, progress: bool = True
    ) -> list[Summary]:
        if not units:
            return []
        ds = self._items(len(units), progress).map_batches(
            _run_units,
            fn_kwargs={"fn": fn, "units": list(units)},
            batch_size=1,
            batch_format="numpy",
            num_cpus=1,
            max_retries=self.cfg.max_retries,
        )
        return self._collect(ds, len(units), desc)

    def map_units_stateful(
        self,
        make_fn: Callable[[], Callable[[U], Summary]],
        units: Sequence[U],
        *,
        desc: str,
        num_gpus: float = 0.0,
        progress: bool = True,
    ) -> list[Summary]:
        if not units:
            return []
        resources = ray.cluster_resources()
        if self.cfg.actors:
            actors = self.cfg.actors
        elif num_gpus > 0:
            actors = max(int(resources.get("GPU", 0) / num_gpus), 1)
        else:
            actors = max(int(resources.get("CPU", 1)), 1)
        ds = self._items(len(units), progress).map_batches(
            _UnitActor,
            fn_constructor_kwargs={"make_fn": make_fn, "units": list(units)},
            batch_size=1,
            batch_format="numpy",
            concurrency=min(actors, len(units)),
            num_cpus=1,
            num_gpus=num_gpus or None,
            max_restarts=self.cfg.max_retries,
            max_task_retries=self.cfg.max_retries,
        )
        return self._collect(ds, len(units), desc)

    def _items(self, n: int, progress: bool) -> Any:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        return ray.data.from_items([{"unit": i} for i in range(n)], override_num_blocks=n)

    def _collect(self, ds: Any, n_units: int, desc: str) -> list[Summary]:
        try:
            rows = ds.take_all()
        except Exception as e:
            err = _user_error(e, desc, self.cfg.max_retries)
            if err is e:
                raise
            raise err from None
        summaries = {int(r["unit"]): json.loads(r["summary"]) for r in rows}
        for i in sorted(summaries):
            if _USER_ERROR in summaries[i]:
                raise SimscopeError(summaries[i][_USER_ERROR])
        if sorted(summaries) != list(range(n_units)):  # a bug in Ray or here, not the user's
            raise RuntimeError(f"{desc}: {len(summaries)} summaries for {n_units} units")
        return [summaries[i] for i in range(n_units)]

    def close(self) -> None:
        if self._owned and ray is not None and ray.is_initialized():
            ray.shutdown()
        self._owned = False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _user_error(e: BaseException, desc: str, max_retries: int) -> BaseException:
    """A worker death after the last retry as a SimscopeError the CLI can print; anything
    else (a bug) unchanged."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, SimscopeError):
            return SimscopeError(str(err.args[0]) if err.args else str(err))
        if type(err).__name__ in _DEATHS or any(c.__name__ in _DEATHS for c in type(err).__mro__):
            return SimscopeError(
                f"{desc}: a Ray worker died {max_retries + 1} times on one work unit "
                f"({type(err).__name__}); no index was written. If it ran out of memory, "
                "lower execution.unit_docs or give workers more memory, then run again"
            )
        stack += [err.__cause__, err.__context__, getattr(err, "cause", None)]
    return e
