"""A slot's share of a group: which tasks, in which order, and which are ready (pure).

The slot derives its tasks from the group's placement (partition ``p`` of every stage runs in
slot ``placement[p % n]``) instead of receiving a task list, so a launch costs the same whatever
the group size. Order: lower batch first, and within a batch stage by stage, so a reduce runs
before the next batch's maps and no slot ever waits on a task that waits on it. A task is ready
when its source's data is due (paced streams) or, for a reduce, when every map output it reads
has arrived; a reduce still waiting lets later ready tasks (the next batch's maps) run first
(``TaskQueue``).
"""

from __future__ import annotations

import dataclasses
import heapq
from typing import TYPE_CHECKING, Any

from adrizzle.plan.program import ShuffleRead

if TYPE_CHECKING:
    from collections.abc import Sequence

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


def placement_indexes(run: RunTasks) -> list[int]:
    """The indexes of this slot in the group's placement (partition ``p`` runs in slot
    ``placement[p % n]``)."""
    me = (run.worker, run.slot)
    refs = zip(run.placement_workers, run.placement_slots, strict=True)
    return [i for i, ref in enumerate(refs) if ref == me]


def slot_partitions(run: RunTasks, mine: list[int], partitions: int) -> list[int]:
    """This slot's partitions of a stage of ``partitions`` (``mine``: its placement
    indexes), ascending."""
    n = len(run.placement_slots)
    return sorted(p for i in mine for p in range(i, partitions, n))


def ready_results(run: RunTasks, programs: Sequence[JobProgram]) -> list[int] | None:
    """This slot's result partitions when every task of ``run`` is a result task that can run
    now: one stage, no shuffle read, no paced source, no sink on the workers. Such a group runs
    job by job with no queue (``SlotProcess.run_ready``: the single-stage hot path). None for
    any other group.

    A program repeated over consecutive jobs (one dataset run again and again) is checked
    once: whether a source is paced (``ready_at`` not None) does not depend on the job."""
    if len(run.stages) != 1 or not programs:
        return None
    index = run.stages[0]
    last = None
    for job, program in enumerate(programs, run.first_job):
        if program is last:
            continue
        last = program
        stage = program.stages[index]
        read = stage.input
        if program.sink is not None or stage.output is not None or isinstance(read, ShuffleRead):
            return None
        if read.ready_at(job) is not None:
            return None
    return slot_partitions(run, placement_indexes(run), programs[0].stages[index].partitions)


def tasks_for(run: RunTasks, programs: Sequence[JobProgram]) -> SlotTasks:
    """The tasks of ``run`` (one slot's share of a group) in priority order."""
    mine = placement_indexes(run)
    # A stage's partitions on this slot depend only on its partition count: the jobs of a
    # group share their stage structure, so this is computed once per stage, not per job.
    parts_of: dict[int, list[int]] = {}
    pending: list[Task] = []
    result_parts: list[int] = []
    result_jobs: list[int] = []
    for job in range(run.first_job, run.last_job):
        program = programs[job - run.first_job]
        for stage_index in run.stages:
            stage = program.stages[stage_index]
            parts = parts_of.get(stage.partitions)
            if parts is None:
                parts = parts_of[stage.partitions] = slot_partitions(run, mine, stage.partitions)
            pending += [(job, stage_index, p) for p in parts]
            if stage.output is None and parts:
                result_jobs.append(job)
                result_parts = parts
    return SlotTasks(pending, result_parts, result_jobs)


class TaskQueue:
    """This slot's pending tasks of one group, handed out first ready first in priority order.

    A task is ready when its data is due (a paced source, also as a side of a union) and, for
    a reduce, once every map output of its attempt has arrived. Arrivals are counted as the
    inbox files them (``arrived``), so picking a task never rescans the reduces still waiting:
    that scan, once per task, was 45% of a slot's time in a 100-batch group of a small shuffle
    (py-spy, measured here).
    """

    def __init__(
        self, run: RunTasks, programs: Sequence[JobProgram], plan: SlotTasks, inbox: Inbox
    ) -> None:
        """``inbox``: the map outputs already here (they may arrive before their group runs)."""
        self.tasks = plan.pending
        self._left = len(self.tasks)
        self._due: list[float | None] = []
        self._missing: dict[int, int] = {}  # task -> shuffle inputs still incomplete
        self._waiting: dict[tuple[int, int, int, int], tuple[int, int]] = {}  # key -> (task, maps)
        self._ready: list[int] = []  # heap of tasks whose inputs are all in
        # A job's stage has one input and one due time for all its partitions: looked up once
        # per (job, stage), not per task.
        last: tuple[int, int] | None = None
        read: Any = None
        due: float | None = None
        for i, (job, stage_index, p) in enumerate(self.tasks):
            if (job, stage_index) != last:
                last = (job, stage_index)
                read = programs[job - run.first_job].stages[stage_index].input
                due = read.ready_at(job)
            self._due.append(due)
            missing = 0
            if isinstance(read, ShuffleRead):
                for shuffle, maps in read.shuffles:
                    key = (run.group, job, shuffle, p)
                    if len(inbox.get(key, ())) < maps:
                        self._waiting[key] = (i, maps)
                        missing += 1
            if missing:
                self._missing[i] = missing
            else:
                self._ready.append(i)  # ascending: a heap already

    def __len__(self) -> int:
        return self._left

    def arrived(self, key: tuple[int, int, int, int], have: int) -> None:
        """The inbox now holds ``have`` map outputs for ``key`` (group, job, shuffle, part)."""
        entry = self._waiting.get(key)
        if entry is None or have < entry[1]:
            return
        del self._waiting[key]
        task = entry[0]
        missing = self._missing.get(task)
        if missing is None:
            return  # given up on already (pop_waiting)
        if missing > 1:
            self._missing[task] = missing - 1
        else:
            del self._missing[task]
            heapq.heappush(self._ready, task)

    def pop(self, now: float) -> Task | None:
        """The first ready task in priority order (``now``: epoch seconds), or None."""
        ready = self._ready
        if not ready:
            return None
        due = self._due[ready[0]]
        if due is None or due <= now:
            self._left -= 1  # _take, inlined: this is the per-task path
            return self.tasks[heapq.heappop(ready)]
        # The first waits for its data to be due (a paced stream): a later one may not.
        due_now = [i for i in ready if (d := self._due[i]) is None or d <= now]
        if not due_now:
            return None
        task = min(due_now)
        ready.remove(task)
        heapq.heapify(ready)
        return self._take(task)

    def pop_waiting(self) -> Task:
        """Give up waiting: the first task still missing inputs (its read then raises the
        error naming what is missing)."""
        task = min(self._missing)
        del self._missing[task]
        return self._take(task)

    def due_in(self, now: float) -> float | None:
        """Seconds until the earliest pending task's data is due, if one waits for it."""
        due = [d for i in (*self._ready, *self._missing) if (d := self._due[i]) is not None]
        return max(0.0, min(due) - now) if due else None

    def _take(self, task: int) -> Task:
        self._left -= 1
        return self.tasks[task]
