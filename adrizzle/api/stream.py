"""Streams: a pipeline written once and run micro-batch after micro-batch on the engine.

A ``Stream`` describes, lazily, the ``Dataset`` of each micro-batch: batch ``b`` starts from the
source's batch ``b`` and goes through the same operators. Running it builds those datasets and
hands them to ``Engine.iter_jobs`` in runs of consecutive batches (the group size is fixed or
adapted by a ``GroupSizeController`` that lives across the runs), so everything the engine does
for micro-batches applies: group scheduling, pre-scheduled shuffles, per-batch results.

Sources:

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

import asyncio
import dataclasses
import functools
import inspect
import logging
import math
import operator
import time
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adrizzle.api.dataset import Dataset
from adrizzle.driver.adaptive import resolve_group_size
from adrizzle.errors import ReplayNeeded, StateRollback
from adrizzle.plan.program import BatchSource
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
    from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable

    from adrizzle.api.engine import Engine
    from adrizzle.driver.adaptive import GroupSize

log = logging.getLogger("adrizzle.stream")
# A run holds at least this many batches, and this many groups of the current size, so that a
# run boundary (where the engine's window of groups in flight drains once) stays rare.
MIN_RUN_BATCHES = 64
GROUPS_PER_RUN = 4
# A stream gives up after this many roll-backs in a row without delivering a new batch.
MAX_ROLLBACKS = 10


@dataclasses.dataclass(frozen=True, slots=True)
class StreamBatch:
    """One micro-batch's output, delivered as soon as that batch is done.

    ``values``: the output items of every partition, in partition order. ``due``: for a paced
    stream, the wall-clock time (epoch seconds) its interval ended, else None.
    """

    batch: int
    values: list[Any]
    done_at: float
    due: float | None = None

    @property
    def latency(self) -> float | None:
        """Seconds from the end of the batch's interval to its output reaching the driver."""
        return None if self.due is None else self.done_at - self.due


class _Origin:
    """What the streams derived from one source share: the source, its pacing and offset."""

    def __init__(
        self,
        engine: Engine,
        partitions: int,
        *,
        source: Callable[[int, int], Iterable[Any]] | None = None,
        live: AsyncIterable[Any] | None = None,
        batch_interval: float | None = None,
        start: float | None = None,
        batches: int | None = None,
        max_batch: int = 100_000,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.engine = engine
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.partitions = partitions
        self.source = source
        self.live = live
        self.batch_interval = batch_interval
        self.start = start
        self.batches = batches  # None: unbounded (a live source sets it when it ends)
        self.max_batch = max_batch
        self.next_batch = 0  # the source's offset: where the next run starts
        self.cut: dict[int, list[Any]] = {}  # live: batches cut but not yet run
        self.cut_at: dict[int, float] = {}  # live: when each of them was cut (epoch s)
        self.cut_signal = asyncio.Event()
        self.live_iter: AsyncIterator[Any] | None = None
        self.live_next: asyncio.Future[Any] | None = None  # survives a run that stops
        # live, stateful: items of batches run but not yet covered by a checkpoint (replay)
        self.kept: dict[int, list[Any]] = {}
        # Stateful steps in the order they were made: stable names across drivers, so a
        # checkpoint directory written by an earlier driver can be resumed from.
        self.state_names: dict[int, str] = {}
        self.state_partitions: dict[int, int] = {}
        self.resume_checked = False

    def due(self, batch: int) -> float | None:
        """When the batch's data was complete: its interval's end, or when it was cut."""
        if self.live is not None:
            return self.cut_at.get(batch)
        if self.batch_interval is None or self.start is None:
            return None
        return self.start + (batch + 1) * self.batch_interval

    def dataset(self, ctx: _BuildContext) -> Dataset:
        if self.live is not None:
            b = ctx.batch
            assert b is not None
            items = self.cut.pop(b) if b in self.cut else self.kept[b]
            if ctx.keep:
                self.kept[b] = items
            return self.engine.parallelize(items, self.partitions)
        assert self.source is not None
        source = BatchSource(
            self.engine._new_node_id(),
            self.source,
            ctx.run_first,
            self.batch_interval,
            self.start,
        )
        return Dataset(self.engine, partitions=self.partitions, source=source)


@dataclasses.dataclass(slots=True)
class _BuildContext:
    """The build of a run's dataset: each stream node's dataset once (a node used twice is
    shared). Replayable sources build one dataset for the whole run (the slot supplies each
    job's batch); live sources one per batch (``batch``), each shipping that batch's items."""

    run_first: int
    last_batch: int | None
    batch: int | None = None
    keep: bool = False  # keep a live batch's items for a replay
    memo: dict[int, Dataset] = dataclasses.field(default_factory=dict)


class Stream:
    """A micro-batch stream. Build with ``engine.stream(...)`` or ``engine.stream_from(...)``,
    transform like a ``Dataset``, then ``run()`` (an async iterator of ``StreamBatch``) or
    ``drain()``."""

    def __init__(
        self,
        origin: _Origin,
        partitions: int,
        build: Callable[[_BuildContext], Dataset],
        sinks: tuple[Callable[[StreamBatch], Any], ...] = (),
        state_ids: frozenset[int] = frozenset(),
    ) -> None:
        self._origin = origin
        self.engine = origin.engine
        self.partitions = partitions
        self._build_fn = build
        self._sinks = sinks
        self._state_ids = state_ids  # the stateful steps this stream's batches go through

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_source(
        cls,
        engine: Engine,
        source: Callable[[int, int], Iterable[Any]],
        partitions: int,
        *,
        batch_interval: float | None = None,
        start: float | None = None,
        batches: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> Stream:
        if not callable(source):
            raise TypeError("a stream source must be callable as source(batch, partition)")
        _check_partitions(partitions)
        if batch_interval is not None and not batch_interval > 0:
            raise ValueError(f"batch_interval must be > 0 seconds, got {batch_interval}")
        if batches is not None and batches < 0:
            raise ValueError(f"batches must be >= 0, got {batches}")
        origin = _Origin(
            engine,
            partitions,
            source=source,
            batch_interval=batch_interval,
            start=start,
            batches=batches,
            checkpoint_dir=checkpoint_dir,
        )
        return cls(origin, partitions, origin.dataset)

    @classmethod
    def from_async(
        cls,
        engine: Engine,
        items: AsyncIterable[Any],
        partitions: int,
        *,
        batch_interval: float,
        max_batch: int,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> Stream:
        if not hasattr(items, "__aiter__"):
            raise TypeError(f"stream_from() needs an async iterable, got {type(items).__name__}")
        _check_partitions(partitions)
        if not batch_interval > 0:
            raise ValueError(f"batch_interval must be > 0 seconds, got {batch_interval}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        origin = _Origin(
            engine,
            partitions,
            live=items,
            batch_interval=batch_interval,
            max_batch=max_batch,
            checkpoint_dir=checkpoint_dir,
        )
        return cls(origin, partitions, origin.dataset)

    def _derive(
        self,
        build: Callable[[_BuildContext], Dataset],
        partitions: int | None = None,
        state_ids: frozenset[int] = frozenset(),
    ) -> Stream:
        return Stream(
            self._origin,
            partitions or self.partitions,
            build,
            self._sinks,
            self._state_ids | state_ids,
        )

    def _dataset(self, ctx: _BuildContext) -> Dataset:
        ds = ctx.memo.get(id(self))
        if ds is None:
            ds = ctx.memo[id(self)] = self._build_fn(ctx)
        return ds

    # -- per-batch operators (those of Dataset) -------------------------------------------

    def _narrow(self, name: str, func: Callable[..., Any]) -> Stream:
        if not callable(func):
            raise TypeError(f"{name}() needs a callable, got {type(func).__name__}")
        return self._derive(lambda ctx: getattr(self._dataset(ctx), name)(func))

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
        return self._derive(lambda ctx: self._dataset(ctx).reduce_by_key(func, n), n)

    def group_by_key(self, partitions: int | None = None) -> Stream:
        n = _partitions(partitions, self.partitions)
        return self._derive(lambda ctx: self._dataset(ctx).group_by_key(n), n)

    def count_by_key(self, partitions: int | None = None) -> Stream:
        n = _partitions(partitions, self.partitions)
        return self._derive(lambda ctx: self._dataset(ctx).count_by_key(n), n)

    def join(self, other: Stream | Dataset, partitions: int | None = None) -> Stream:
        """Inner join per micro-batch with another stream's same batch, or with a fixed
        ``Dataset`` (a table, e.g. ads to campaigns): ``(key, (left, right))``."""
        n = _partitions(partitions, self.partitions)
        if isinstance(other, Dataset):
            if other.engine is not self.engine:
                raise ValueError("join: the dataset belongs to another engine")
            table = other
            return self._derive(lambda ctx: self._dataset(ctx).join(table, n), n)
        if not isinstance(other, Stream):
            raise TypeError(f"join() needs a Stream or a Dataset, got {type(other).__name__}")
        if other._origin is not self._origin:
            raise ValueError("join: both streams must come from the same source")
        return self._derive(
            lambda ctx: self._dataset(ctx).join(other._dataset(ctx), n), n, other._state_ids
        )

    # -- state ---------------------------------------------------------------------------

    def _stateful(
        self,
        before: Callable[[Dataset], Dataset],
        func: Callable[[dict[Any, Any], Any, int, bool], Iterable[Any]],
        partitions: int,
    ) -> Stream:
        state_id = self.engine._new_node_id()
        origin = self._origin
        origin.state_names[state_id] = f"state-{len(origin.state_names)}"
        origin.state_partitions[state_id] = partitions
        first: list[int] = []

        def build(ctx: _BuildContext) -> Dataset:
            if not first:
                first.append(ctx.run_first)
            update = StateUpdate(state_id, first[0], ctx.run_first, func, ctx.last_batch)
            return before(self._dataset(ctx)).with_state(update)

        stream = self._derive(build, partitions, frozenset({state_id}))
        # The slots drop this state once the stream is gone (piggybacked on a later launch),
        # and the driver its checkpoint.
        weakref.finalize(stream, self.engine._blocks.release, state_id)
        weakref.finalize(stream, self.engine._checkpoints.release, state_id)
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

    def sink(self, func: Callable[[StreamBatch], Any]) -> Stream:
        """Call ``func(batch)`` (plain or async) on the driver with each micro-batch's output,
        in batch order, as soon as the batch is done."""
        if not callable(func):
            raise TypeError(f"sink() needs a callable, got {type(func).__name__}")
        # No operator: the new node builds through this one, so datasets stay shared.
        return Stream(
            self._origin, self.partitions, self._dataset, (*self._sinks, func), self._state_ids
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


class StreamRun:
    """One ``Stream.run()``: an async iterator of ``StreamBatch``, plus what it chose.

    ``controller`` is the adaptive group size controller (None for a fixed size);
    ``group_sizes()`` counts the groups run per size.
    """

    def __init__(
        self,
        stream: Stream,
        batches: int | None,
        group_size: GroupSize,
        timeout: float | None,
        pre_schedule: bool,
    ) -> None:
        self.stream = stream
        self.batches = batches
        self.max_size, self.controller = resolve_group_size(group_size)
        if self.controller is None:
            self._fixed: GroupSize = self.max_size
        else:
            self._fixed = self.controller
        self.timeout = timeout
        self.pre_schedule = pre_schedule
        self._fixed_groups: dict[int, int] = {}
        self._gen: AsyncIterator[StreamBatch] | None = None

    def __aiter__(self) -> AsyncIterator[StreamBatch]:
        if self._gen is None:
            self._gen = self._run()
        return self._gen

    def group_sizes(self) -> dict[int, int]:
        """Groups run per group size (adaptive: as observed by the controller)."""
        if self.controller is not None:
            return dict(sorted(self.controller.sizes_used.items()))
        return dict(sorted(self._fixed_groups.items()))

    def _run_length(self) -> int:
        size = self.controller.size if self.controller is not None else self.max_size
        groups = max(GROUPS_PER_RUN, -(-MIN_RUN_BATCHES // size))
        return groups * size

    async def _run(self) -> AsyncIterator[StreamBatch]:
        stream = self.stream
        origin = stream._origin
        engine = stream.engine
        if stream._state_ids and origin.checkpoint_dir is not None and not origin.resume_checked:
            origin.resume_checked = True
            if origin.next_batch == 0:  # a new driver: continue after an earlier one's files
                resumed = engine._checkpoints.resume(
                    origin.checkpoint_dir,
                    {
                        sid: (origin.state_names[sid], origin.state_partitions[sid])
                        for sid in stream._state_ids
                    },
                )
                if resumed is not None:
                    origin.next_batch = resumed + 1
        if origin.batch_interval is not None and origin.start is None and origin.live is None:
            # Batch b's interval ends at start + (b + 1) * T: the first one run ends T from now.
            origin.start = time.time() - origin.next_batch * origin.batch_interval
        begin = origin.next_batch
        end = math.inf if self.batches is None else begin + self.batches
        if origin.batches is not None:
            end = min(end, origin.batches)
        feeder: asyncio.Task[None] | None = None
        if origin.live is not None:
            feeder = asyncio.get_running_loop().create_task(_feed_live(origin))
        keep = origin.live is not None and bool(stream._state_ids)
        # After a roll-back: run again from this batch (restored to the state before it);
        # batches below origin.next_batch were delivered already and are not delivered again.
        resume: int | None = None
        after_loss = False
        rollbacks = 0
        try:
            while origin.next_batch < end:
                first = origin.next_batch if resume is None else resume
                if origin.live is not None:
                    if first not in origin.kept:
                        await _wait_cut(origin, first, feeder)
                        if origin.batches is not None:
                            end = min(end, origin.batches)
                        if first >= end:
                            break
                    count = 0
                    limit = self._run_length()
                    while count < limit and (
                        first + count in origin.kept or first + count in origin.cut
                    ):
                        count += 1
                else:
                    count = self._run_length()
                last_batch = int(min(end, first + count))
                final = None if origin.batches is None else origin.batches - 1
                if origin.live is not None:
                    datasets = [
                        stream._dataset(_BuildContext(first, final, b, keep))
                        for b in range(first, last_batch)
                    ]
                else:
                    datasets = [stream._dataset(_BuildContext(first, final))] * (last_batch - first)
                if self.controller is None:
                    full, rest = divmod(len(datasets), self.max_size)
                    self._fixed_groups[self.max_size] = (
                        self._fixed_groups.get(self.max_size, 0) + full
                    )
                    if rest:
                        self._fixed_groups[rest] = self._fixed_groups.get(rest, 0) + 1
                timeout = None
                if self.timeout is not None:
                    due = origin.due(last_batch - 1)
                    timeout = self.timeout + max(0.0, (due or 0.0) - time.time())
                try:
                    run = await engine._start_run(
                        datasets,
                        list,
                        self._fixed,
                        self.pre_schedule,
                        checkpoint_dir=origin.checkpoint_dir,
                        start_small=after_loss,
                        state_names=origin.state_names,
                    )
                    # ``datasets`` stays referenced during the run: a dataset collected on
                    # the driver releases its source blocks on the slots.
                    async for job in engine._results(run, timeout, False):
                        assert job.values is not None
                        b = first + job.index
                        if b < origin.next_batch:
                            continue  # replayed for the state only: delivered before
                        rollbacks = 0
                        values = [v for part in job.values for v in part]
                        batch = StreamBatch(b, values, time.time(), origin.due(b))
                        origin.cut_at.pop(b, None)
                        origin.next_batch = b + 1
                        for sink in stream._sinks:
                            result = sink(batch)
                            if inspect.isawaitable(result):
                                await result
                        yield batch
                except ReplayNeeded as exc:
                    log.info("%s", exc)
                    resume = exc.from_batch
                    continue
                except StateRollback as exc:
                    rollbacks += 1
                    if rollbacks > MAX_ROLLBACKS:
                        raise StateRollback(
                            f"{rollbacks} roll-backs in a row without a new micro-batch: {exc}"
                        ) from exc
                    log.warning("stream rolled back (%s); restarting from its checkpoint", exc)
                    resume, after_loss = None, True
                    continue
                resume, after_loss = None, False
                del datasets
                if keep:  # a checkpoint covers these: no replay will need their items
                    covered = engine._checkpoints.covered_through(stream._state_ids)
                    for b in [b for b in origin.kept if covered is not None and b <= covered]:
                        del origin.kept[b]
        finally:
            if feeder is not None:
                feeder.cancel()
                try:
                    await feeder
                except asyncio.CancelledError:
                    pass


async def _feed_live(origin: _Origin) -> None:
    """Cut the live iterator's items into batches every ``batch_interval`` (or ``max_batch``)."""
    assert origin.live is not None
    assert origin.batch_interval is not None
    if origin.live_iter is None:
        origin.live_iter = aiter(origin.live)
    it = origin.live_iter
    loop = asyncio.get_running_loop()
    interval = origin.batch_interval
    items: list[Any] = []
    next_cut = loop.time() + interval
    number = origin.next_batch + len(origin.cut)
    try:
        while True:
            if origin.live_next is None:
                origin.live_next = asyncio.ensure_future(anext(it))
            left = next_cut - loop.time()
            done, _ = await asyncio.wait({origin.live_next}, timeout=max(left, 0.0))
            if done:
                fut, origin.live_next = origin.live_next, None
                try:
                    items.append(fut.result())
                except StopAsyncIteration:
                    origin.cut[number] = items
                    origin.cut_at[number] = time.time()
                    origin.batches = number + 1
                    items = []
                    return
                if len(items) < origin.max_batch and loop.time() < next_cut:
                    continue
            origin.cut[number] = items
            origin.cut_at[number] = time.time()
            origin.cut_signal.set()
            number += 1
            items = []
            next_cut = max(next_cut + interval, loop.time())
    finally:
        # A run that stops keeps what it took from the iterator (and the pending read, which
        # is not cancelled: that would close an async generator) for the next run.
        if items:
            origin.cut[number] = items
            origin.cut_at[number] = time.time()
        origin.cut_signal.set()


async def _wait_cut(origin: _Origin, batch: int, feeder: asyncio.Task[None] | None) -> None:
    """Wait until the live source's ``batch`` is cut (or the source ended)."""
    while batch not in origin.cut and (origin.batches is None or batch < origin.batches):
        if feeder is None or feeder.done():
            if feeder is not None:
                feeder.result()  # re-raise the iterator's error
            if batch not in origin.cut:
                origin.batches = batch
            return
        origin.cut_signal.clear()
        signal = asyncio.ensure_future(origin.cut_signal.wait())
        try:
            await asyncio.wait({feeder, signal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            signal.cancel()


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
