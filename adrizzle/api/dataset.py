"""Dataset: a lazily described, partitioned collection with lineage (Spark's RDD, narrow part).

A dataset is a chain of nodes from a source (``parallelize``, ``generate``) through narrow
transformations; nothing runs until a job is submitted with ``Engine.run_jobs``. ``cache()``
marks a node whose partitions stay in the slot that computed them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adrizzle.api.program import (
    FILTER,
    FLAT_MAP,
    MAP,
    MAP_PARTITIONS,
    Action,
    FunctionSource,
    ShippedSource,
    Source,
    StageProgram,
    Step,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from adrizzle.api.engine import Engine


class Dataset:
    """A partitioned collection. Build with ``engine.parallelize`` or ``engine.generate``.

    >>> doubled = engine.parallelize(range(10), partitions=2).map(lambda x: 2 * x)  # doctest: +SKIP
    >>> await engine.run_jobs([doubled], sum)  # doctest: +SKIP
    [[20, 70]]
    """

    __slots__ = (
        "__weakref__",
        "_cached",
        "_kind",
        "_parent",
        "_source",
        "engine",
        "func",
        "node_id",
        "partitions",
    )

    def __init__(
        self,
        engine: Engine,
        *,
        partitions: int,
        source: Source | None = None,
        parent: Dataset | None = None,
        kind: str = "",
        func: Callable[..., Any] | None = None,
    ) -> None:
        self.engine = engine
        self.node_id = engine._new_node_id() if source is None else source.node_id
        self.partitions = partitions
        self._source = source
        self._parent = parent
        self._kind = kind
        self.func = func
        self._cached = False

    def __repr__(self) -> str:
        kinds = "->".join(self.shape()[1]) or "source"
        return f"<Dataset {self.node_id} {kinds} partitions={self.partitions}>"

    # -- narrow transformations ----------------------------------------------------------

    def _narrow(self, kind: str, func: Callable[..., Any]) -> Dataset:
        if not callable(func):
            raise TypeError(f"{kind}() needs a callable, got {type(func).__name__}")
        return Dataset(self.engine, partitions=self.partitions, parent=self, kind=kind, func=func)

    def map(self, func: Callable[[Any], Any]) -> Dataset:
        return self._narrow(MAP, func)

    def filter(self, func: Callable[[Any], bool]) -> Dataset:
        return self._narrow(FILTER, func)

    def flat_map(self, func: Callable[[Any], Iterable[Any]]) -> Dataset:
        return self._narrow(FLAT_MAP, func)

    def map_partitions(self, func: Callable[[Iterator[Any]], Iterable[Any]]) -> Dataset:
        return self._narrow(MAP_PARTITIONS, func)

    def cache(self) -> Dataset:
        """Keep this dataset's partitions in the slot that computes them (pinned there)."""
        if not self._cached:
            self._cached = True
            self.engine._track_block_owner(self)
        return self

    @property
    def is_cached(self) -> bool:
        return self._cached

    # -- planning ------------------------------------------------------------------------

    def _chain(self) -> tuple[Source, list[Dataset]]:
        nodes: list[Dataset] = []
        node: Dataset | None = self
        while node is not None and node._source is None:
            nodes.append(node)
            node = node._parent
        assert node is not None
        assert node._source is not None
        nodes.reverse()
        return node._source, nodes

    def shape(self) -> tuple[int, tuple[str, ...]]:
        """The stage structure: jobs of one ``run_jobs`` call must all have the same shape."""
        _source, nodes = self._chain()
        return self.partitions, tuple(n._kind for n in nodes)

    def program(self, action: Action) -> StageProgram:
        source, nodes = self._chain()
        steps = tuple(Step(n.node_id, n._kind, n.func, n._cached) for n in nodes if n.func)
        return StageProgram(source, steps, action)

    def source(self) -> Source:
        return self._chain()[0]


def split_evenly(data: Iterable[Any], partitions: int) -> list[list[Any]]:
    """Contiguous slices of nearly equal length, as Spark's ``parallelize`` makes them."""
    items = list(data)
    n = len(items)
    return [items[(i * n) // partitions : ((i + 1) * n) // partitions] for i in range(partitions)]


__all__ = ["Dataset", "FunctionSource", "ShippedSource", "split_evenly"]
