"""The asyncio shell of one run: launches the groups a ``RunScheduler`` plans, feeds it results.

Per group it pickles the group's job programs once, builds one ``launch_group`` frame per
worker (the program bytes plus any source blocks a slot still lacks) and sends it. Incoming
``batch_result`` frames are unpickled and handed to the scheduler; finished jobs go to the
caller's queue immediately. The next group is launched when a group is fully acknowledged, so
``window`` groups stay in flight and workers never wait for the driver.

Pre-scheduled (the default), every stage of a group's jobs goes out in that one launch and
map outputs are pushed between workers with no driver involvement. With ``pre_schedule=False``
(BSP, Spark's way) each wave of stages is launched only after the previous wave is
acknowledged, map outputs are held where they were made, and reducers fetch them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import pickle
import time
from collections import deque
from typing import TYPE_CHECKING

import cloudpickle

from adrizzle.driver.adaptive import GroupClock
from adrizzle.driver.checkpoint import Piece
from adrizzle.driver.scheduler import interleave_slots, place_partitions
from adrizzle.errors import (
    AdrizzleError,
    NoWorkersError,
    RunTimeoutError,
    SerializationError,
    StateRollback,
)
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

    from adrizzle.driver.adaptive import GroupTiming
    from adrizzle.driver.blocks import BlockRegistry
    from adrizzle.driver.checkpoint import StateCheckpoints
    from adrizzle.driver.cluster import WorkerHandle
    from adrizzle.driver.metrics import DriverMetrics
    from adrizzle.driver.scheduler import GroupPlan, JobOutcome, RunScheduler, SlotRef
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
    """What a run with stream state needs: its states (``state id -> partitions``), where
    checkpoints go, the state to ship with its first group, and how often to checkpoint."""

    expected: dict[int, int]
    checkpoints: StateCheckpoints
    directory: Path | None = None
    restore: dict[tuple[str, int], bytes] | None = None
    interval: float = 0.0  # at most one checkpointed group per this many seconds (0: all)
    names: dict[int, str] = dataclasses.field(default_factory=dict)  # stable, for files


class RunExecution:
    """One run on the cluster. A run with stream state (``stateful``) checkpoints it at group
    boundaries and does not recover in place: after a loss it rolls back (``StateRollback``),
    and the stream restarts from the last checkpoint on the workers left; when workers join
    or drain it stops planning groups, so the stream places its partitions anew."""

    def __init__(
        self,
        *,
        scheduler: RunScheduler,
        programs: list[JobProgram],
        slots: list[SlotRef],
        workers: dict[str, WorkerHandle],
        blocks: BlockRegistry,
        routes: dict[int, RunExecution],
        metrics: DriverMetrics,
        max_buffered: int,
        linger_us: int = 0,
        pre_schedule: bool = True,
        stage_partitions: list[int] | None = None,
        no_workers_timeout: float = 30.0,
        stall_timeout: float | None = 60.0,
        observe_group: Callable[[GroupTiming], None] | None = None,
        stateful: StatefulRun | None = None,
    ) -> None:
        self.sched = scheduler
        self.programs = programs
        self._workers = workers
        self._blocks = blocks
        self._routes = routes
        self._metrics = metrics
        self._max_buffered = max_buffered
        self._linger_us = linger_us
        self._pre_schedule = pre_schedule
        self._stage_partitions = stage_partitions or []
        self._no_workers_timeout = no_workers_timeout
        self._starved: asyncio.TimerHandle | None = None
        self._stall_timeout = stall_timeout
        self._stall_timer: asyncio.TimerHandle | None = None
        # Frames for this run, counted only while the driver's loop was listening: a loop
        # blocked by the caller must not make a healthy run look stalled.
        self._progress = SilenceWatch(stall_timeout / 4 if stall_timeout else 1.0)
        self._progress.heard(PROGRESS, time.perf_counter())
        self._placement: tuple[int, list[str], list[int], dict[tuple[str, int], int]] = (
            -1,
            [],
            [],
            {},
        )
        if not scheduler.slots:
            scheduler.slots = list(slots)
        self._waves = run_waves(programs[0], pre_schedule) if programs else [[]]
        self._outcomes: deque[JobOutcome] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self._group_blob: tuple[int, bytes] = (-1, b"")
        # The last group's programs by identity -> their pickle: a run of one dataset repeated
        # (run_jobs([data] * n, ...)) pickles its program once, not once per group. The run
        # holds every program, so ids stay unique while it lasts.
        self._blob_cache: tuple[tuple[int, ...], bytes] = ((), b"")
        self.coordination_s = 0.0
        # Monitoring: when the jobs were asked for, and when each job's group was launched.
        self._submitted_at = time.perf_counter()
        self._launched_at: dict[int, float] = {}
        # Per-group timings for the adaptive group size (only when someone observes them).
        self._observe_group = observe_group
        self._clock = GroupClock() if observe_group is not None else None
        self._stateful = stateful
        self._pieces: dict[int, list[Piece]] = {}  # group -> state checkpoint pieces so far
        self._last_checkpoint = -1e9

    # -- control -------------------------------------------------------------------------

    def start(self) -> None:
        # Refuse an unpicklable function before anything is sent. Only the first program is
        # checked here (checking all would cost O(jobs) before the first launch); every
        # group's programs are pickled before its launch, and a failure there fails the run
        # before that group is sent.
        if self.programs:
            serialize_programs(self.programs[:1], 0)
        self._watch_starved()  # every connected worker may be draining
        self._launch_more()
        if self._stall_timeout:
            self._stall_timer = asyncio.get_running_loop().call_later(
                self._stall_timeout / 4, self._check_stall
            )

    def _check_stall(self) -> None:
        """Groups in flight but no frame for ``stall_timeout`` s: a frame was lost while its
        connection stayed up. Retire what is done, re-run the rest (never wait forever)."""
        self._stall_timer = None
        if self._closed or self._failure is not None or self.sched.finished:
            return
        assert self._stall_timeout is not None
        now = time.perf_counter()
        self._progress.tick(now)
        silent = self._progress.silent_for(PROGRESS, now)
        if (self.sched.in_flight or self.sched.incomplete) and silent > self._stall_timeout:
            if self._stateful is not None:
                self._rollback(f"no progress for {silent:.1f} s")
                return
            in_flight = sorted(self.sched.in_flight)
            aborted = self.sched.recover_stalled()
            log.warning(
                "no progress for %.1f s (groups in flight: %s): re-running jobs %s",
                silent,
                in_flight or "none",
                self.sched.redo[:10],
            )
            self._abandon(aborted)
            for group in in_flight:  # retired ones (all results in, ack lost) too
                if group not in self.sched.in_flight:
                    self._routes.pop(group, None)
            if not aborted:
                self._metrics.recoveries += 1
            self._progress.heard(PROGRESS, time.perf_counter())
            self._launch_more()
        self._stall_timer = asyncio.get_running_loop().call_later(
            self._stall_timeout / 4, self._check_stall
        )

    def _abandon(self, aborted: list[GroupPlan], lost: str | None = None) -> None:
        """Forget aborted groups here and on the workers (their late frames are ignored)."""
        for plan in aborted:
            self._forget(plan.group)
        if aborted:
            self._metrics.recoveries += 1
            cancel = CancelGroups(groups=sorted(p.group for p in aborted))
            for handle in self._workers.values():
                if handle.id != lost and handle.channel.is_open:
                    handle.channel.send(cancel)

    def _forget(self, group: int) -> None:
        """Drop what this side keeps for ``group`` (its late frames are then ignored)."""
        self._routes.pop(group, None)
        self._pieces.pop(group, None)
        if self._clock is not None:
            self._clock.forget(group)

    def _launch_more(self) -> None:
        if self._failure is not None or self._closed:
            return
        while len(self._outcomes) < self._max_buffered:
            plan = self.sched.plan_next_group()
            if plan is None:
                return
            self._launch(plan)

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
        found: dict[int, list[int]] = {}
        programs = self.programs[plan.first_job : plan.last_job]
        for program in {id(p): p for p in programs}.values():
            for i in stages:
                stage = program.stages[i]
                if type(stage.input) is ShippedSource and stage.input.node_id not in found:
                    found[stage.input.node_id] = list(range(slot_index, stage.partitions, n))
        return list(found.items())

    def _launch(self, plan: GroupPlan) -> None:
        t0 = time.perf_counter()
        stages = self._waves[plan.wave]
        if self._group_blob[0] != plan.group:  # a BSP group re-uses its blob for every wave
            programs = self.programs[plan.first_job : plan.last_job]
            key = tuple(map(id, programs))
            if key != self._blob_cache[0]:
                try:
                    self._blob_cache = (key, serialize_programs(programs, plan.first_job))
                except SerializationError as exc:  # a later job's function: fail the run
                    self._fail(exc)
                    return
            self._group_blob = (plan.group, self._blob_cache[1])
        blob = self._group_blob[1]
        fetch = (
            sorted(
                {
                    i
                    for j in stages
                    if isinstance(inp := self.programs[plan.first_job].stages[j].input, ShuffleRead)
                    for i, _maps in inp.shuffles
                }
            )
            if not self._pre_schedule
            else []
        )
        self._routes[plan.group] = self
        placement_workers, placement_slots, slot_index = self._placement_of(plan)
        checkpoint, restore = 0, None
        if self._stateful is not None:
            if plan.wave == 0:
                restore, self._stateful.restore = self._stateful.restore, None
                if t0 - self._last_checkpoint >= self._stateful.interval:
                    self._last_checkpoint = t0
                    self._pieces[plan.group] = []  # checkpointed: every wave sends its state
            checkpoint = 1 if plan.group in self._pieces else 0
        for share in plan.shares:
            handle = self._workers.get(share.worker)
            if handle is None:
                # Lost before this run knew it (no loss callback will come for it): recover
                # as for a loss, once this launch is done.
                asyncio.get_running_loop().call_soon(self._worker_gone, share.worker)
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
                checkpoint=checkpoint,
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
            self._launched_at.update(dict.fromkeys(plan.jobs, t0))
        t1 = time.perf_counter()
        self.coordination_s += t1 - t0
        if self._clock is not None:
            slots = {share.worker: len(share.slot_ids) for share in plan.shares}
            self._clock.launched(
                plan.group, plan.first_job, plan.last_job, t0, t1 - t0, slots=slots
            )

    # -- stimuli from the cluster --------------------------------------------------------

    def on_message(self, worker: WorkerHandle, msg: Message, payload: bytes) -> None:
        t0 = time.perf_counter()
        self._progress.heard(PROGRESS, t0)
        if type(msg) is BatchResult and not self._closed:
            try:
                batches = pickle.loads(payload)
                if len(batches) != len(msg.jobs) or len(msg.failed) != len(msg.jobs):
                    raise ValueError(f"{len(msg.jobs)} jobs but {len(batches)} value lists")
            except Exception as exc:
                self._fail(
                    AdrizzleError(
                        f"cannot read results of jobs {msg.jobs} from {worker.id}: "
                        f"{type(exc).__name__}: {exc}"
                    )
                )
                return
            sched = self.sched
            done: list[JobOutcome] = []
            for job, values, failed in zip(msg.jobs, batches, msg.failed, strict=True):
                done += sched.batch_result(worker.id, job, msg.parts, values, failed)
            worker.tasks_done += len(msg.parts) * len(msg.jobs)
            if done:
                if self._clock is not None:
                    now = time.perf_counter()
                    for outcome in done:
                        self._clock.job_done(outcome.index, now)
                self._deliver(done)
        elif type(msg) is StateCheckpoint:
            if len(msg.keys) != len(msg.batches) or any(len(k) != 2 for k in msg.keys):
                self._fail(AdrizzleError(f"malformed state checkpoint from {worker.id}"))
                return
            pieces = self._pieces.get(msg.group)
            if pieces is None:
                return  # an aborted attempt's, or a group not checkpointed
            pieces.append(
                Piece([(k[0], k[1]) for k in msg.keys], msg.batches, payload, worker.id, msg.slot)
            )
        elif type(msg) is GroupFailed:
            self._blocks.forget_slot(msg.worker, msg.slot)  # its data may not have loaded
            self._fail(SerializationError(msg.reason))
        elif type(msg) is GroupDone:
            worker.groups_done += 1
            self._metrics.worker_group_done(msg.tasks, msg.failed)
            if msg.pushed_blocks:
                self._metrics.shuffle_pushed(msg.pushed_blocks, msg.pushed_bytes)
            finished, next_wave = self.sched.group_done(worker.id, msg.group)
            if self._clock is not None:
                self._clock.add_coordination(msg.group, time.perf_counter() - t0)
                self._clock.worker_busy(msg.group, worker.id, msg.busy_us / 1e6)
            if next_wave is not None:
                self._launch(next_wave)
            elif finished:
                del self._routes[msg.group]
                self._metrics.group_acked()
                pieces = self._pieces.pop(msg.group, None)
                if pieces and self._stateful is not None:
                    st = self._stateful
                    st.checkpoints.commit(
                        pieces, st.expected, st.directory, asyncio.get_running_loop(), st.names
                    )
                self._group_finished(msg.group)
                self._launch_more()
        self.coordination_s += time.perf_counter() - t0

    def _group_finished(self, group: int) -> None:
        if self._clock is None or self._observe_group is None:
            return
        timing = self._clock.finished(group)
        if timing is not None:
            self._observe_group(timing)

    def on_worker_lost(self, worker: WorkerHandle) -> None:
        """Recover: abort the groups that had work on ``worker``, tell the survivors to drop
        them, and re-run their unfinished jobs on the workers left (lineage: sources are
        re-shipped from the driver, cached partitions and shuffle outputs recomputed)."""
        self._worker_gone(worker.id)

    def _worker_gone(self, worker: str) -> None:
        if self._failure is not None or self.sched.finished:
            # Nothing to re-run, but its groups' acks will never come: stop waiting for them
            # (wait_settled, and a stateful stream's next run waiting for its checkpoint).
            for group in self.sched.retire_awaiting(worker):
                self._forget(group)
            return
        if self._stateful is not None:
            if self.uses_worker(worker) or any(s.worker == worker for s in self.sched.shares):
                self._rollback(f"worker {worker} was lost", lost=worker)
            return
        self._abandon(self.sched.recover(worker), lost=worker)
        self.place_on_live_workers(exclude=worker)
        self._launch_more()

    def on_link_lost(self, worker: str, peer: str) -> None:
        """The data link between two workers broke: map outputs between them may be lost, so
        re-run the groups that placed work on both (the workers themselves stay)."""
        if self._failure is not None or self.sched.finished:
            return
        if self._stateful is not None:
            if any(
                {worker, peer} <= {share.worker for share in st.plan.shares}
                for st in self.sched.in_flight.values()
            ):
                self._rollback(f"data link {worker} <-> {peer} lost")
            return
        aborted = self.sched.recover_link(worker, peer)
        if aborted:
            log.warning(
                "data link %s <-> %s lost: re-running groups %s",
                worker,
                peer,
                [p.group for p in aborted],
            )
        self._abandon(aborted)
        self._launch_more()

    def on_worker_joined(self, worker: WorkerHandle) -> None:
        """Elasticity: groups planned from now on spread over the new worker too."""
        if self._failure is None and not self.sched.finished:
            self.place_on_live_workers()
            self._launch_more()

    def place_on_live_workers(self, exclude: str | None = None) -> None:
        handles = sorted(
            (
                h
                for h in self._workers.values()
                if h.id != exclude and h.channel.is_open and h.state == "running"
            ),
            key=lambda h: h.id,
        )
        slots = interleave_slots((h.id, h.cores) for h in handles)
        if slots == self.sched.slots:
            return
        if self._stateful is not None and slots:
            # State lives on the slots: plan no more groups here; the stream's next run
            # moves the partitions (restoring their state from the checkpoint).
            self.sched.stop_planning()
            self._wake()
            return
        partitions = self.sched.partitions
        shares = (
            place_partitions(partitions, slots, self._stage_partitions)
            if slots and partitions
            else []
        )
        self.sched.set_placement(slots, shares)
        self._watch_starved()

    def _watch_starved(self) -> None:
        """With no slot to place on, fail after ``no_workers_timeout`` unless one joins."""
        if self.sched.slots:
            if self._starved is not None:
                self._starved.cancel()
                self._starved = None
        elif self._starved is None and self.sched.partitions:
            log.warning(
                "no worker to place groups on (connected: %s); waiting up to %g s for one",
                {h.id: (h.state, h.channel.describe()) for h in self._workers.values()} or "none",
                self._no_workers_timeout,
            )
            self._starved = asyncio.get_running_loop().call_later(
                self._no_workers_timeout, self._no_workers
            )

    def _rollback(self, reason: str, lost: str | None = None) -> None:
        """Stream state may be lost or ahead of its checkpoint: drop every group in flight
        (here and on the workers) and end the run with ``StateRollback``; the stream restores
        the last checkpoint on the workers left and replays the batches since."""
        assert self._stateful is not None
        aborted = self.sched.abort_all()
        self._abandon(aborted, lost=lost)
        if not aborted:
            self._metrics.recoveries += 1
        self._stateful.checkpoints.invalidate(self._stateful.expected)
        self._stateful.restore = None
        log.warning("%s: rolling back stream state to its last checkpoint", reason)
        if self._failure is None:
            self._failure = StateRollback(f"{reason}: {self.sched.describe_progress()}")
        self._wake()

    def uses_worker(self, worker: str) -> bool:
        """Whether a group in flight has work on ``worker`` (a draining worker waits)."""
        return any(
            share.worker == worker
            for state in self.sched.in_flight.values()
            for share in state.plan.shares
        )

    def _no_workers(self) -> None:
        self._starved = None
        if not self.sched.slots:
            self._fail(
                NoWorkersError(
                    f"every worker was lost and none joined within "
                    f"{self._no_workers_timeout:g} s: {self.sched.describe_progress()}"
                )
            )

    # -- delivery ------------------------------------------------------------------------

    def _deliver(self, outcomes: list[JobOutcome]) -> None:
        self._metrics.jobs_completed(outcomes, self._launched_at, self._submitted_at)
        self._outcomes.extend(outcomes)
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
            self._metrics.failures += 1
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def close(self) -> None:
        """Stop launching (the caller stopped iterating). Groups in flight keep their routes
        until acknowledged, so the acks are still counted."""
        self._closed = True
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._starved is not None:
            self._starved.cancel()
            self._starved = None

    async def outcomes(self, timeout: float | None = None) -> AsyncIterator[JobOutcome]:
        """Yield finished jobs in order; a run not finished after ``timeout`` s fails."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            while True:
                while self._outcomes:
                    yield self._outcomes.popleft()
                    if len(self._outcomes) < self._max_buffered:
                        self._launch_more()
                if self._failure is not None:
                    raise self._failure
                if self.sched.finished:
                    return
                self._wakeup = loop.create_future()
                left = None if deadline is None else deadline - loop.time()
                try:
                    await asyncio.wait_for(self._wakeup, left)
                except TimeoutError:
                    raise RunTimeoutError(
                        f"run not finished within {timeout:g} s: {self.sched.describe_progress()}"
                    ) from None
                self._wakeup = None
        finally:
            self.close()
