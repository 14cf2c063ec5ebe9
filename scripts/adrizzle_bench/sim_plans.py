"""What a simulated slot owes the driver for one launch, derived as a real slot derives it.

Pure: no sockets, no clock. ``Plans`` turns a decoded ``launch_group`` (and its programs blob)
into each slot's ``SlotShare``: the micro-batches in the order a slot runs them, the tasks of
each, which have result partitions on the slot, and the map outputs its map tasks would push
to other slots (frames and bytes). The tasks come from ``adrizzle.worker.slot_tasks.tasks_for``
on a ``RunTasks`` built exactly as ``adrizzle.worker.runtime`` builds it; the pushes follow
``SlotProcess.run_map_task`` (one frame per reducer slot other than its own, all of them when
the launch holds outputs for BSP fetches).

Every worker of a simulated process shares one ``Plans``: the programs blob of a group is
unpickled once per distinct blob (not once per worker), and ``tasks_for``'s answer is kept per
(programs, number of jobs, stages, placement, slot), relative to the group's first job, so a
thousand workers derive their shares once per placement instead of once per group.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

from adrizzle.plan.program import JobProgram
from adrizzle.wire.messages import LaunchGroup, RunTasks
from adrizzle.worker.slot_tasks import tasks_for

#: ``sim_value(job, partition)`` keeps partitions of one job apart below this.
PART_SPAN = 1 << 16


def sim_value(job: int, partition: int) -> int:
    """The value a simulated slot returns for ``partition`` of job ``job`` (a small int that
    names both, so a value delivered to the wrong job or partition shows)."""
    return job * PART_SPAN + partition


def expected_values(jobs: int, partitions: int, first_job: int = 0) -> list[list[int]]:
    """What ``run_jobs`` returns for a run answered by simulated workers."""
    return [[sim_value(j, p) for p in range(partitions)] for j in range(first_job, jobs)]


@dataclasses.dataclass(frozen=True, slots=True)
class BatchWork:
    """One micro-batch of a slot's share: ``offset`` from the group's first job, its tasks on
    the slot, whether it has result partitions here, and its map outputs pushed elsewhere."""

    offset: int
    tasks: int
    result: bool
    pushes: int
    push_bytes: int


@dataclasses.dataclass(frozen=True, slots=True)
class SlotShare:
    """A slot's part of a group, relative to the group's first job."""

    result_parts: list[int]
    batches: list[BatchWork]
    tasks: int
    pushes: int
    push_bytes: int


def push_bytes(reduce_parts: list[int]) -> int:
    """Bytes of one pushed map output holding an empty block per reducer partition."""
    return len(pickle.dumps({r: [] for r in reduce_parts}, protocol=5))


def derive_share(msg: LaunchGroup, programs: list[JobProgram], worker: str, slot: int) -> SlotShare:
    """``slot`` of ``worker``'s share of the launch, as ``tasks_for`` plans it (jobs counted
    from 0: the share is the same for every group of the same shape and placement)."""
    run = RunTasks(
        group=msg.group,
        first_job=0,
        last_job=msg.last_job - msg.first_job,
        stages=msg.stages,
        placement_workers=msg.placement_workers,
        placement_slots=msg.placement_slots,
        worker=worker,
        slot=slot,
        program_len=msg.program_len,
        release=[],
        linger_us=msg.linger_us,
        hold=msg.hold,
    )
    plan = tasks_for(run, programs)
    n = len(msg.placement_slots)
    me = (worker, slot)
    tasks: dict[int, int] = {}
    pushes: dict[int, tuple[int, int]] = {}
    push_cost: dict[tuple[int, int], tuple[int, int]] = {}  # (reducers, index) -> frames, bytes
    for job, stage_index, p in plan.pending:
        tasks[job] = tasks.get(job, 0) + 1
        output = programs[job].stages[stage_index].output
        if output is None:
            continue
        key = (output.partitions, p % n)
        cost = push_cost.get(key)
        if cost is None:
            by_slot: dict[int, list[int]] = {}
            for r in range(output.partitions):
                by_slot.setdefault(r % n, []).append(r)
            frames = size = 0
            for index, parts in by_slot.items():
                target = (msg.placement_workers[index], msg.placement_slots[index])
                if not msg.hold and target == me:
                    continue  # stays in the slot, as SlotProcess.file_blocks does
                frames += 1
                size += push_bytes(parts)
            cost = push_cost[key] = (frames, size)
        done = pushes.get(job, (0, 0))
        pushes[job] = (done[0] + cost[0], done[1] + cost[1])
    with_result = set(plan.result_jobs)
    batches = [
        BatchWork(job, count, job in with_result, *pushes.get(job, (0, 0)))
        for job, count in tasks.items()  # dicts keep insertion order: the slot's run order
    ]
    return SlotShare(
        result_parts=plan.result_parts,
        batches=batches,
        tasks=len(plan.pending),
        pushes=sum(b.pushes for b in batches),
        push_bytes=sum(b.push_bytes for b in batches),
    )


class Plans:
    """Programs and slot shares, cached for every simulated worker of one process."""

    def __init__(self, limit: int = 8192) -> None:
        self._limit = limit
        self._programs: dict[bytes, tuple[int, list[JobProgram]]] = {}
        self._placements: dict[tuple[tuple[str, ...], tuple[int, ...]], int] = {}
        self._shares: dict[tuple[Any, ...], SlotShare] = {}
        self._next_placement = 0  # tokens are never reused, even after a clear
        self.unpickled = 0  # distinct program blobs unpickled
        self.derived = 0  # shares computed with tasks_for

    def programs(self, blob: bytes) -> tuple[int, list[JobProgram]]:
        """``(token, programs)`` of a group's programs blob; the token names the blob."""
        found = self._programs.get(blob)
        if found is None:
            if len(self._programs) >= 64:
                self._programs.clear()
            self.unpickled += 1
            found = self._programs[blob] = (self.unpickled, pickle.loads(blob))
        return found

    def placement(self, msg: LaunchGroup) -> int:
        """A token naming the launch's placement (the same lists get the same token)."""
        key = (tuple(msg.placement_workers), tuple(msg.placement_slots))
        token = self._placements.get(key)
        if token is None:
            if len(self._placements) >= 256:
                self._placements.clear()
            self._next_placement += 1
            token = self._placements[key] = self._next_placement
        return token

    def share(
        self, msg: LaunchGroup, blob: bytes, placement: int, worker: str, slot: int
    ) -> SlotShare:
        """``slot`` of ``worker``'s share of the launch (``placement``: ``placement(msg)``)."""
        token, programs = self.programs(blob)
        key = (token, msg.last_job - msg.first_job, tuple(msg.stages), msg.hold, placement)
        key += (worker, slot)
        share = self._shares.get(key)
        if share is None:
            if len(self._shares) >= self._limit:
                self._shares.clear()
            self.derived += 1
            share = self._shares[key] = derive_share(msg, programs, worker, slot)
        return share
