"""The engine contract: map a pure function over work units, results back in unit order.

A work unit is a slice of a corpus on disk (a few parquet row groups or one JSONL shard).
The function reads its unit, writes any large output as files under the index's
``.incomplete/`` directory (atomically, so a retried unit overwrites a dead attempt's files),
and returns a small JSON-able summary. Engines differ only in where the function runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from tqdm import tqdm

from simscope.errors import SimscopeError

ENGINE_KINDS = ("local", "ray")

U = TypeVar("U")
Summary = dict[str, Any]
UnitFn = Callable[[U], Summary]
UnitFnFactory = Callable[[], Callable[[U], Summary]]


@dataclass(frozen=True)
class EngineConfig:
    """Where the work of a stage runs (the ``[execution]`` section of a run config).

    ``kind = "ray"`` needs the ``ray`` extra. ``address`` joins a running cluster (``"auto"``,
    ``"ray://head:10001"``); without it a local cluster of ``num_cpus`` CPUs is started. On a
    multi-node cluster the index root and the corpus shards must be on storage every node
    sees. ``unit_docs`` is the work unit's size in documents (a unit is never smaller than
    one parquet row group); a unit whose worker dies is retried up to ``max_retries`` times.
    Model stages (embedding, LM scoring) run in a pool of ``actors`` workers that each load
    the model once (None: one per CPU, or per GPU when the stage asks for GPUs);
    ``model_gpus`` is the GPUs each of those workers asks Ray for (0: CPU only).
    """

    kind: str = "local"
    address: str | None = None
    num_cpus: int | None = None
    object_store_mb: int | None = None
    unit_docs: int = 32768
    max_retries: int = 3
    actors: int | None = None
    model_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ENGINE_KINDS:
            raise SimscopeError(
                f"execution.kind: expected one of {', '.join(ENGINE_KINDS)}, found {self.kind!r}"
            )
        if self.unit_docs < 1:
            raise SimscopeError(f"execution.unit_docs: expected >= 1, found {self.unit_docs}")
        if self.max_retries < 0:
            raise SimscopeError(f"execution.max_retries: expected >= 0, found {self.max_retries}")
        if self.actors is not None and self.actors < 1:
            raise SimscopeError(f"execution.actors: expected >= 1, found {self.actors}")
        if self.model_gpus < 0:
            raise SimscopeError(f"execution.model_gpus: expected >= 0, found {self.model_gpus}")
        if self.num_cpus is not None and self.num_cpus < 1:
            raise SimscopeError(f"execution.num_cpus: expected >= 1, found {self.num_cpus}")
        if self.kind == "local" and (
            self.address or self.num_cpus or self.object_store_mb or self.actors or self.model_gpus
        ):
            raise SimscopeError(
                "execution: address, num_cpus, object_store_mb, actors and model_gpus apply to "
                "kind = 'ray' only; set execution.kind = 'ray' or remove them"
            )


class Engine(Protocol):
    """Runs a function over work units; the stages' code never depends on which engine."""

    name: str
    unit_docs: int

    def map_units(
        self, fn: Callable[[U], Summary], units: Sequence[U], *, desc: str, progress: bool = True
    ) -> list[Summary]:
        """``[fn(u) for u in units]``, possibly in parallel, in unit order."""
        ...

    def map_units_stateful(
        self,
        make_fn: Callable[[], Callable[[U], Summary]],
        units: Sequence[U],
        *,
        desc: str,
        num_gpus: float = 0.0,
        progress: bool = True,
    ) -> list[Summary]:
        """Like :meth:`map_units`, with ``fn = make_fn()`` built once per worker (loading a
        model), each worker given ``num_gpus`` GPUs."""
        ...

    def close(self) -> None:
        """Release what the engine started (a local Ray cluster); idempotent."""
        ...


class LocalEngine:
    """Runs every unit in this process, one after another. No server, no extra dependency."""

    name = "local"

    def __init__(self, unit_docs: int = EngineConfig.unit_docs) -> None:
        self.unit_docs = unit_docs

    def map_units(
        self, fn: Callable[[U], Summary], units: Sequence[U], *, desc: str, progress: bool = True
    ) -> list[Summary]:
        return [fn(u) for u in tqdm(units, desc=desc, unit="unit", disable=not progress)]

    def map_units_stateful(
        self,
        make_fn: Callable[[], Callable[[U], Summary]],
        units: Sequence[U],
        *,
        desc: str,
        num_gpus: float = 0.0,
        progress: bool = True,
    ) -> list[Summary]:
        return self.map_units(make_fn(), units, desc=desc, progress=progress)

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_engine(cfg: EngineConfig) -> Engine:
    """The engine ``cfg`` names (connecting to or starting Ray for ``kind = "ray"``)."""
    if cfg.kind == "local":
        return LocalEngine(cfg.unit_docs)
    from simscope.engine.ray import RayEngine

    return RayEngine(cfg)
