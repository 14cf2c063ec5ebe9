"""Dataset: a lazily described, partitioned collection with lineage (Spark's RDD, narrow part).

A dataset is a chain of nodes from a source (``parallelize``, ``generate``) through narrow
transformations; ``reduce_by_key``, ``group_by_key``, ``join`` and ``count_by_key`` start a new
stage behind a shuffle. Nothing runs until a job is submitted with ``Engine.run_jobs``.
``cache()`` marks a node whose partitions stay in the slot that computed them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adrizzle.plan.program import (
    FILTER,
    FLAT_MAP,
    GROUP,
    JOIN,
    MAP,
    MAP_PARTITIONS,
    REDUCE,
    STATEFUL,
    Action,
    FunctionSource,
    JobProgram,
    ShippedSource,
    ShuffleRead,
    ShuffleWrite,
    Source,
    StageProgram,
    Step,
)
from adrizzle.plan.state import StateUpdate

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from adrizzle.driver.session import DriverSession
    from adrizzle.plan.offsets import WorkerSink

Func = Callable[[Any], Any]


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
        "_wide_parents",
        "func",
        "node_id",
        "partitions",
        "session",
    )

    def __init__(
        self,
        session: DriverSession,
        *,
        partitions: int,
        source: Source | None = None,
        parent: Dataset | None = None,
        kind: str = "",
        func: Callable[..., Any] | None = None,
        wide_parents: tuple[Dataset, ...] = (),
    ) -> None:
        self.session = session  # the engine's driver session (its internal API)
        self.node_id = session.new_node_id() if source is None else source.node_id
        self.partitions = partitions
        self._source = source
        self._parent = parent
        self._kind = kind
        self.func = func
        self._wide_parents = wide_parents
        self._cached = False

    def __repr__(self) -> str:
        return f"<Dataset {self.node_id} {self._kind or 'source'} partitions={self.partitions}>"

    # -- narrow transformations ----------------------------------------------------------

    def _narrow(self, kind: str, func: Callable[..., Any]) -> Dataset:
        if not callable(func):
            raise TypeError(f"{kind}() needs a callable, got {type(func).__name__}")
        return Dataset(self.session, partitions=self.partitions, parent=self, kind=kind, func=func)

    def map(self, func: Callable[[Any], Any]) -> Dataset:
        return self._narrow(MAP, func)

    def filter(self, func: Callable[[Any], bool]) -> Dataset:
        return self._narrow(FILTER, func)

    def flat_map(self, func: Callable[[Any], Iterable[Any]]) -> Dataset:
        return self._narrow(FLAT_MAP, func)

    def map_partitions(self, func: Callable[[Iterator[Any]], Iterable[Any]]) -> Dataset:
        return self._narrow(MAP_PARTITIONS, func)

    def with_state(self, update: StateUpdate) -> Dataset:
        """A stateful step: ``update`` runs on each partition with that partition's state, which
        stays in the slot the partition is pinned to (streams build these; see ``Stream``)."""
        if not isinstance(update, StateUpdate):
            raise TypeError(f"with_state() needs a StateUpdate, got {type(update).__name__}")
        return Dataset(
            self.session, partitions=self.partitions, parent=self, kind=STATEFUL, func=update
        )

    # -- wide transformations (a shuffle, then a new stage) ---------------------------------

    def _wide(self, kind: str, func: Any, partitions: int | None, *others: Dataset) -> Dataset:
        n = partitions or self.partitions
        if n < 1:
            raise ValueError(f"partitions must be >= 1, got {n}")
        for other in others:
            if other.session is not self.session:
                raise ValueError(f"{kind}: both datasets must belong to the same engine")
        return Dataset(
            self.session, partitions=n, kind=kind, func=func, wide_parents=(self, *others)
        )

    def reduce_by_key(
        self, func: Callable[[Any, Any], Any], partitions: int | None = None
    ) -> Dataset:
        """``(key, value)`` pairs -> one ``(key, func-reduced value)`` per key. Values are
        combined on the map side before the shuffle, as Spark does."""
        if not callable(func):
            raise TypeError("reduce_by_key() needs a callable func(a, b)")
        return self._wide(REDUCE, func, partitions)

    def group_by_key(self, partitions: int | None = None) -> Dataset:
        """``(key, value)`` pairs -> ``(key, [values...])`` per key."""
        return self._wide(GROUP, None, partitions)

    def join(self, other: Dataset, partitions: int | None = None) -> Dataset:
        """Inner join of two ``(key, value)`` datasets -> ``(key, (left, right))`` per match."""
        if not isinstance(other, Dataset):
            raise TypeError(f"join() needs a Dataset, got {type(other).__name__}")
        return self._wide(JOIN, None, partitions, other)

    def count_by_key(self, partitions: int | None = None) -> Dataset:
        """``(key, value)`` pairs -> ``(key, count)`` per key."""
        return self.map(_key_one).reduce_by_key(_add, partitions)

    def cache(self) -> Dataset:
        """Keep this dataset's partitions in the slot that computes them (pinned there)."""
        if not self._cached:
            self._cached = True
            self.session.release_with(self, self.node_id)
        return self

    @property
    def is_cached(self) -> bool:
        return self._cached

    # -- planning ------------------------------------------------------------------------

    def _chain(self) -> tuple[Dataset, list[Dataset]]:
        """The stage's input node (a source or a wide node) and the narrow nodes after it."""
        nodes: list[Dataset] = []
        node = self
        while node._source is None and not node._wide_parents:
            nodes.append(node)
            assert node._parent is not None
            node = node._parent
        nodes.reverse()
        return node, nodes

    def plan(self, action: Action, sink: WorkerSink | None = None) -> JobProgram:
        """This dataset's job as stages in topological order, the last one running ``action``
        (and, for a stream with a sink on the workers, writing its output there)."""
        stages: list[StageProgram] = []
        self._plan_into(stages, None)
        return JobProgram(tuple(stages), action, sink)

    def _plan_into(self, stages: list[StageProgram], output: ShuffleWrite | None) -> int:
        head, nodes = self._chain()
        steps = tuple(Step(n.node_id, n._kind, n.func, n._cached) for n in nodes if n.func)
        if head._source is not None:
            if head._cached and isinstance(head._source, FunctionSource):
                steps = (Step(head.node_id, MAP_PARTITIONS, _identity, True), *steps)
            stage_input: Source | ShuffleRead = head._source
        else:
            combine = head.func if head._kind == REDUCE else None
            write = ShuffleWrite(head.partitions, combine)
            shuffles = tuple(
                (parent._plan_into(stages, write), parent.partitions)
                for parent in head._wide_parents
            )
            stage_input = ShuffleRead(head._kind, shuffles, head.func)
            if head._cached:
                steps = (Step(head.node_id, MAP_PARTITIONS, _identity, True), *steps)
        stages.append(StageProgram(self.partitions, stage_input, steps, output))
        return len(stages) - 1

    def shape(self) -> tuple[Any, ...]:
        """The stage structure: jobs of one ``run_jobs`` call must all have the same shape."""
        return self.plan(_identity).shape()


def _identity(it: Any) -> Any:
    return it


def _key_one(kv: tuple[Any, Any]) -> tuple[Any, int]:
    return (kv[0], 1)


def _add(a: int, b: int) -> int:
    return a + b


def split_evenly(data: Iterable[Any], partitions: int) -> list[list[Any]]:
    """Contiguous slices of nearly equal length, as Spark's ``parallelize`` makes them."""
    items = list(data)
    n = len(items)
    return [items[(i * n) // partitions : ((i + 1) * n) // partitions] for i in range(partitions)]


def parallelize(session: DriverSession, data: Iterable[Any], partitions: int) -> Dataset:
    """A dataset of ``data`` in ``partitions`` contiguous slices, held by the driver and
    shipped once to the slot each partition is pinned to (released when collected)."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    source = ShippedSource(session.new_node_id())
    session.add_source(source.node_id, split_evenly(data, partitions))
    dataset = Dataset(session, partitions=partitions, source=source)
    session.release_with(dataset, source.node_id)
    return dataset


def job_programs(
    session: DriverSession,
    datasets: Sequence[Dataset],
    funcs: Func | Sequence[Func],
    sink: WorkerSink | None = None,
) -> list[JobProgram]:
    """One program per job (``func`` applied to each partition of its dataset); jobs of one
    call must share their stage structure. A dataset repeated is planned once."""
    datasets = list(datasets)
    if callable(funcs):
        func_list: list[Func] = [funcs] * len(datasets)
    else:
        func_list = list(funcs)
        if len(func_list) != len(datasets):
            raise ValueError(f"{len(datasets)} datasets but {len(func_list)} functions")
        for f in func_list:
            if not callable(f):
                raise TypeError(f"job functions must be callable, got {type(f).__name__}")
    shape = None
    programs: list[JobProgram] = []
    cache: dict[tuple[int, int], JobProgram] = {}
    for i, (ds, f) in enumerate(zip(datasets, func_list, strict=True)):
        if not isinstance(ds, Dataset):
            raise TypeError(f"job {i}: expected a Dataset, got {type(ds).__name__}")
        if ds.session is not session:
            raise ValueError(f"job {i}: the dataset belongs to another engine")
        key = (id(ds), id(f))
        program = cache.get(key)
        if program is None:
            program = cache[key] = ds.plan(f, sink)
            s = program.shape()
            if shape is None:
                shape = s
            elif s != shape:
                raise ValueError(
                    f"jobs of one call must share their stage structure: job 0 is {shape}, "
                    f"job {i} is {s}"
                )
        programs.append(program)
    return programs


__all__ = ["Dataset", "job_programs", "parallelize", "split_evenly"]
