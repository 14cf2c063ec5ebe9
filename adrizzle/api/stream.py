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

State: ``update_state`` and the windows keep per-key state on the slot that owns the partition
(the slot's state store, keyed by state id and partition); only outputs travel. Batches of a
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

import functools
import operator
from typing import TYPE_CHECKING, Any

from adrizzle.api.dataset import Dataset
from adrizzle.api.stream_run import StreamBatch, StreamRun
from adrizzle.api.stream_source import StreamOrigin
from adrizzle.connectors.base import Sink as ConnectorSink
from adrizzle.connectors.base import Source as ConnectorSource
from adrizzle.plan.state import StateUpdate, update_by_key
from adrizzle.plan.windows import (
    WindowResult,
    WindowSpec,
    assign_windows,
    close_windows,
    merge_marked,
)

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterable, Callable, Iterable

    from adrizzle.api.stream_source import BuildContext
    from adrizzle.connectors.base import Sink, Source
    from adrizzle.driver.adaptive import GroupSize
    from adrizzle.driver.session import DriverSession


class Stream:
    """A micro-batch stream. Build with ``engine.stream(...)`` or ``engine.stream_from(...)``,
    transform like a ``Dataset``, then ``run()`` (an async iterator of ``StreamBatch``) or
    ``drain()``."""

    def __init__(
        self,
        origin: StreamOrigin,
        partitions: int,
        build: Callable[[BuildContext], Dataset],
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
    ) -> Stream:
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
        partitions = partitions or session.default_partitions()
        _check_partitions(partitions)
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
    ) -> Stream:
        if not hasattr(items, "__aiter__"):
            raise TypeError(f"stream_from() needs an async iterable, got {type(items).__name__}")
        _check_partitions(partitions)
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
        build: Callable[[BuildContext], Dataset],
        partitions: int | None = None,
        state_ids: frozenset[int] = frozenset(),
    ) -> Stream:
        return Stream(
            self.origin,
            partitions or self.partitions,
            build,
            self.sinks,
            self.state_ids | state_ids,
            self.worker_sink,
        )

    def dataset(self, ctx: BuildContext) -> Dataset:
        """This stream's dataset in the run ``ctx`` builds (each node built once per run)."""
        ds = ctx.memo.get(id(self))
        if ds is None:
            ds = ctx.memo[id(self)] = self._build(ctx)
        return ds

    # -- per-batch operators (those of Dataset) -------------------------------------------

    def _narrow(self, name: str, func: Callable[..., Any]) -> Stream:
        if not callable(func):
            raise TypeError(f"{name}() needs a callable, got {type(func).__name__}")
        return self._derive(lambda ctx: getattr(self.dataset(ctx), name)(func))

    def map(self, func: Callable[[Any], Any]) -> Stream:
        return self._narrow("map", func)

    def filter(self, func: Callable[[Any], bool]) -> Stream:
        return self._narrow("filter", func)

    def flat_map(self, func: Callable[[Any], Iterable[Any]]) -> Stream:
        return self._narrow("flat_map", func)

    def map_partitions(self, func: Callable[[Any], Iterable[Any]]) -> Stream:
        return self._narrow("map_partitions", func)

    def reduce_by_key(
        self, func: Callable[[Any, Any], Any], partitions: int | None = None
    ) -> Stream:
        """Per micro-batch: ``(key, value)`` -> one ``(key, reduced)`` per key."""
        if not callable(func):
            raise TypeError("reduce_by_key() needs a callable func(a, b)")
        n = _partitions(partitions, self.partitions)
        return self._derive(lambda ctx: self.dataset(ctx).reduce_by_key(func, n), n)

    def group_by_key(self, partitions: int | None = None) -> Stream:
        n = _partitions(partitions, self.partitions)
        return self._derive(lambda ctx: self.dataset(ctx).group_by_key(n), n)

    def count_by_key(self, partitions: int | None = None) -> Stream:
        n = _partitions(partitions, self.partitions)
        return self._derive(lambda ctx: self.dataset(ctx).count_by_key(n), n)

    def join(self, other: Stream | Dataset, partitions: int | None = None) -> Stream:
        """Inner join per micro-batch with another stream's same batch, or with a fixed
        ``Dataset`` (a table, e.g. ads to campaigns): ``(key, (left, right))``."""
        n = _partitions(partitions, self.partitions)
        if isinstance(other, Dataset):
            if other.session is not self.session:
                raise ValueError("join: the dataset belongs to another engine")
            table = other
            return self._derive(lambda ctx: self.dataset(ctx).join(table, n), n)
        if not isinstance(other, Stream):
            raise TypeError(f"join() needs a Stream or a Dataset, got {type(other).__name__}")
        if other.origin is not self.origin:
            raise ValueError("join: both streams must come from the same source")
        return self._derive(
            lambda ctx: self.dataset(ctx).join(other.dataset(ctx), n), n, other.state_ids
        )

    # -- state ---------------------------------------------------------------------------

    def _stateful(
        self,
        before: Callable[[Dataset], Dataset],
        func: Callable[[dict[Any, Any], Any, int, bool], Iterable[Any]],
        partitions: int,
    ) -> Stream:
        state_id = self.session.new_node_id()
        origin = self.origin
        origin.state_names[state_id] = f"state-{len(origin.state_names)}"
        origin.state_partitions[state_id] = partitions
        first: list[int] = []

        def build(ctx: BuildContext) -> Dataset:
            if not first:
                first.append(ctx.run_first)
            update = StateUpdate(state_id, first[0], ctx.run_first, func, ctx.last_batch)
            return before(self.dataset(ctx)).with_state(update)

        stream = self._derive(build, partitions, frozenset({state_id}))
        # The slots drop this state once the stream is gone (piggybacked on a later launch),
        # and the driver its checkpoint.
        self.session.release_with(stream, state_id)
        return stream

    def update_state(
        self,
        func: Callable[[list[Any], Any], Any],
        *,
        combine: Callable[[Any, Any], Any] | None = None,
        partitions: int | None = None,
    ) -> Stream:
        """Per-key state: for each key with new values in a micro-batch,
        ``new_state = func(values, state_or_None)``; emits ``(key, new_state)`` for those keys.
        Returning None deletes the key's state. The state stays on the slot that owns the key's
        partition. With ``combine`` the values are pre-combined per key (``reduce_by_key``) and
        ``func`` gets a one-item list.

        >>> totals = stream.map(lambda x: ("sum", x)).update_state(  # doctest: +SKIP
        ...     lambda values, total: (total or 0) + sum(values), combine=operator.add)
        """
        if not callable(func):
            raise TypeError("update_state() needs a callable func(values, state)")
        if combine is not None and not callable(combine):
            raise TypeError("update_state(combine=) needs a callable combine(a, b)")
        n = _partitions(partitions, self.partitions)

        def before(ds: Dataset) -> Dataset:
            return ds.reduce_by_key(combine, n) if combine is not None else ds.group_by_key(n)

        step = functools.partial(update_by_key, func, combine is not None)
        return self._stateful(before, step, n)

    def window_reduce(
        self,
        func: Callable[[Any, Any], Any],
        window: float,
        *,
        event_time: Callable[[Any], float],
        slide: float | None = None,
        lateness: float = 0.0,
        partitions: int | None = None,
        value: Callable[[Any], Any] | None = None,
    ) -> Stream:
        """Event-time windows over ``(key, value)`` items: per key and window, the values
        reduced with ``func``, emitted once (a ``WindowResult``) when the watermark (largest
        event time seen minus ``lateness``) passes the window's end. ``event_time(item)`` is in
        the unit of ``window``; ``slide`` < ``window`` makes sliding windows (default tumbling).
        ``value(item)`` replaces the item's value when given."""
        if not callable(func) or not callable(event_time):
            raise TypeError("window_reduce() needs callables func(a, b) and event_time(item)")
        spec = WindowSpec(window, window if slide is None else slide, lateness)
        n = _partitions(partitions, self.partitions)
        assign = functools.partial(assign_windows, spec, event_time, value, n)
        merge = functools.partial(merge_marked, func)

        def before(ds: Dataset) -> Dataset:
            return ds.map_partitions(assign).reduce_by_key(merge, n)

        return self._stateful(before, functools.partial(close_windows, spec, func), n)

    def window_count(
        self,
        window: float,
        *,
        event_time: Callable[[Any], float],
        slide: float | None = None,
        lateness: float = 0.0,
        partitions: int | None = None,
    ) -> Stream:
        """Items per key per event-time window (see ``window_reduce``)."""
        return self.window_reduce(
            operator.add,
            window,
            event_time=event_time,
            slide=slide,
            lateness=lateness,
            partitions=partitions,
            value=_one,
        )

    # -- output --------------------------------------------------------------------------

    def sink(self, target: Callable[[StreamBatch], Any] | Sink) -> Stream:
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
        group_size: GroupSize = 1,
        timeout: float | None = None,
        pre_schedule: bool = True,
    ) -> StreamRun:
        """Run ``batches`` more micro-batches (default: until the source ends; forever for an
        unbounded source). Iterate with ``async for`` to get each batch's ``StreamBatch`` as
        soon as it is done; sinks are called before it is yielded. ``timeout``: a run of
        batches failing to finish within this many seconds after its last batch was due
        raises ``RunTimeoutError``."""
        if batches is not None and batches < 0:
            raise ValueError(f"batches must be >= 0, got {batches}")
        return StreamRun(self, batches, group_size, timeout, pre_schedule)

    async def drain(
        self,
        batches: int | None = None,
        *,
        group_size: GroupSize = 1,
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
