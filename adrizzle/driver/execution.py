"""The asyncio shell of one run: launches the groups a ``RunScheduler`` plans, feeds it results.

Per group it pickles the group's stage programs once, builds one ``launch_group`` frame per
worker (the program bytes plus any source blocks a slot still lacks) and sends it. Incoming
``batch_result`` frames are unpickled and handed to the scheduler; finished jobs go to the
caller's queue immediately. The next group is launched when a group is fully acknowledged, so
``window`` groups stay in flight and workers never wait for the driver.
"""

from __future__ import annotations

import asyncio
import pickle
import time
from collections import deque
from typing import TYPE_CHECKING

import cloudpickle

from adrizzle.api.program import ShippedSource, StageProgram
from adrizzle.errors import AdrizzleError, RunTimeoutError, SerializationError, WorkerLostError
from adrizzle.wire.messages import BatchResult, GroupDone, LaunchGroup, Message

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from adrizzle.driver.blocks import BlockRegistry
    from adrizzle.driver.cluster import WorkerHandle
    from adrizzle.driver.metrics import DriverMetrics
    from adrizzle.driver.scheduler import GroupPlan, JobOutcome, RunScheduler


def serialize_programs(programs: list[StageProgram], first_job: int) -> bytes:
    try:
        return bytes(cloudpickle.dumps(programs))
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize the job functions (jobs from {first_job}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


class RunExecution:
    def __init__(
        self,
        *,
        scheduler: RunScheduler,
        programs: list[StageProgram],
        workers: dict[str, WorkerHandle],
        blocks: BlockRegistry,
        routes: dict[int, RunExecution],
        metrics: DriverMetrics,
        max_buffered: int,
        linger_us: int = 0,
    ) -> None:
        self.sched = scheduler
        self.programs = programs
        self._workers = workers
        self._blocks = blocks
        self._routes = routes
        self._metrics = metrics
        self._max_buffered = max_buffered
        self._linger_us = linger_us
        self._outcomes: deque[JobOutcome] = deque()
        self._wakeup: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self.coordination_s = 0.0

    # -- control -------------------------------------------------------------------------

    def start(self) -> None:
        # Refuse unpicklable functions before anything is sent (each distinct program once).
        distinct = list({id(p): p for p in self.programs}.values())
        serialize_programs(distinct, 0)
        self._launch_more()

    def _launch_more(self) -> None:
        if self._failure is not None or self._closed:
            return
        while len(self._outcomes) < self._max_buffered:
            plan = self.sched.plan_next_group()
            if plan is None:
                return
            self._launch(plan)

    def _launch(self, plan: GroupPlan) -> None:
        t0 = time.perf_counter()
        programs = self.programs[plan.first_job : plan.last_job]
        blob = serialize_programs(programs, plan.first_job)
        shipped = {p.source.node_id for p in programs if type(p.source) is ShippedSource}
        self._routes[plan.group] = self
        for share in plan.shares:
            handle = self._workers.get(share.worker)
            if handle is None:
                self._fail(WorkerLostError(f"worker {share.worker} is gone"))
                return
            data = [
                self._blocks.missing_blocks(share.worker, slot, shipped, parts)
                for slot, parts in zip(share.slot_ids, share.slot_parts, strict=True)
            ]
            msg = LaunchGroup(
                group=plan.group,
                first_job=plan.first_job,
                last_job=plan.last_job,
                slot_ids=share.slot_ids,
                slot_parts=share.slot_parts,
                slot_data=[len(d) for d in data],
                program_len=len(blob),
                release=self._blocks.take_released(share.worker),
                linger_us=self._linger_us,
            )
            handle.channel.send(msg, b"".join((blob, *data)) if any(data) else blob)
        self._metrics.group_launched(plan.last_job - plan.first_job)
        self.coordination_s += time.perf_counter() - t0

    # -- stimuli from the cluster --------------------------------------------------------

    def on_message(self, worker: WorkerHandle, msg: Message, payload: bytes) -> None:
        t0 = time.perf_counter()
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
                self._deliver(done)
        elif type(msg) is GroupDone:
            worker.groups_done += 1
            if self.sched.group_done(worker.id, msg.group):
                del self._routes[msg.group]
                self._metrics.group_acked()
                self._launch_more()
        self.coordination_s += time.perf_counter() - t0

    def on_worker_lost(self, worker: WorkerHandle) -> None:
        err = self.sched.worker_lost(worker.id)
        if err is not None:
            self._fail(err)
        for group, state in list(self.sched.in_flight.items()):
            if worker.id in state.awaiting and self.sched.group_done(worker.id, group):
                self._routes.pop(group, None)

    # -- delivery ------------------------------------------------------------------------

    def _deliver(self, outcomes: list[JobOutcome]) -> None:
        self._metrics.jobs_completed(outcomes)
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
