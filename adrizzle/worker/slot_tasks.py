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

import collections
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


class TaskQueue:
    """This slot's pending tasks of one group, handed out first ready first in priority order.

    A source task is ready when its data is due; a reduce task once every map output of its
    attempt has arrived. Arrivals are counted as the inbox files them (``arrived``), so
    picking a task never rescans the reduces still waiting: that scan, once per task, was 45%
    of a slot's time in a 100-batch group of a small shuffle (py-spy, measured here).
    """

    def __init__(
        self, run: RunTasks, programs: Sequence[JobProgram], plan: SlotTasks, inbox: Inbox
    ) -> None:
        """``inbox``: the map outputs already here (they may arrive before their group runs)."""
        self.tasks = plan.pending
        self._left = len(self.tasks)
        self._sources: collections.deque[int] = collections.deque()
        self._due: dict[int, float | None] = {}
        self._missing: dict[int, int] = {}  # reduce task -> inputs still incomplete
        self._waiting: dict[tuple[int, int, int, int], tuple[int, int]] = {}  # key -> (task, maps)
        self._ready: list[int] = []  # heap of reduce tasks whose inputs are all in
        for i, (job, stage_index, p) in enumerate(self.tasks):
            read = programs[job - run.first_job].stages[stage_index].input
            if not isinstance(read, ShuffleRead):
                self._sources.append(i)
                self._due[i] = read.ready_at(job)
                continue
            self._missing[i] = 0
            for shuffle, maps in read.shuffles:
                key = (run.group, job, shuffle, p)
                if len(inbox.get(key, ())) < maps:
                    self._waiting[key] = (i, maps)
                    self._missing[i] += 1
            if not self._missing[i]:
                heapq.heappush(self._ready, i)

    def __len__(self) -> int:
        return self._left

    def arrived(self, key: tuple[int, int, int, int], have: int) -> None:
        """The inbox now holds ``have`` map outputs for ``key`` (group, job, shuffle, part)."""
        entry = self._waiting.get(key)
        if entry is None or have < entry[1]:
            return
        del self._waiting[key]
        task = entry[0]
        self._missing[task] -= 1
        if not self._missing[task]:
            heapq.heappush(self._ready, task)

    def pop(self, now: float) -> Task | None:
        """The first ready task in priority order (``now``: epoch seconds), or None."""
        source = -1
        for i in self._sources:  # the head, unless a paced source is not due yet
            due = self._due[i]
            if due is None or due <= now:
                source = i
                break
        if self._ready and (source < 0 or self._ready[0] < source):
            return self._take(heapq.heappop(self._ready))
        if source < 0:
            return None
        if source == self._sources[0]:
            self._sources.popleft()
        else:
            self._sources.remove(source)
        return self._take(source)

    def pop_waiting(self) -> Task:
        """Give up waiting: the first reduce task still missing inputs (its read then raises
        the error naming what is missing)."""
        task = min(i for i, missing in self._missing.items() if missing)
        self._missing[task] = 0
        return self._take(task)

    def due_in(self, now: float) -> float | None:
        """Seconds until the earliest pending source task's data is due, if one waits for it."""
        due = [d for i in self._sources if (d := self._due[i]) is not None]
        return max(0.0, min(due) - now) if due else None

    def _take(self, task: int) -> Task:
        self._left -= 1
        self._missing.pop(task, None)
        return self.tasks[task]
