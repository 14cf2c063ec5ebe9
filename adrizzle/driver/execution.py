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

import cloudpickle

from adrizzle.driver.checkpoint_files import Piece
from adrizzle.driver.run_events import (
    Broken,
    Cancel,
    CheckpointArrived,
    Closed,
    Commit,
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
from adrizzle.plan.program import ShippedSource, ShuffleRead, stage_waves
from adrizzle.wire.liveness import SilenceWatch
from adrizzle.wire.messages import (
    BatchResult,
    CancelGroups,
    GroupDone,
    GroupFailed,
    LaunchGroup,
    Message,
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
    from adrizzle.driver.placement import GroupPlan, SlotRef
    from adrizzle.driver.run_events import Event, Instruction
    from adrizzle.driver.run_state import RunScheduler
    from adrizzle.plan.program import JobProgram


log = logging.getLogger("adrizzle.driver")
PROGRESS = "progress"  # the one key of a run's SilenceWatch


def serialize_programs(programs: list[JobProgram], first_job: int) -> bytes:
    try:
        return bytes(cloudpickle.dumps(programs))
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize the job functions (jobs from {first_job}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def run_waves(program: JobProgram, pre_schedule: bool) -> list[list[int]]:
    """The stages launched together: all at once when pre-scheduled, else one wave each."""
    if pre_schedule:
        return [list(range(len(program.stages)))]
    return stage_waves(program.stages)


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
    ) -> None:
        self.sched = scheduler
        self.programs = programs
        self.stateful = stateful
        self._workers = workers
        self._running_slots = running_slots
        self._blocks = blocks
        self._routes = routes
        self._metrics = metrics
        self._linger_us = linger_us
        self._pre_schedule = pre_schedule
        self._waves = run_waves(programs[0], pre_schedule) if programs else [[]]
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
        self._placement: tuple[int, list[str], list[int], dict[tuple[str, int], int]] = (
            -1,
            [],
            [],
            {},
        )
        # The last group's programs by identity -> their pickle: a run of one dataset repeated
        # (run_jobs([data] * n, ...)) pickles its program once, not once per group. The run
        # holds every program, so ids stay unique while it lasts.
        self._blob_cache: tuple[tuple[int, ...], bytes] = ((), b"")
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
            st.checkpoints.commit(ins.pieces, st.expected, st.directory, st.names)
        elif type(ins) is Rollback:
            st = self.stateful
            assert st is not None
            st.checkpoints.invalidate(st.expected)
            st.restore = None
            log.warning("%s: rolling back stream state to its last checkpoint", ins.reason)
        elif type(ins) is WaitForWorkers:
            self._watch_starved(ins.timeout)
        elif type(ins) is Observed:
            self._metrics.group_observed(ins.decision)

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
        stages = self._waves[plan.wave]
        key = tuple(id(p) for p in self.programs[plan.first_job : plan.last_job])
        if key == self._blob_cache[0]:
            blob = self._blob_cache[1]
        else:
            try:
                blob = serialize_programs(
                    self.programs[plan.first_job : plan.last_job], plan.first_job
                )
            except SerializationError as exc:
                self.handle(Broken(exc))
                return
            self._blob_cache = (key, blob)
        fetch = self._fetch_list(plan, stages)
        self._routes[plan.group] = self
        placement_workers, placement_slots, slot_index = self._placement_of(plan)
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
            data = [
                self._blocks.missing_blocks(
                    share.worker,
                    slot,
                    self._sources_on_slot(plan, stages, slot_index[(share.worker, slot)]),
                )
                for slot in share.slot_ids
            ]
            state = (
                [restore.get((share.worker, slot), b"") for slot in share.slot_ids]
                if restore
                else []
            )
            msg = LaunchGroup(
                group=plan.group,
                first_job=plan.first_job,
                last_job=plan.last_job,
                stages=stages,
                placement_workers=placement_workers,
                placement_slots=placement_slots,
                slot_ids=share.slot_ids,
                slot_data=[len(d) for d in data],
                program_len=len(blob),
                release=self._blocks.take_released(share.worker),
                linger_us=self._linger_us,
                hold=0 if self._pre_schedule else 1,
                fetch=fetch,
                slot_state=[len(b) for b in state],
                checkpoint=1 if ins.checkpoint else 0,
            )
            if any(data) or any(state):
                parts = [blob]
                for i, d in enumerate(data):
                    parts += (d, state[i]) if state else (d,)
                handle.channel.send(msg, b"".join(parts))
            else:
                handle.channel.send(msg, blob)
        if plan.wave == 0:
            self._metrics.group_launched(plan.last_job - plan.first_job)
        if self.sched.controller is not None:
            self.handle(Launched(plan.group, time.perf_counter() - t0))

    def _fetch_list(self, plan: GroupPlan, stages: list[int]) -> list[int]:
        """BSP: the shuffles this wave's reducers fetch from the map sides."""
        if self._pre_schedule:
            return []
        program = self.programs[plan.first_job]
        return sorted(
            {
                i
                for j in stages
                if isinstance(inp := program.stages[j].input, ShuffleRead)
                for i, _maps in inp.shuffles
            }
        )

    def _placement_of(
        self, plan: GroupPlan
    ) -> tuple[list[str], list[int], dict[tuple[str, int], int]]:
        """The placement arrays of the plan's slots (rebuilt only when the slots change)."""
        if self._placement[0] != id(plan.slots):
            slots = plan.slots
            self._placement = (
                id(plan.slots),
                [s.worker for s in slots],
                [s.slot for s in slots],
                {(s.worker, s.slot): i for i, s in enumerate(slots)},
            )
        return self._placement[1], self._placement[2], self._placement[3]

    def _sources_on_slot(
        self, plan: GroupPlan, stages: list[int], slot_index: int
    ) -> list[tuple[int, list[int]]]:
        n = len(plan.slots)
        out = []
        for program in {id(p): p for p in self.programs[plan.first_job : plan.last_job]}.values():
            for j in stages:
                stage = program.stages[j]
                if isinstance(stage.input, ShippedSource):
                    parts = list(range(slot_index, stage.partitions, n))
                    if parts:
                        out.append((stage.input.node_id, parts))
        return out

    # -- frames from the workers ---------------------------------------------------------

    def on_message(self, worker: WorkerHandle, msg: Message, payload: bytes) -> None:
        now = time.perf_counter()
        self._progress.heard(PROGRESS, now)
        if type(msg) is BatchResult:
            if not self.sched.wants(msg.group):
                return  # an aborted attempt's: not worth unpickling
            try:
                batches: list[list[Any]] = pickle.loads(payload)
            except Exception as exc:
                detail = f"{type(exc).__name__}: {exc}"
                error = AdrizzleError(
                    f"cannot read results of jobs {msg.jobs} from {worker.id}: {detail}"
                )
                self.handle(Broken(error))
                return
            worker.tasks_done += len(msg.parts) * len(msg.jobs)
            self.handle(
                ResultsArrived(worker.id, msg.group, msg.jobs, msg.parts, batches, msg.failed, now)
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

    # -- delivery ------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def outcomes(self, timeout: float | None = None) -> AsyncIterator[JobOutcome]:
        """Yield finished jobs in order; a run not finished after ``timeout`` s fails."""
        loop = self._loop
        deadline = None if timeout is None else loop.time() + timeout
        sched = self.sched
        try:
            while True:
                while self._outcomes:
                    self._taken += 1
                    if sched.buffered >= sched.max_buffered:  # launching waits on us
                        self._consumed()
                    yield self._outcomes.popleft()
                if self._taken:
                    self._consumed()
                if sched.failure is not None:
                    raise sched.failure
                if sched.finished:
                    return
                self._wakeup = loop.create_future()
                left = None if deadline is None else deadline - loop.time()
                try:
                    await asyncio.wait_for(self._wakeup, left)
                except TimeoutError:
                    raise RunTimeoutError(
                        f"run not finished within {timeout:g} s: {sched.describe_progress()}"
                    ) from None
                self._wakeup = None
        finally:
            self.close()

    def _consumed(self) -> None:
        taken, self._taken = self._taken, 0
        self.handle(Consumed(taken, time.perf_counter()))
