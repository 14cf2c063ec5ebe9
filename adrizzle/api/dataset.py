"""Dataset: a lazily described, partitioned collection with lineage (Spark's RDD).

A dataset is a chain of nodes from a source (``parallelize``, ``generate``) through narrow
transformations; wide ones (``reduce_by_key``, ``join``, ``sort_by_key``, ...) start a new stage
behind a shuffle, and ``union`` puts the partitions of several datasets side by side (narrow).
Transformations run when a job is submitted: ``Engine.run_jobs`` (one job per dataset, grouped)
or an action (``await ds.collect()``, ``count()``, ``take(n)``: one job each). ``cache()`` keeps
a node's partitions in the slots that computed them, ``unpersist()`` drops them.
``adrizzle.api.lineage`` plans a dataset into stages.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from adrizzle.api.lineage import COMBINE, plan_job
from adrizzle.api.running import run_one
from adrizzle.plan import operators as ops
from adrizzle.plan.async_map import map_async
from adrizzle.plan.program import (
    FILTER,
    FLAT_MAP,
    GROUP,
    JOIN,
    MAP,
    MAP_PARTITIONS,
    REDUCE,
    STATEFUL,
    WITH_INDEX,
    Action,
    FunctionSource,
    JobProgram,
    ShippedSource,
    Source,
)
from adrizzle.plan.state import StateUpdate

if TYPE_CHECKING:
    from adrizzle.driver.session import DriverSession
    from adrizzle.plan.offsets import WorkerSink

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K")
V = TypeVar("V")
W = TypeVar("W")
C = TypeVar("C")
Func = Callable[[Any], Any]


def check_function(name: str, func: object) -> None:
    """A callable, and not a coroutine function (those go to ``map_async``)."""
    if not callable(func):
        raise TypeError(f"{name}() needs a callable, got {type(func).__name__}")
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an object with an async __call__
    ):
        raise TypeError(
            f"{name}() got a coroutine function, which would return unawaited coroutines: "
            "use map_async(func, concurrency=N) to run it on an event loop in the slot"
        )


class Dataset(Generic[T]):
    """A partitioned collection of ``T``. Build with ``engine.parallelize`` or
    ``engine.generate``; transformations return new datasets, actions run a job.

    >>> doubled = engine.parallelize(range(10), partitions=2).map(lambda x: 2 * x)  # doctest: +SKIP
    >>> await doubled.collect()  # doctest: +SKIP
    [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    >>> await engine.run_jobs([doubled], sum)  # doctest: +SKIP
    [[20, 70]]
    >>> sales = engine.parallelize([("fr", 3), ("de", 5), ("fr", 1)])  # doctest: +SKIP
    >>> names = engine.parallelize([("fr", "France"), ("it", "Italy")])  # doctest: +SKIP
    >>> await sales.reduce_by_key(operator.add).sort_by_key().collect()  # doctest: +SKIP
    [('de', 5), ('fr', 4)]
    >>> await sales.full_outer_join(names).count()  # doctest: +SKIP
    4
    >>> await sales.keys().distinct().union(names.keys()).take(3)  # doctest: +SKIP
    """

    __slots__ = (
        "__weakref__",
        "_cached",
        "func",
        "kind",
        "node_id",
        "parent",
        "partitions",
        "session",
        "source",
        "wide_parents",
    )

    def __init__(
        self,
        session: DriverSession,
        *,
        partitions: int,
        source: Source | None = None,
        parent: Dataset[Any] | None = None,
        kind: str = "",
        func: Any = None,
        wide_parents: tuple[Dataset[Any], ...] = (),
    ) -> None:
        self.session = session  # the engine's driver session (its internal API)
        self.node_id = session.new_node_id() if source is None else source.node_id
        self.partitions = partitions
        # Lineage, read by adrizzle.api.lineage: the input node of a stage has a source or
        # wide parents; a narrow node has a parent, its kind and function.
        self.source = source
        self.parent = parent
        self.kind = kind
        self.func = func
        self.wide_parents = wide_parents
        self._cached = False

    def __repr__(self) -> str:
        return f"<Dataset {self.node_id} {self.kind or 'source'} partitions={self.partitions}>"

    # -- narrow transformations ----------------------------------------------------------

    def _narrow(self, kind: str, func: Callable[..., Any]) -> Dataset[Any]:
        return Dataset(self.session, partitions=self.partitions, parent=self, kind=kind, func=func)

    def _user(self, kind: str, name: str, func: Callable[..., Any]) -> Dataset[Any]:
        check_function(name, func)
        return self._narrow(kind, func)

    def map(self, func: Callable[[T], U]) -> Dataset[U]:
        return self._user(MAP, "map", func)

    def filter(self, func: Callable[[T], object]) -> Dataset[T]:
        return self._user(FILTER, "filter", func)

    def flat_map(self, func: Callable[[T], Iterable[U]]) -> Dataset[U]:
        return self._user(FLAT_MAP, "flat_map", func)

    def map_partitions(self, func: Callable[[Iterator[T]], Iterable[U]]) -> Dataset[U]:
        return self._user(MAP_PARTITIONS, "map_partitions", func)

    def map_partitions_with_index(
        self, func: Callable[[int, Iterator[T]], Iterable[U]]
    ) -> Dataset[U]:
        """``func(partition_index, iterator)`` per partition (Spark's mapPartitionsWithIndex)."""
        return self._user(WITH_INDEX, "map_partitions_with_index", func)

    def map_async(self, func: Callable[[T], Awaitable[U]], concurrency: int = 16) -> Dataset[U]:
        """``await func(x)`` per item on an event loop in the slot, at most ``concurrency``
        calls in flight per partition, results in input order: for I/O (HTTP, databases).

        >>> async def enrich(user_id: int) -> dict:  # doctest: +SKIP
        ...     async with session.get(f"{API}/users/{user_id}") as response:
        ...         return await response.json()
        >>> profiles = ids.map_async(enrich, concurrency=32)  # doctest: +SKIP

        The loop lives as long as the slot process (one per slot, reused by every task), so
        a client made on it (created lazily inside the function) may be kept across tasks.
        """
        if not callable(func):
            raise TypeError(f"map_async() needs a callable, got {type(func).__name__}")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive int, got {concurrency!r}")
        return self._narrow(MAP_PARTITIONS, functools.partial(map_async, func, concurrency))

    def key_by(self, func: Callable[[T], K]) -> Dataset[tuple[K, T]]:
        """``(func(x), x)`` per item."""
        check_function("key_by", func)
        return self._narrow(MAP, functools.partial(ops.keyed_by, func))

    def map_values(self: Dataset[tuple[K, V]], func: Callable[[V], U]) -> Dataset[tuple[K, U]]:
        check_function("map_values", func)
        return self._narrow(MAP, functools.partial(ops.map_value, func))

    def keys(self: Dataset[tuple[K, V]]) -> Dataset[K]:
        return self._narrow(MAP, ops.key_of)

    def values(self: Dataset[tuple[K, V]]) -> Dataset[V]:
        return self._narrow(MAP, ops.value_of)

    def with_state(self, update: StateUpdate) -> Dataset[Any]:
        """A stateful step: ``update`` runs on each partition with that partition's state, which
        stays in the slot the partition is pinned to (streams build these; see ``Stream``)."""
        if not isinstance(update, StateUpdate):
            raise TypeError(f"with_state() needs a StateUpdate, got {type(update).__name__}")
        return self._narrow(STATEFUL, update)

    def union(self, *others: Dataset[T]) -> Dataset[T]:
        """The partitions of this dataset, then of each of ``others`` in order (narrow: no
        shuffle; ``n + m`` partitions, partition ``n + q`` being ``others[0]``'s ``q``)."""
        if not others:
            raise TypeError("union() needs at least one other dataset")
        for other in others:
            if not isinstance(other, Dataset):
                raise TypeError(f"union() needs Datasets, got {type(other).__name__}")
            if other.session is not self.session:
                raise ValueError("union: the datasets must belong to the same engine")
        total = self.partitions + sum(o.partitions for o in others)
        return Dataset(self.session, partitions=total, kind=ops.UNION, wide_parents=(self, *others))

    # -- wide transformations (a shuffle, then a new stage) ---------------------------------

    def _wide(self, kind: str, func: Any, partitions: int | None, *others: Any) -> Dataset[Any]:
        n = self.partitions if partitions is None else partitions
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"partitions must be a positive int, got {n!r}")
        for other in others:
            if not isinstance(other, Dataset):
                raise TypeError(f"{kind}() needs a Dataset, got {type(other).__name__}")
            if other.session is not self.session:
                raise ValueError(f"{kind}: both datasets must belong to the same engine")
        return Dataset(
            self.session, partitions=n, kind=kind, func=func, wide_parents=(self, *others)
        )

    def reduce_by_key(
        self: Dataset[tuple[K, V]], func: Callable[[V, V], V], partitions: int | None = None
    ) -> Dataset[tuple[K, V]]:
        """``(key, value)`` pairs -> one ``(key, func-reduced value)`` per key. Values are
        combined on the map side before the shuffle, as Spark does."""
        check_function("reduce_by_key", func)
        return self._wide(REDUCE, func, partitions)

    def combine_by_key(
        self: Dataset[tuple[K, V]],
        create: Callable[[V], C],
        merge_value: Callable[[C, V], C],
        merge_combiners: Callable[[C, C], C],
        partitions: int | None = None,
    ) -> Dataset[tuple[K, C]]:
        """Per key, ``create(v)`` from its first value in a map partition, ``merge_value(c, v)``
        for the next ones there, then ``merge_combiners`` across map partitions (Spark's
        combineByKey, combined map-side)."""
        for name, f in (("create", create), ("merge_value", merge_value),
                        ("merge_combiners", merge_combiners)):  # fmt: skip
            check_function(f"combine_by_key: {name}", f)
        return self._wide(COMBINE, (create, merge_value, merge_combiners), partitions)

    def aggregate_by_key(
        self: Dataset[tuple[K, V]],
        zero: U,
        seq_func: Callable[[U, V], U],
        comb_func: Callable[[U, U], U],
        partitions: int | None = None,
    ) -> Dataset[tuple[K, U]]:
        """Per key, fold its values into ``zero`` with ``seq_func`` (per map partition) and
        merge the partial results with ``comb_func``. Every key of every map partition starts
        from its own deep copy of ``zero`` (a mutable zero such as ``[]`` is never shared), as
        Spark's aggregateByKey."""
        check_function("aggregate_by_key: seq_func", seq_func)
        create = functools.partial(ops.create_from_zero, zero, seq_func)
        return self.combine_by_key(create, seq_func, comb_func, partitions)

    def group_by_key(
        self: Dataset[tuple[K, V]], partitions: int | None = None
    ) -> Dataset[tuple[K, list[V]]]:
        """``(key, value)`` pairs -> ``(key, [values...])`` per key."""
        return self._wide(GROUP, None, partitions)

    def join(
        self: Dataset[tuple[K, V]], other: Dataset[tuple[K, W]], partitions: int | None = None
    ) -> Dataset[tuple[K, tuple[V, W]]]:
        """Inner join of two ``(key, value)`` datasets -> ``(key, (left, right))`` per match."""
        return self._wide(JOIN, None, partitions, other)

    def left_outer_join(
        self: Dataset[tuple[K, V]], other: Dataset[tuple[K, W]], partitions: int | None = None
    ) -> Dataset[tuple[K, tuple[V, W | None]]]:
        """Every left pair with each matching right value, or ``(key, (left, None))``."""
        return self._wide(ops.LEFT_OUTER, None, partitions, other)

    def right_outer_join(
        self: Dataset[tuple[K, V]], other: Dataset[tuple[K, W]], partitions: int | None = None
    ) -> Dataset[tuple[K, tuple[V | None, W]]]:
        """Every right pair with each matching left value, or ``(key, (None, right))``."""
        return self._wide(ops.RIGHT_OUTER, None, partitions, other)

    def full_outer_join(
        self: Dataset[tuple[K, V]], other: Dataset[tuple[K, W]], partitions: int | None = None
    ) -> Dataset[tuple[K, tuple[V | None, W | None]]]:
        """Both outer joins: None for the missing side of an unmatched key, as Spark."""
        return self._wide(ops.FULL_OUTER, None, partitions, other)

    def cogroup(
        self: Dataset[tuple[K, V]], other: Dataset[tuple[K, W]], partitions: int | None = None
    ) -> Dataset[tuple[K, tuple[list[V], list[W]]]]:
        """``(key, ([left values], [right values]))`` per key of either side."""
        return self._wide(ops.COGROUP, None, partitions, other)

    def count_by_key(
        self: Dataset[tuple[K, Any]], partitions: int | None = None
    ) -> Dataset[tuple[K, int]]:
        """``(key, value)`` pairs -> ``(key, count)`` per key."""
        return self._narrow(MAP, _key_one).reduce_by_key(_add, partitions)

    def distinct(self, partitions: int | None = None) -> Dataset[T]:
        """Each distinct item once (items must be hashable), as Spark: through a shuffle."""
        pairs: Dataset[tuple[T, None]] = self._narrow(MAP, ops.pair_none)
        return pairs.reduce_by_key(ops.keep_first, partitions)._narrow(MAP, ops.key_of)

    def repartition(self, partitions: int) -> Dataset[T]:
        """The same items in ``partitions`` balanced partitions (round robin from each
        partition's index: deterministic, sizes within the number of input partitions)."""
        tag = functools.partial(ops.tag_round_robin, _positive(partitions))
        return self._narrow(WITH_INDEX, tag)._wide(ops.REPARTITION, None, partitions)

    def sort_by_key(
        self: Dataset[tuple[K, V]], ascending: bool = True, partitions: int | None = None
    ) -> Dataset[tuple[K, V]]:
        """Pairs sorted by key, range-partitioned: concatenating the partitions in order gives
        ``sorted(pairs, key=key, reverse=not ascending)`` (stable). The ranges come from a
        sample of the keys taken inside the job, not by a job of its own: see
        ``adrizzle.plan.operators``. Keys must compare with ``<``."""
        n = _positive(self.partitions if partitions is None else partitions)
        sample = functools.partial(ops.sample_keys, n, self.partitions)
        ranged = self._narrow(WITH_INDEX, sample)._wide(
            ops.RANGE_PARTITION, (n, bool(ascending)), self.partitions
        )
        return ranged._wide(ops.SORT, bool(ascending), n)

    def sort_by(
        self, func: Callable[[T], Any], ascending: bool = True, partitions: int | None = None
    ) -> Dataset[T]:
        """Items sorted by ``func(item)`` (see ``sort_by_key``)."""
        keyed = self.key_by(func)
        return keyed.sort_by_key(ascending, partitions)._narrow(MAP, ops.value_of)

    # -- persistence -----------------------------------------------------------------------

    def cache(self) -> Dataset[T]:
        """Keep this dataset's partitions in the slot that computes them (pinned there)."""
        if not self._cached:
            self._cached = True
            self.session.release_with(self, self.node_id)
        return self

    def unpersist(self) -> Dataset[T]:
        """Drop the cached partitions from the slots (told with the next launch to each
        worker); the dataset stays usable and is recomputed from its lineage when needed."""
        if self._cached:
            self._cached = False
            if not isinstance(self.source, ShippedSource):  # shipped data is the dataset
                self.session.blocks.release(self.node_id)
        return self

    @property
    def is_cached(self) -> bool:
        return self._cached

    # -- actions (each runs one job) --------------------------------------------------------

    async def collect(self, *, timeout: float | None = None) -> list[T]:
        """Every item, partition 0 first (a list on the driver: mind its size)."""
        parts = await run_one(self.session, self.plan(list), timeout)
        return [x for part in parts for x in part]

    async def count(self, *, timeout: float | None = None) -> int:
        """The number of items."""
        return sum(await run_one(self.session, self.plan(ops.count_items), timeout))

    async def take(self, n: int, *, timeout: float | None = None) -> list[T]:
        """The first ``n`` items in ``collect()``'s order (each partition stops after ``n``)."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"take() needs a count >= 0, got {n!r}")
        parts = await run_one(self.session, self.plan(functools.partial(ops.first_n, n)), timeout)
        return [x for part in parts for x in part][:n]

    # -- planning ------------------------------------------------------------------------

    def chain(self) -> tuple[Dataset[Any], list[Dataset[Any]]]:
        """The stage's input node (a source, wide or union node) and the narrow nodes after."""
        nodes: list[Dataset[Any]] = []
        node: Dataset[Any] = self
        while node.source is None and not node.wide_parents:
            nodes.append(node)
            assert node.parent is not None
            node = node.parent
        nodes.reverse()
        return node, nodes

    def plan(self, action: Action, sink: WorkerSink | None = None) -> JobProgram:
        """This dataset's job as stages in topological order, the last one running ``action``
        (and, for a stream with a sink on the workers, writing its output there)."""
        return plan_job(self, action, sink)

    def shape(self) -> tuple[Any, ...]:
        """The stage structure: jobs of one ``run_jobs`` call must all have the same shape."""
        return self.plan(list).shape()


def _positive(n: object) -> int:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"partitions must be a positive int, got {n!r}")
    return n


def _key_one(kv: tuple[Any, Any]) -> tuple[Any, int]:
    return (kv[0], 1)


def _add(a: int, b: int) -> int:
    return a + b


def split_evenly(data: Iterable[Any], partitions: int) -> list[list[Any]]:
    """Contiguous slices of nearly equal length, as Spark's ``parallelize`` makes them."""
    items = list(data)
    n = len(items)
    return [items[(i * n) // partitions : ((i + 1) * n) // partitions] for i in range(partitions)]


def parallelize(session: DriverSession, data: Iterable[T], partitions: int) -> Dataset[T]:
    """A dataset of ``data`` in ``partitions`` contiguous slices, held by the driver and
    shipped once to the slot each partition is pinned to (released when collected)."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    source = ShippedSource(session.new_node_id())
    session.add_source(source.node_id, split_evenly(data, partitions))
    dataset: Dataset[T] = Dataset(session, partitions=partitions, source=source)
    session.release_with(dataset, source.node_id)
    return dataset


def generate(
    session: DriverSession, func: Callable[[int], Iterable[T]], partitions: int
) -> Dataset[T]:
    """A dataset whose partition ``p`` is ``func(p)``, computed on the slot (no shipping)."""
    if not callable(func):
        raise TypeError("generate() needs a callable func(partition) -> iterable")
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    source = FunctionSource(session.new_node_id(), func)
    dataset: Dataset[T] = Dataset(session, partitions=partitions, source=source)
    return dataset


def job_programs(
    session: DriverSession,
    datasets: Sequence[Dataset[Any]],
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
    distinct = [funcs] if callable(funcs) else {id(f): f for f in func_list}.values()
    for f in distinct:  # each distinct function once
        check_function("run_jobs", f)  # a job's function is a plain one, like map's
    shape = None
    programs: list[JobProgram] = []
    cache: dict[tuple[int, int], JobProgram] = {}
    last: tuple[Any, Any, Any] = (None, None, None)
    for i, (ds, f) in enumerate(zip(datasets, func_list, strict=True)):
        if ds is last[0] and f is last[1]:  # the common case: one dataset, run G times
            programs.append(last[2])
            continue
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
        last = (ds, f, program)
    return programs


__all__ = ["Dataset", "check_function", "job_programs", "parallelize", "split_evenly"]
