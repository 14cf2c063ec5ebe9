"""A slot's share of a group: which tasks, in which order, and which are ready (pure).

The slot derives its tasks from the group's placement (partition ``p`` of every stage runs in
slot ``placement[p % n]``) instead of receiving a task list, so a launch costs the same whatever
the group size. Order: lower batch first, and within a batch stage by stage, so a reduce runs
before the next batch's maps and no slot ever waits on a task that waits on it. A task is ready
when its source's data is due (paced streams) or, for a reduce, when every map output it reads
has arrived; a reduce still waiting lets later ready tasks (the next batch's maps) run first.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from adrizzle.plan.program import ShuffleRead

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from adrizzle.plan.program import JobProgram
    from adrizzle.wire.messages import RunTasks

Task = tuple[int, int, int]  # (job, stage index, partition)
# (group, job, shuffle stage, reduce partition) -> {map partition: block}. The group id is the
# attempt: a re-run after a worker loss never mixes with the old outputs.
Inbox = dict[tuple[int, int, int, int], dict[int, Any]]


@dataclasses.dataclass(slots=True)
class SlotTasks:
    """This slot's tasks of one group, in priority order, and its result partitions."""

    pending: list[Task]
    result_parts: list[int]  # this slot's partitions of the result stage (the same every job)
    result_jobs: list[int]  # the jobs with a result partition on this slot


def tasks_for(run: RunTasks, programs: Sequence[JobProgram]) -> SlotTasks:
    """The tasks of ``run`` (one slot's share of a group) in priority order."""
    n = len(run.placement_slots)
    me = (run.worker, run.slot)
    mine = [
        i
        for i, ref in enumerate(zip(run.placement_workers, run.placement_slots, strict=True))
        if ref == me
    ]
    pending: list[Task] = []
    result_parts: list[int] = []
    result_jobs: list[int] = []
    for job in range(run.first_job, run.last_job):
        program = programs[job - run.first_job]
        for stage_index in run.stages:
            stage = program.stages[stage_index]
            parts = sorted(p for i in mine for p in range(i, stage.partitions, n))
            pending += [(job, stage_index, p) for p in parts]
            if stage.output is None and parts:
                result_jobs.append(job)
                result_parts = parts
    return SlotTasks(pending, result_parts, result_jobs)


def is_ready(
    programs: Sequence[JobProgram], run: RunTasks, task: Task, inbox: Inbox, now: float
) -> bool:
    """A source task whose data is due (``now``: epoch seconds), or a reduce task whose map
    outputs have all arrived."""
    job, stage_index, p = task
    read = programs[job - run.first_job].stages[stage_index].input
    due = read.ready_at(job)  # a paced source, also as a side of a union
    if due is not None and due > now:
        return False
    if not isinstance(read, ShuffleRead):
        return True
    group = run.group
    return all(len(inbox.get((group, job, s, p), ())) >= maps for s, maps in read.shuffles)


def next_ready(pending: Sequence[Task], ready: Callable[[Task], bool]) -> int:
    """The index of the first ready task in priority order, or -1."""
    for i, task in enumerate(pending):
        if ready(task):
            return i
    return -1


def due_in(
    programs: Sequence[JobProgram], run: RunTasks, pending: Sequence[Task], now: float
) -> float | None:
    """Seconds until the earliest pending source task's data is due, if one waits for it."""
    due = None
    for job, stage_index, _p in pending:
        read = programs[job - run.first_job].stages[stage_index].input
        at = read.ready_at(job)
        if at is not None and (due is None or at < due):
            due = at
    return None if due is None else max(0.0, due - now)
