"""Streams: a pipeline written once and run micro-batch after micro-batch on the engine.

A ``Stream`` describes, lazily, the ``Dataset`` of each micro-batch: batch ``b`` starts from the
source's batch ``b`` and goes through the same operators. Running it (``adrizzle.api.stream_run``)
builds those datasets and starts them on the engine in runs of consecutive batches (the group size
is fixed or adapted by a controller that lives across the runs), so everything the engine does
for micro-batches applies: group scheduling, pre-scheduled shuffles, per-batch results.

Sources (``adrizzle.api.stream_source``):

- replayable (``engine.stream(source, partitions)``): ``source(batch, partition) -> iterable``,
  deterministic, read on the slot that owns the partition (like a Kafka partition read from an
  offset). With ``batch_interval`` T the batch covers ``[start + bT, start + (b+1)T)`` of wall
  time and the slot reads it when that interval is over, so a group of batches is launched
  ahead and each batch runs as soon as its data exists (Drizzle's pre-scheduling);
- live (``engine.stream_from(async_iterator, partitions)``): what arrives on the driver within
  each batch interval becomes one micro-batch, shipped to the slots.

Operators: those of ``Dataset`` apply per micro-batch (joins and unions also with a fixed
``Dataset``, a table). State: ``update_state`` and the windows (``adrizzle.api.stream_state``)
keep per-key state on the slot that owns the partition (the slot's state store, keyed by state
id and partition); only outputs travel. Batches of a
partition apply in batch order; a second ``run()`` continues with the source's next batch.

Fault tolerance: the state is checkpointed at group boundaries (``adrizzle.driver.checkpoint``).
When a worker is lost (or a frame or data link), the run is rolled back: the next run restores
the last checkpoint on the workers left and replays the batches since from the source (a live
source's batches are kept on the driver until a checkpoint covers them); batches delivered
before are not delivered again, so sinks and consumers see every batch exactly once and the
state counts every batch once. When workers join or leave, the partitions move at the next run
of the stream (a run spans at most a few groups), their state restored from the checkpoint.

    >>> stream = engine.stream(read_log, partitions=4, batch_interval=0.05)  # doctest: +SKIP
    >>> totals = stream.map(lambda x: ("total", x)).update_state(add_values, combine=add)
    >>> async for update in totals.run(batches=100, group_size="auto"):
    ...     print(update.batch, update.values)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from adrizzle.api.dataset import Dataset, check_function
from adrizzle.api.stream_run import StreamBatch, StreamRun
from adrizzle.api.stream_source import StreamOrigin
from adrizzle.api.stream_state import StreamState, positive
from adrizzle.connectors.base import Sink as ConnectorSink
from adrizzle.connectors.base import Source as ConnectorSource
from adrizzle.plan.windows import WindowResult

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator

    from adrizzle.api.stream_source import BuildContext
    from adrizzle.connectors.base import Sink, Source
    from adrizzle.driver.adaptive import GroupSize
    from adrizzle.driver.session import DriverSession

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K")
V = TypeVar("V")
W = TypeVar("W")
C = TypeVar("C")


class Stream(StreamState[T]):
    """A micro-batch stream of ``T``. Build with ``engine.stream(...)`` or
    ``engine.stream_from(...)``, transform like a ``Dataset`` (per micro-batch), keep state
    (``update_state``, windows), then ``run()`` (an async iterator of ``StreamBatch``) or
    ``drain()``."""

    def __init__(
        self,
        origin: StreamOrigin,
        partitions: int,
        build: Callable[[BuildContext], Dataset[Any]],
        sinks: tuple[Callable[[StreamBatch], Any], ...] = (),
        state_ids: frozenset[int] = frozenset(),
        worker_sink: Sink | None = None,
    ) -> None:
        self.origin = origin  # the source, its offset and pacing, shared by derived streams
        self.session = origin.session
        self.partitions = partitions
        self._build = build
        self.sinks = sinks  # callbacks on the driver
        self.state_ids = state_ids  # the stateful steps this stream's batches go through
        self.worker_sink = worker_sink  # written from the slots (adrizzle.connectors.base.Sink)

    @property
    def name(self) -> str:
        """The stream's name: keys its offset log, checkpoints and sinks' progress."""
        return self.origin.name

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_source(
        cls,
        session: DriverSession,
        source: Callable[[int, int], Iterable[Any]] | Source,
        partitions: int | None,
        *,
        batch_interval: float | None = None,
        start: float | None = None,
        batches: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        name: str = "stream",
    ) -> Stream[Any]:
        connector = source if isinstance(source, ConnectorSource) else None
        if connector is not None:
            found = connector.partitions()  # SourceError when the broker cannot tell
            if partitions is not None and partitions != found:
                raise ValueError(
                    f"{connector.name} has {found} partitions, not the {partitions} asked for"
                )
            partitions = found
        elif not callable(source):
            raise TypeError(
                "a stream source is a connector (adrizzle.connectors) or a callable "
                f"source(batch, partition), not {type(source).__name__}"
            )
        partitions = positive(partitions or session.default_partitions(), 1)
        if batch_interval is not None and not batch_interval > 0:
            raise ValueError(f"batch_interval must be > 0 seconds, got {batch_interval}")
        if batches is not None and batches < 0:
            raise ValueError(f"batches must be >= 0, got {batches}")
        origin = StreamOrigin(
            session,
            partitions,
            source=None if connector is not None else source,  # type: ignore[arg-type]
            connector=connector,
            batch_interval=batch_interval,
            start=start,
            batches=batches,
            checkpoint_dir=checkpoint_dir,
            name=name,
        )
        return cls(origin, partitions, origin.dataset)

    @classmethod
    def from_async(
        cls,
        session: DriverSession,
        items: AsyncIterable[Any],
        partitions: int,
        *,
        batch_interval: float,
        max_batch: int,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        name: str = "stream",
    ) -> Stream[Any]:
        if not hasattr(items, "__aiter__"):
            raise TypeError(f"stream_from() needs an async iterable, got {type(items).__name__}")
        positive(partitions, 1)
        if not batch_interval > 0:
            raise ValueError(f"batch_interval must be > 0 seconds, got {batch_interval}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        origin = StreamOrigin(
            session,
            partitions,
            live=items,
            batch_interval=batch_interval,
            max_batch=max_batch,
            checkpoint_dir=checkpoint_dir,
            name=name,
        )
        return cls(origin, partitions, origin.dataset)

    def _derive(
        self,
        build: Callable[[BuildContext], Dataset[Any]],
        partitions: int | None = None,
        state_ids: frozenset[int] = frozenset(),
    ) -> Stream[Any]:
        return Stream(
            self.origin,
            partitions or self.partitions,
            build,
            self.sinks,
            self.state_ids | state_ids,
            self.worker_sink,
        )

    def dataset(self, ctx: BuildContext) -> Dataset[T]:
        """This stream's dataset in the run ``ctx`` builds (each node built once per run)."""
        ds = ctx.memo.get(id(self))
        if ds is None:
            ds = ctx.memo[id(self)] = self._build(ctx)
        return ds

    def _per_batch(
        self, op: Callable[[Dataset[T]], Dataset[U]], partitions: int | None = None
    ) -> Stream[U]:
        """The stream whose batch ``b`` is ``op`` of this stream's batch ``b``."""
        return self._derive(lambda ctx: op(self.dataset(ctx)), partitions)

    def _with(
        self,
        name: str,
        other: Stream[Any] | Dataset[Any],
        op: Callable[[Dataset[T], Dataset[Any]], Dataset[U]],
        partitions: int | None,
    ) -> Stream[U]:
        """Per batch, ``op`` with another stream's same batch or with a fixed dataset."""
        if isinstance(other, Dataset):
            if other.session is not self.session:
                raise ValueError(f"{name}: the dataset belongs to another engine")
            table = other
            return self._derive(lambda ctx: op(self.dataset(ctx), table), partitions)
        if not isinstance(other, Stream):
            raise TypeError(f"{name}() needs a Stream or a Dataset, got {type(other).__name__}")
        if other.origin is not self.origin:
            raise ValueError(f"{name}: both streams must come from the same source")
        return self._derive(
            lambda ctx: op(self.dataset(ctx), other.dataset(ctx)), partitions, other.state_ids
        )

    # -- per-batch operators (those of Dataset) -------------------------------------------

    def map(self, func: Callable[[T], U]) -> Stream[U]:
        check_function("map", func)
        return self._per_batch(lambda ds: ds.map(func))

    def filter(self, func: Callable[[T], object]) -> Stream[T]:
        check_function("filter", func)
        return self._per_batch(lambda ds: ds.filter(func))

    def flat_map(self, func: Callable[[T], Iterable[U]]) -> Stream[U]:
        check_function("flat_map", func)
        return self._per_batch(lambda ds: ds.flat_map(func))

    def map_partitions(self, func: Callable[[Iterator[T]], Iterable[U]]) -> Stream[U]:
        check_function("map_partitions", func)
        return self._per_batch(lambda ds: ds.map_partitions(func))

    def map_partitions_with_index(
        self, func: Callable[[int, Iterator[T]], Iterable[U]]
    ) -> Stream[U]:
        check_function("map_partitions_with_index", func)
        return self._per_batch(lambda ds: ds.map_partitions_with_index(func))

    def map_async(self, func: Callable[[T], Awaitable[U]], concurrency: int = 16) -> Stream[U]:
        """``await func(x)`` per item on the slot's event loop (see ``Dataset.map_async``)."""
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive int, got {concurrency!r}")
        return self._per_batch(lambda ds: ds.map_async(func, concurrency))

    def key_by(self, func: Callable[[T], K]) -> Stream[tuple[K, T]]:
        check_function("key_by", func)
        return self._per_batch(lambda ds: ds.key_by(func))

    def map_values(self: Stream[tuple[K, V]], func: Callable[[V], U]) -> Stream[tuple[K, U]]:
        check_function("map_values", func)
        return self._per_batch(lambda ds: ds.map_values(func))

    def keys(self: Stream[tuple[K, V]]) -> Stream[K]:
        return self._per_batch(lambda ds: ds.keys())

    def values(self: Stream[tuple[K, V]]) -> Stream[V]:
        return self._per_batch(lambda ds: ds.values())

    def reduce_by_key(
        self: Stream[tuple[K, V]], func: Callable[[V, V], V], partitions: int | None = None
    ) -> Stream[tuple[K, V]]:
        """Per micro-batch: ``(key, value)`` -> one ``(key, reduced)`` per key."""
        check_function("reduce_by_key", func)
        n = positive(partitions, self.partitions)
        return self._per_batch(lambda ds: ds.reduce_by_key(func, n), n)

    def combine_by_key(
        self: Stream[tuple[K, V]],
        create: Callable[[V], C],
        merge_value: Callable[[C, V], C],
        merge_combiners: Callable[[C, C], C],
        partitions: int | None = None,
    ) -> Stream[tuple[K, C]]:
        n = positive(partitions, self.partitions)
        for f in (create, merge_value, merge_combiners):
            check_function("combine_by_key", f)
        return self._per_batch(
            lambda ds: ds.combine_by_key(create, merge_value, merge_combiners, n), n
        )

    def aggregate_by_key(
        self: Stream[tuple[K, V]],
        zero: U,
        seq_func: Callable[[U, V], U],
        comb_func: Callable[[U, U], U],
        partitions: int | None = None,
    ) -> Stream[tuple[K, U]]:
        n = positive(partitions, self.partitions)
        check_function("aggregate_by_key", seq_func)
        check_function("aggregate_by_key", comb_func)
        return self._per_batch(lambda ds: ds.aggregate_by_key(zero, seq_func, comb_func, n), n)

    def group_by_key(
        self: Stream[tuple[K, V]], partitions: int | None = None
    ) -> Stream[tuple[K, list[V]]]:
        n = positive(partitions, self.partitions)
        return self._per_batch(lambda ds: ds.group_by_key(n), n)

    def count_by_key(
        self: Stream[tuple[K, Any]], partitions: int | None = None
    ) -> Stream[tuple[K, int]]:
        n = positive(partitions, self.partitions)
        return self._per_batch(lambda ds: ds.count_by_key(n), n)

    def distinct(self, partitions: int | None = None) -> Stream[T]:
        """Each distinct item of a micro-batch once."""
        n = positive(partitions, self.partitions)
        return self._per_batch(lambda ds: ds.distinct(n), n)

    def repartition(self, partitions: int) -> Stream[T]:
        n = positive(partitions, self.partitions)
        return self._per_batch(lambda ds: ds.repartition(n), n)

    def sort_by_key(
        self: Stream[tuple[K, V]], ascending: bool = True, partitions: int | None = None
    ) -> Stream[tuple[K, V]]:
        """Each micro-batch sorted by key (its values in order; see ``Dataset.sort_by_key``)."""
        n = positive(partitions, self.partitions)
        return self._per_batch(lambda ds: ds.sort_by_key(ascending, n), n)

    def sort_by(
        self, func: Callable[[T], Any], ascending: bool = True, partitions: int | None = None
    ) -> Stream[T]:
        check_function("sort_by", func)
        n = positive(partitions, self.partitions)
        return self._per_batch(lambda ds: ds.sort_by(func, ascending, n), n)

    def join(
        self: Stream[tuple[K, V]],
        other: Stream[tuple[K, W]] | Dataset[tuple[K, W]],
        partitions: int | None = None,
    ) -> Stream[tuple[K, tuple[V, W]]]:
        """Inner join per micro-batch with another stream's same batch, or with a fixed
        ``Dataset`` (a table, e.g. ads to campaigns): ``(key, (left, right))``."""
        n = positive(partitions, self.partitions)
        return self._with("join", other, lambda a, b: a.join(b, n), n)

    def left_outer_join(
        self: Stream[tuple[K, V]],
        other: Stream[tuple[K, W]] | Dataset[tuple[K, W]],
        partitions: int | None = None,
    ) -> Stream[tuple[K, tuple[V, W | None]]]:
        n = positive(partitions, self.partitions)
        return self._with("left_outer_join", other, lambda a, b: a.left_outer_join(b, n), n)

    def right_outer_join(
        self: Stream[tuple[K, V]],
        other: Stream[tuple[K, W]] | Dataset[tuple[K, W]],
        partitions: int | None = None,
    ) -> Stream[tuple[K, tuple[V | None, W]]]:
        n = positive(partitions, self.partitions)
        return self._with("right_outer_join", other, lambda a, b: a.right_outer_join(b, n), n)

    def full_outer_join(
        self: Stream[tuple[K, V]],
        other: Stream[tuple[K, W]] | Dataset[tuple[K, W]],
        partitions: int | None = None,
    ) -> Stream[tuple[K, tuple[V | None, W | None]]]:
        n = positive(partitions, self.partitions)
        return self._with("full_outer_join", other, lambda a, b: a.full_outer_join(b, n), n)

    def cogroup(
        self: Stream[tuple[K, V]],
        other: Stream[tuple[K, W]] | Dataset[tuple[K, W]],
        partitions: int | None = None,
    ) -> Stream[tuple[K, tuple[list[V], list[W]]]]:
        n = positive(partitions, self.partitions)
        return self._with("cogroup", other, lambda a, b: a.cogroup(b, n), n)

    def union(self, other: Stream[T] | Dataset[T]) -> Stream[T]:
        """Per micro-batch, this stream's partitions then ``other``'s (another stream of the
        same source, or a fixed dataset): narrow, see ``Dataset.union``."""
        n = self.partitions + getattr(other, "partitions", 0)
        return self._with("union", other, lambda a, b: a.union(b), n)

    # -- output --------------------------------------------------------------------------

    def sink(self, target: Callable[[StreamBatch], Any] | Sink) -> Stream[T]:
        """Where the output goes.

        A ``Sink`` (``adrizzle.connectors``: Postgres, Redis, files, or your own): each
        micro-batch's partition is written from the slot that computed it, keyed by
        (stream name, batch, partition) so that a replay never doubles it; the data does not
        pass through the driver (``run()`` still yields a ``StreamBatch`` per batch, its values
        empty). A batch is written once its source ranges are in the offset log. One per stream.

        A callable: ``target(batch)`` (plain or async) on the driver with each micro-batch's
        output, in batch order, as soon as the batch is done (Spark's ``foreachBatch``).
        """
        if isinstance(target, ConnectorSink):
            if self.worker_sink is not None:
                raise ValueError(f"stream {self.name!r} already writes to {self.worker_sink.name}")
            return Stream(
                self.origin, self.partitions, self.dataset, self.sinks, self.state_ids, target
            )
        if not callable(target):
            raise TypeError(f"sink() needs a Sink or a callable, got {type(target).__name__}")
        # No operator: the new node builds through this one, so datasets stay shared.
        return Stream(
            self.origin,
            self.partitions,
            self.dataset,
            (*self.sinks, target),
            self.state_ids,
            self.worker_sink,
        )

    def run(
        self,
        batches: int | None = None,
        *,
        group_size: GroupSize = "auto",
        timeout: float | None = None,
        pre_schedule: bool = True,
    ) -> StreamRun:
        """Run ``batches`` more micro-batches (default: until the source ends; forever for an
        unbounded source). Iterate with ``async for`` to get each batch's ``StreamBatch`` as
        soon as it is done; sinks are called before it is yielded. ``timeout``: a run of
        batches failing to finish within this many seconds after its last batch was due
        raises ``RunTimeoutError``. ``group_size``: micro-batches per group, ``"auto"`` (the
        default: adapted to the measured coordination overhead, see ``AdaptiveGroupSize``),
        an int (1 is the BSP baseline) or an ``AdaptiveGroupSize``. A user function that
        raises fails the run with ``TaskError``, whose ``batch`` is the stream's batch."""
        if batches is not None and batches < 0:
            raise ValueError(f"batches must be >= 0, got {batches}")
        return StreamRun(self, batches, group_size, timeout, pre_schedule)

    async def drain(
        self,
        batches: int | None = None,
        *,
        group_size: GroupSize = "auto",
        timeout: float | None = None,
    ) -> int:
        """Run (see ``run``) for the sinks only; return the number of batches run."""
        n = 0
        async for _batch in self.run(batches, group_size=group_size, timeout=timeout):
            n += 1
        return n


def _one(item: Any) -> int:
    return 1


def _partitions(partitions: int | None, default: int) -> int:
    n = default if partitions is None else partitions
    _check_partitions(n)
    return n


def _check_partitions(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"partitions must be a positive int, got {n!r}")


__all__ = ["Stream", "StreamBatch", "StreamRun", "WindowResult"]
