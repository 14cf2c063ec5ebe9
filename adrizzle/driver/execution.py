"""The asyncio shell of one run: frames and timers become events, instructions become frames.

All policy is in ``RunScheduler`` (``adrizzle.driver.run_state``); this class only encodes and
sends launches (the group's programs pickled once, plus the source blocks and stream state a slot
lacks), decodes ``batch_result``/``group_done``/``state_checkpoint``/``group_failed`` frames,
arms the stall and no-workers timers, hands finished jobs to the caller's iterator, and carries
out the other instructions against the engine's collaborators (routes, blocks, checkpoints,
metrics). Pre-scheduled (the default), every stage of a group goes out in one launch and map
outputs are pushed between workers; in BSP mode (``pre_schedule=False``) each wave of stages is
launched after the previous one is acknowledged, and reducers fetch the held map outputs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import pickle
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from adrizzle.driver.checkpoint_files import Piece
from adrizzle.driver.jobs import per_job
from adrizzle.driver.launch import LaunchEncoder, serialize_programs
from adrizzle.driver.run_events import (
    Broken,
    Cancel,
    CheckpointArrived,
    Closed,
    Commit,
    Completed,
    Consumed,
    Deliver,
    Fail,
    Forget,
    GroupAcked,
    Launch,
    Launched,
    LinkLost,
    LoadFailed,
    NoWorkersTimeout,
    Observed,
    PlacementChanged,
    Recovered,
    ResultsArrived,
    Rollback,
    Stalled,
    Start,
    WaitForWorkers,
    WorkerLost,
)
from adrizzle.errors import AdrizzleError, RunTimeoutError, SerializationError
from adrizzle.wire.liveness import SilenceWatch
from adrizzle.wire.messages import (
    BatchResult,
    CancelGroups,
    GroupDone,
    GroupFailed,
    Message,
    OffsetsLogged,
    SinkFailed,
    StateCheckpoint,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from adrizzle.driver.blocks import BlockRegistry
    from adrizzle.driver.checkpoint import StateCheckpoints
    from adrizzle.driver.cluster import WorkerHandle
    from adrizzle.driver.jobs import JobOutcome
    from adrizzle.driver.metrics import DriverMetrics
    from adrizzle.driver.offset_log import OffsetLog
    from adrizzle.driver.placement import SlotRef
    from adrizzle.driver.run_events import Event, Instruction
    from adrizzle.driver.run_state import RunScheduler
    from adrizzle.plan.program import JobProgram


log = logging.getLogger("adrizzle.driver")
PROGRESS = "progress"  # the one key of a run's SilenceWatch


@dataclasses.dataclass(slots=True)
class OffsetRun:
    """A connector stream's run: its offset log and the batch of job 0. ``sink_workers``: its
    output goes to sinks on the workers (they wait for ``offsets_logged``); ``on_complete``
    gets each partition's end once batches will never be replayed (``Source.commit``)."""

    log: OffsetLog
    first_batch: int
    sink_workers: bool = False
    on_complete: Callable[[dict[int, Any]], None] | None = None


@dataclasses.dataclass(slots=True)
class StatefulRun:
    """What the shell of a run with stream state needs: its states (``state id ->
    partitions``), where checkpoints go, and the state to ship with its first group."""

    expected: dict[int, int]
    checkpoints: StateCheckpoints
    directory: Path | None = None
    restore: dict[tuple[str, int], bytes] | None = None
    names: dict[int, str] = dataclasses.field(default_factory=dict)  # stable, for files


class RunExecution:
    """One run on the cluster: the shell around its ``RunScheduler``."""

    def __init__(
        self,
        *,
        scheduler: RunScheduler,
        programs: list[JobProgram],
        workers: dict[str, WorkerHandle],
        running_slots: Callable[[], list[SlotRef]],
        blocks: BlockRegistry,
        routes: dict[int, RunExecution],
        metrics: DriverMetrics,
        linger_us: int = 0,
        pre_schedule: bool = True,
        stall_timeout: float | None = 60.0,
        stateful: StatefulRun | None = None,
        offsets: OffsetRun | None = None,
    ) -> None:
        self.sched = scheduler
        self.offsets = offsets
        self._notified = -1  # the last batch told to the workers' sinks as logged
        self._commit_ok = True
        self.programs = programs
        self.stateful = stateful
        self._workers = workers
        self._running_slots = running_slots
        self._blocks = blocks
        self._routes = routes
        self._metrics = metrics
        self._linger_us = linger_us
        self._pre_schedule = pre_schedule
        self._encoder = LaunchEncoder(programs, blocks, linger_us, pre_schedule)
        self._stall_timeout = stall_timeout
        self._stall_timer: asyncio.TimerHandle | None = None
        self._starved: asyncio.TimerHandle | None = None
        # Frames for this run, counted only while the driver's loop was listening: a loop
        # blocked by the caller must not make a healthy run look stalled.
        self._progress = SilenceWatch(stall_timeout / 4 if stall_timeout else 1.0)
        self._outcomes: deque[JobOutcome] = deque()
        self._taken = 0  # outcomes the caller took and the scheduler was not told of yet
        self._wakeup: asyncio.Future[None] | None = None
        self._submitted_at = time.perf_counter()
        self._loop = asyncio.get_running_loop()

    @property
    def failure(self) -> BaseException | None:
        return self.sched.failure

    # -- events in, instructions out ---------------------------------------------------

    def handle(self, event: Event) -> None:
        for instruction in self.sched.handle(event):
            self._carry_out(instruction)
        if self.sched.finished:
            self._wake()

    def _carry_out(self, ins: Instruction) -> None:
        if type(ins) is Launch:
            self._launch(ins)
        elif type(ins) is Deliver:
            if self.offsets is not None:
                self._log_offsets(ins.outcomes)
            self._metrics.jobs_completed(ins.outcomes, self._submitted_at)
            self._outcomes.extend(ins.outcomes)
            self._wake()
        elif type(ins) is Forget:
            self._routes.pop(ins.group, None)
            if ins.acked:
                self._metrics.group_acked()
        elif type(ins) is Cancel:
            cancel = CancelGroups(groups=ins.groups)
            for handle in self._workers.values():
                if handle.id != ins.lost and handle.channel.is_open:
                    handle.channel.send(cancel)
        elif type(ins) is Recovered:
            self._metrics.recoveries += 1
            if ins.jobs:
                log.warning("%s: re-running jobs %s", ins.reason, ins.jobs[:10])
        elif type(ins) is Fail:
            self._metrics.failures += 1
            self._wake()
        elif type(ins) is Commit:
            st = self.stateful
            assert st is not None
            self._commit_ok = st.checkpoints.commit(ins.pieces, st.expected, st.directory, st.names)
        elif type(ins) is Completed:
            offsets = self.offsets
            if offsets is not None and self._commit_ok:
                ends = offsets.log.complete(offsets.first_batch + ins.through)
                if ends and offsets.on_complete is not None:
                    offsets.on_complete(ends)
        elif type(ins) is Rollback:
            st = self.stateful
            if st is not None:
                st.checkpoints.invalidate(st.expected)
                st.restore = None
                log.warning("%s: rolling back stream state to its last checkpoint", ins.reason)
            else:  # a connector stream without state: replay from its last completed batch
                log.warning("%s: rolling back to the last completed micro-batch", ins.reason)
        elif type(ins) is WaitForWorkers:
            self._watch_starved(ins.timeout)
        elif type(ins) is Observed:
            self._metrics.group_observed(ins.decision)

    # -- connector streams ---------------------------------------------------------------

    def _log_offsets(self, outcomes: list[JobOutcome]) -> None:
        """Log each finished batch's source ranges before it is delivered or sunk."""
        offsets = self.offsets
        assert offsets is not None
        for outcome in outcomes:
            if outcome.positions is not None and outcome.error is None:
                offsets.log.append(offsets.first_batch + outcome.index, outcome.positions)
        self.offsets_durable()

    def offsets_durable(self) -> None:
        """The offset log is safe through some batch: the slots' sinks may commit it."""
        offsets = self.offsets
        if offsets is None or not offsets.sink_workers:
            return
        through = offsets.log.drain()
        if through <= self._notified:
            return
        self._notified = through
        notice = OffsetsLogged(offsets.log.stream, through)
        for worker in {s.worker for s in self.sched.slots}:
            handle = self._workers.get(worker)
            if handle is not None and handle.channel.is_open:
                handle.channel.send(notice)

    # -- control -------------------------------------------------------------------------

    def start(self) -> None:
        # Refuse an unpicklable function before anything is sent. Only the first program is
        # checked here (checking all would cost O(jobs) before the first launch); every
        # group's programs are pickled before its launch, and a failure there fails the run
        # before that group is sent.
        if self.programs:
            serialize_programs(self.programs[:1], 0)
        now = time.perf_counter()
        self._progress.heard(PROGRESS, now)
        self.handle(Start(now))
        if self._stall_timeout:
            self._stall_timer = self._loop.call_later(self._stall_timeout / 4, self._check_stall)

    def _check_stall(self) -> None:
        """No frame for ``stall_timeout`` s while groups are in flight: the scheduler decides
        (a frame was lost while its connection stayed up: re-run, roll back or retire)."""
        self._stall_timer = None
        sched = self.sched
        done = self.sched.closed or sched.failure is not None or sched.finished
        if done and not sched.in_flight:
            return  # nothing more can arrive for this run
        assert self._stall_timeout is not None
        now = time.perf_counter()
        self._progress.tick(now)
        silent = self._progress.silent_for(PROGRESS, now)
        if silent > self._stall_timeout:
            self._progress.heard(PROGRESS, now)
            self.handle(Stalled(silent, now))
        self._stall_timer = self._loop.call_later(self._stall_timeout / 4, self._check_stall)

    def _watch_starved(self, timeout: float | None) -> None:
        if self._starved is not None:
            self._starved.cancel()
            self._starved = None
        if timeout is not None:
            log.warning(
                "no worker to place groups on (connected: %s); waiting up to %g s for one",
                {h.id: (h.state, h.channel.describe()) for h in self._workers.values()} or "none",
                timeout,
            )
            self._starved = self._loop.call_later(timeout, lambda: self.handle(NoWorkersTimeout()))

    def close(self) -> None:
        """The caller stopped iterating: launch nothing more. Groups in flight keep their
        routes until acknowledged (their acks are counted, their checkpoints committed)."""
        self.handle(Closed())
        if self._starved is not None:
            self._starved.cancel()
            self._starved = None

    def fail(self, error: BaseException) -> None:
        """End the run from outside (the engine is closing)."""
        self.handle(Broken(error))

    # -- cluster changes -----------------------------------------------------------------

    def on_worker_lost(self, worker: str) -> None:
        """Recover (the scheduler decides how): groups with work on ``worker`` are dropped
        here and on the survivors and their unfinished jobs re-run on the workers left."""
        self.handle(WorkerLost(worker, self._running_slots(), time.perf_counter()))

    def on_link_lost(self, worker: str, peer: str) -> None:
        self.handle(LinkLost(worker, peer, time.perf_counter()))

    def on_placement_changed(self) -> None:
        """Workers joined or started draining: groups planned from now on use the slots of
        the running workers."""
        self.handle(PlacementChanged(self._running_slots(), time.perf_counter()))

    def uses_worker(self, worker: str) -> bool:
        return self.sched.uses_worker(worker)

    # -- launching -----------------------------------------------------------------------

    def _launch(self, ins: Launch) -> None:
        t0 = time.perf_counter()
        plan = ins.plan
        try:
            blob = self._encoder.program_blob(plan)
        except SerializationError as exc:
            self.handle(Broken(exc))
            return
        self._routes[plan.group] = self
        restore = self.stateful.restore if ins.restore and self.stateful is not None else None
        for share in plan.shares:
            handle = self._workers.get(share.worker)
            if handle is None:
                # Lost before this run knew it (no loss callback will come for it): recover
                # as for a loss, once this launch is done.
                self._loop.call_soon(self.on_worker_lost, share.worker)
                continue
            if not handle.channel.is_open:
                # Its connection is going (the loss callback follows and re-runs this group
                # with the other groups that had work there); send the rest as usual.
                continue
            msg, payload = self._encoder.frame(plan, share, blob, ins.checkpoint, restore)
            handle.channel.send(msg, payload)
        if plan.wave == 0:
            self._metrics.group_launched(plan.last_job - plan.first_job)
        if self.sched.controller is not None:
            self.handle(Launched(plan.group, time.perf_counter() - t0))

    # -- frames from the workers ---------------------------------------------------------

    def on_message(self, worker: WorkerHandle, msg: Message, payload: bytes) -> None:
        now = time.perf_counter()
        self._progress.heard(PROGRESS, now)
        if type(msg) is BatchResult:
            if not self.sched.wants(msg.group):
                return  # an aborted attempt's: not worth unpickling
            try:
                batches = per_job(pickle.loads(payload), len(msg.jobs), len(msg.parts))
            except Exception as exc:
                detail = f"{type(exc).__name__}: {exc}"
                error = AdrizzleError(
                    f"cannot read results of jobs {msg.jobs} from {worker.id}: {detail}"
                )
                self.handle(Broken(error))
                return
            worker.tasks_done += len(msg.parts) * len(msg.jobs)
            self.handle(
                ResultsArrived(
                    worker.id,
                    msg.group,
                    msg.jobs,
                    msg.parts,
                    batches,
                    msg.failed,
                    now,
                    msg.positions,
                )
            )
        elif type(msg) is GroupDone:
            worker.groups_done += 1
            self._metrics.worker_group_done(msg.tasks, msg.failed)
            if msg.pushed_blocks:
                self._metrics.shuffle_pushed(msg.pushed_blocks, msg.pushed_bytes)
            cost = time.perf_counter() - now
            self.handle(GroupAcked(worker.id, msg.group, msg.busy_us / 1e6, now, cost))
        elif type(msg) is StateCheckpoint:
            if len(msg.keys) != len(msg.batches) or any(len(k) != 2 for k in msg.keys):
                error = AdrizzleError(f"malformed state checkpoint from {worker.id}")
                self.handle(Broken(error))
                return
            keys = [(k[0], k[1]) for k in msg.keys]
            piece = Piece(keys, msg.batches, payload, worker.id, msg.slot)
            self.handle(CheckpointArrived(msg.group, piece))
        elif type(msg) is GroupFailed:
            self._blocks.forget_slot(msg.worker, msg.slot)  # its data may not have loaded
            self.handle(LoadFailed(msg.reason))
        elif type(msg) is SinkFailed:
            try:  # from an authenticated worker: its slot pickled the SinkError
                error = pickle.loads(payload)
            except Exception as exc:
                error = AdrizzleError(f"a sink failed on {worker.id} (unreadable: {exc})")
            self.handle(Broken(error))

    # -- delivery ------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def outcomes(self, timeout: float | None = None) -> AsyncIterator[JobOutcome]:
        """Yield finished jobs in order; a run not finished after ``timeout`` s fails."""
        deadline = None if timeout is None else self._loop.time() + timeout
        sched = self.sched
        try:
            while True:
                while self._outcomes:
                    self._taken += 1
                    if sched.buffered >= sched.max_buffered:  # launching waits on us
                        self._consumed()
                    yield self._outcomes.popleft()
                if not await self._more(deadline, timeout):
                    return
        finally:
            self.close()

    async def outcome_lists(self, timeout: float | None = None) -> AsyncIterator[list[JobOutcome]]:
        """Finished jobs in order, in lists of those delivered together: ``outcomes`` without
        a generator step per job (``run_jobs`` collects this way)."""
        deadline = None if timeout is None else self._loop.time() + timeout
        try:
            while True:
                if self._outcomes:
                    taken = list(self._outcomes)
                    self._outcomes.clear()
                    self._taken += len(taken)
                    yield taken
                if not await self._more(deadline, timeout):
                    return
        finally:
            self.close()

    async def _more(self, deadline: float | None, timeout: float | None) -> bool:
        """Tell the scheduler what the caller took, then wait for more outcomes: False once
        the run finished; its failure, or ``RunTimeoutError`` past ``deadline``, raises."""
        if self._taken:
            self._consumed()
        sched = self.sched
        if sched.failure is not None:
            raise sched.failure
        if sched.finished:
            return False
        self._wakeup = self._loop.create_future()
        left = None if deadline is None else deadline - self._loop.time()
        try:
            await asyncio.wait_for(self._wakeup, left)
        except TimeoutError:
            raise RunTimeoutError(
                f"run not finished within {timeout:g} s: {sched.describe_progress()}"
            ) from None
        self._wakeup = None
        return True

    def _consumed(self) -> None:
        taken, self._taken = self._taken, 0
        self.handle(Consumed(taken, time.perf_counter()))
