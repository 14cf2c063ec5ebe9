"""Where a stream's micro-batches come from: its source, pacing and offset, and live input.

``StreamOrigin`` is what the streams derived from one source share: the replayable source
function (read on the slots, one dataset serves a whole run) or the live async iterator (cut
on the driver every ``batch_interval`` into batches shipped to the slots), where the next run
starts (``next_batch``), and for a live stream with state the batches kept for a replay.
``BuildContext`` is one run's build of the datasets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adrizzle.api.dataset import Dataset, parallelize
from adrizzle.plan.offsets import OffsetSource
from adrizzle.plan.program import BatchSource

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable

    from adrizzle.connectors.base import Source
    from adrizzle.driver.session import DriverSession


class StreamOrigin:
    """What the streams derived from one source share: the source, its pacing and offset."""

    def __init__(
        self,
        session: DriverSession,
        partitions: int,
        *,
        source: Callable[[int, int], Iterable[Any]] | None = None,
        connector: Source | None = None,
        live: AsyncIterable[Any] | None = None,
        batch_interval: float | None = None,
        start: float | None = None,
        batches: int | None = None,
        max_batch: int = 100_000,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        name: str = "stream",
    ) -> None:
        self.session = session
        # Keys the offset log, checkpoints and sinks' progress: stable across drivers.
        self.name = name
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.partitions = partitions
        self.source = source
        # A connector source (adrizzle.connectors.base.Source): read on the slots with
        # offsets; its node id keys the slots' readers across the stream's runs.
        self.connector = connector
        self.node_id = session.new_node_id()
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

    def dataset(self, ctx: BuildContext) -> Dataset[Any]:
        if self.live is not None:
            b = ctx.batch
            assert b is not None
            items = self.cut.pop(b) if b in self.cut else self.kept[b]
            if ctx.keep:
                self.kept[b] = items
            return parallelize(self.session, items, self.partitions)
        if self.connector is not None:
            log = self.session.offset_logs[self.name]
            offsets = OffsetSource(
                self.node_id,
                self.name,
                self.connector,
                ctx.run_first,
                starts=log.starts(ctx.run_first),
                replay=log.ranges(ctx.run_first, ctx.run_end),
                max_records=self.connector.max_records_per_batch,
                interval=self.batch_interval,
                start=self.start,
            )
            return Dataset(self.session, partitions=self.partitions, source=offsets)
        assert self.source is not None
        source = BatchSource(
            self.session.new_node_id(),
            self.source,
            ctx.run_first,
            self.batch_interval,
            self.start,
        )
        return Dataset(self.session, partitions=self.partitions, source=source)


@dataclasses.dataclass(slots=True)
class BuildContext:
    """The build of a run's dataset: each stream node's dataset once (a node used twice is
    shared). Replayable sources build one dataset for the whole run (the slot supplies each
    job's batch); live sources one per batch (``batch``), each shipping that batch's items."""

    run_first: int
    last_batch: int | None
    batch: int | None = None
    keep: bool = False  # keep a live batch's items for a replay
    memo: dict[int, Dataset[Any]] = dataclasses.field(default_factory=dict)
    run_end: int = 0  # the run's batches are run_first .. run_end - 1


async def feed_live(origin: StreamOrigin) -> None:
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


async def wait_cut(origin: StreamOrigin, batch: int, feeder: asyncio.Task[None] | None) -> None:
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
