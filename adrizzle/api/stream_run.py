"""Running a stream: a series of engine runs of consecutive micro-batches, each delivered once.

``StreamRun`` (what ``Stream.run()`` returns) builds each run's datasets, starts it on the driver
session, and yields a ``StreamBatch`` per micro-batch, calling the sinks first. Which batches a run
covers and which of its outputs are new is the ``ReplayCursor``'s business (pure, unit-tested):
after a roll-back (a worker lost under stream state) the stream runs again from its last
checkpoint, and the batches replayed for the state only are not delivered twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from adrizzle.api.dataset import job_programs
from adrizzle.api.running import results_of
from adrizzle.api.stream_source import BuildContext, feed_live, wait_cut
from adrizzle.driver.adaptive import resolve_group_size
from adrizzle.driver.execution import OffsetRun
from adrizzle.errors import ReplayNeeded, StateRollback, TaskError
from adrizzle.plan.offsets import WorkerSink

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from adrizzle.api.stream import Stream
    from adrizzle.api.stream_source import StreamOrigin
    from adrizzle.driver.adaptive import GroupSize
    from adrizzle.driver.offset_log import OffsetLog

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
    # A connector stream's batch: each source partition's (start, end), as logged.
    positions: dict[int, tuple[Any, Any]] | None = None

    @property
    def latency(self) -> float | None:
        """Seconds from the end of the batch's interval to its output reaching the driver."""
        return None if self.due is None else self.done_at - self.due


@dataclasses.dataclass(slots=True)
class ReplayCursor:
    """Where a stream's next run starts and which outputs are new (pure).

    ``next_batch``: the first batch not delivered yet. ``resume``: run from this earlier batch
    instead (its state is restored as of the batch before; outputs below ``next_batch`` are
    replayed for the state only). ``after_loss``: the next run starts with groups of one.
    """

    next_batch: int
    resume: int | None = None
    after_loss: bool = False
    rollbacks: int = 0
    max_rollbacks: int = MAX_ROLLBACKS

    def first(self) -> int:
        """The first batch of the next run."""
        return self.next_batch if self.resume is None else self.resume

    def deliver(self, batch: int) -> bool:
        """Whether ``batch``'s output is new (and then it counts as delivered)."""
        if batch < self.next_batch:
            return False
        self.next_batch = batch + 1
        self.rollbacks = 0
        return True

    def replay_from(self, batch: int) -> None:
        """The state is only checkpointed before ``batch``: run again from there."""
        self.resume = batch

    def rolled_back(self) -> bool:
        """A run rolled back to the last checkpoint; False once too many came in a row
        without a new batch delivered (the stream then gives up)."""
        self.rollbacks += 1
        self.resume, self.after_loss = None, True
        return self.rollbacks <= self.max_rollbacks

    def run_completed(self) -> None:
        self.resume, self.after_loss = None, False


class StreamRun:
    """One ``Stream.run()``: an async iterator of ``StreamBatch``, plus what it chose.

    ``controller`` is the adaptive group size controller (None for a fixed size);
    ``group_sizes()`` counts the groups run per size.
    """

    def __init__(
        self,
        stream: Stream[Any],
        batches: int | None,
        group_size: GroupSize,
        timeout: float | None,
        pre_schedule: bool,
    ) -> None:
        self.stream = stream
        self.batches = batches
        self.max_size, self.controller = resolve_group_size(group_size)
        self._fixed: GroupSize = self.max_size if self.controller is None else self.controller
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

    def _count_fixed_groups(self, batches: int) -> None:
        if self.controller is None:
            full, rest = divmod(batches, self.max_size)
            sizes = self._fixed_groups
            sizes[self.max_size] = sizes.get(self.max_size, 0) + full
            if rest:
                sizes[rest] = sizes.get(rest, 0) + 1

    def _resume_from_files(self, origin: StreamOrigin) -> None:
        """A new driver with the same checkpoint directory continues after the last batch
        an earlier driver checkpointed."""
        stream = self.stream
        if not stream.state_ids or origin.checkpoint_dir is None or origin.resume_checked:
            return
        origin.resume_checked = True
        if origin.next_batch == 0:
            resumed = stream.session.checkpoints.resume(
                origin.checkpoint_dir,
                {
                    sid: (origin.state_names[sid], origin.state_partitions[sid])
                    for sid in stream.state_ids
                },
            )
            if resumed is not None:
                origin.next_batch = resumed + 1

    def _offset_log(self, origin: StreamOrigin) -> OffsetLog | None:
        """A connector stream's offset log; a new driver resumes after the last batch an
        earlier one completed (a stream with state resumes from its checkpoint instead)."""
        if origin.connector is None:
            return None
        offsets = self.stream.session.offset_log(origin.name, origin.checkpoint_dir)
        if origin.next_batch == 0 and not self.stream.state_ids:
            origin.next_batch = offsets.completed_through + 1
        return offsets

    async def _run(self) -> AsyncIterator[StreamBatch]:
        stream = self.stream
        origin = stream.origin
        session = stream.session
        self._resume_from_files(origin)
        offsets = self._offset_log(origin)
        if origin.batch_interval is not None and origin.start is None and origin.live is None:
            # Batch b's interval ends at start + (b + 1) * T: the first one run ends T from now.
            origin.start = time.time() - origin.next_batch * origin.batch_interval
        end = math.inf if self.batches is None else origin.next_batch + self.batches
        if origin.batches is not None:
            end = min(end, origin.batches)
        feeder: asyncio.Task[None] | None = None
        if origin.live is not None:
            feeder = asyncio.get_running_loop().create_task(feed_live(origin))
        keep = origin.live is not None and bool(stream.state_ids)
        cursor = ReplayCursor(origin.next_batch)
        try:
            while cursor.next_batch < end:
                first = cursor.first()
                if origin.live is not None:
                    if first not in origin.kept:
                        await wait_cut(origin, first, feeder)
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
                        stream.dataset(BuildContext(first, final, b, keep))
                        for b in range(first, last_batch)
                    ]
                else:
                    ctx = BuildContext(first, final, run_end=last_batch)
                    datasets = [stream.dataset(ctx)] * (last_batch - first)
                self._count_fixed_groups(len(datasets))
                timeout = None
                if self.timeout is not None:
                    due = origin.due(last_batch - 1)
                    timeout = self.timeout + max(0.0, (due or 0.0) - time.time())
                to_sink = None
                if stream.worker_sink is not None:
                    to_sink = WorkerSink(origin.node_id, origin.name, stream.worker_sink, first)
                offset_run = None
                if offsets is not None:
                    commit = functools.partial(session.commit_source, origin.connector)
                    offset_run = OffsetRun(offsets, first, to_sink is not None, commit)
                try:
                    run = await session.start_run(
                        job_programs(session, datasets, list, to_sink),
                        self._fixed,
                        self.pre_schedule,
                        checkpoint_dir=origin.checkpoint_dir,
                        start_small=cursor.after_loss,
                        state_names=origin.state_names,
                        offsets=offset_run,
                        sources=origin.partitions,
                    )
                    # ``datasets`` stays referenced during the run: a dataset collected on
                    # the driver releases its source blocks on the slots.
                    async for job in results_of(session, run, timeout, False, settle=False):
                        assert job.values is not None
                        b = first + job.index
                        # Accumulator updates count once: not again for a replayed batch.
                        delivered = cursor.deliver(b)
                        values_of = session.shared.settle(job.values, apply=delivered)
                        if not delivered:
                            if offsets is not None:
                                offsets.delivered(b)  # delivered before: its ranges may go
                            continue  # replayed for the state only: delivered before
                        origin.next_batch = cursor.next_batch
                        positions = None
                        if offsets is not None:  # logged before it is delivered
                            await session.wait_logged(origin.name, b)
                            # (Its group may be acknowledged and completed by now: the log
                            # keeps a completed batch's ranges until this call.)
                            positions = offsets.delivered(b)
                        values = [v for part in values_of for v in part]
                        batch = StreamBatch(b, values, time.time(), origin.due(b), positions)
                        origin.cut_at.pop(b, None)
                        for sink in stream.sinks:
                            result = sink(batch)
                            if inspect.isawaitable(result):
                                await result
                        yield batch
                except TaskError as exc:
                    raise exc.at_batch(first + exc.job) from None
                except ReplayNeeded as exc:
                    log.info("%s", exc)
                    cursor.replay_from(exc.from_batch)
                    continue
                except StateRollback as exc:
                    if not cursor.rolled_back():
                        raise StateRollback(
                            f"{cursor.rollbacks} roll-backs in a row without a new micro-batch: "
                            f"{exc}"
                        ) from exc
                    log.warning("stream rolled back (%s); restarting from its checkpoint", exc)
                    if offsets is not None and not stream.state_ids:
                        # Batches after the last completed one may be delivered but not sunk:
                        # run them again from their logged ranges (delivery suppressed).
                        resume = offsets.completed_through + 1
                        if resume < cursor.next_batch:
                            cursor.replay_from(resume)
                    continue
                cursor.run_completed()
                del datasets
                if keep:  # a checkpoint covers these: no replay will need their items
                    covered = session.checkpoints.covered_through(stream.state_ids)
                    for b in [b for b in origin.kept if covered is not None and b <= covered]:
                        del origin.kept[b]
        finally:
            if feeder is not None:
                feeder.cancel()
                try:
                    await feeder
                except asyncio.CancelledError:
                    pass
