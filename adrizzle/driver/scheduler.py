"""I/O-free state of one ``run_jobs`` call: which groups to launch, and which jobs are done.

The shell (``adrizzle.driver.execution``) feeds it stimuli (``batch_result``, ``group_done``,
``worker_lost``) and acts on what it returns; unit tests drive it with plain calls. Cost is per
group and per (batch, slot) message, never per task: a group's placement is one list of
partitions per slot, and a batch result fills a whole slot's partitions at once.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from adrizzle.errors import TaskError, WorkerLostError
from adrizzle.plan.failure import TaskFailure

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class SlotRef:
    worker: str
    slot: int


@dataclasses.dataclass(slots=True)
class WorkerShare:
    """One worker's part of a run: its slots that have a task in some stage."""

    worker: str
    slot_ids: list[int]
    slot_parts: list[list[int]]  # per slot, its partitions of the result stage


@dataclasses.dataclass(slots=True)
class GroupPlan:
    group: int
    first_job: int
    last_job: int
    shares: list[WorkerShare]
    wave: int = 0
    # Where partition p of every stage runs: slots[p % len(slots)]. Fixed for the group's
    # life; the next group may use another placement (workers joined or were lost).
    slots: list[SlotRef] = dataclasses.field(default_factory=list)

    @property
    def jobs(self) -> range:
        return range(self.first_job, self.last_job)


@dataclasses.dataclass(slots=True)
class JobOutcome:
    """A finished micro-batch: its values per partition, or the first task error."""

    index: int
    values: list[Any] | None
    error: TaskError | None


@dataclasses.dataclass(slots=True)
class _GroupState:
    plan: GroupPlan
    awaiting: set[str]


def place_partitions(
    partitions: int, slots: Sequence[SlotRef], stage_partitions: Sequence[int] = ()
) -> list[WorkerShare]:
    """Pin partition ``p`` of every stage to ``slots[p % len(slots)]``; group by worker.

    ``partitions`` is the result stage's count; ``stage_partitions`` the other stages' counts
    (a slot with a task in any stage takes part in the group). ``slots`` should interleave
    workers (w0/s0, w1/s0, w0/s1, ...) so that consecutive partitions spread across hosts.
    """
    if not slots:
        raise ValueError("no slots to place partitions on")
    n = len(slots)
    busy = {slots[p % n] for count in (partitions, *stage_partitions) for p in range(count)}
    result: dict[SlotRef, list[int]] = {}
    for p in range(partitions):
        result.setdefault(slots[p % n], []).append(p)
    shares: dict[str, WorkerShare] = {}
    for ref in sorted(busy):
        share = shares.setdefault(ref.worker, WorkerShare(ref.worker, [], []))
        share.slot_ids.append(ref.slot)
        share.slot_parts.append(result.get(ref, []))
    return list(shares.values())


def interleave_slots(workers: Iterable[tuple[str, int]]) -> list[SlotRef]:
    """``[(worker, cores), ...]`` -> slots ordered slot-major so workers alternate."""
    ws = list(workers)
    most = max((cores for _w, cores in ws), default=0)
    return [SlotRef(w, s) for s in range(most) for w, cores in ws if s < cores]


class RunScheduler:
    """Plans groups of ``group_size`` consecutive jobs, keeps ``window`` of them in flight.

    With ``next_group_size`` (the adaptive controller's hook) each group's size is asked for
    when the group is planned; ``group_size`` is then the largest it may answer.
    """

    def __init__(
        self,
        *,
        n_jobs: int,
        partitions: int,
        group_size: int,
        window: int,
        shares: list[WorkerShare],
        group_ids: Iterator[int],
        waves: int = 1,
        slots: list[SlotRef] | None = None,
        next_group_size: Callable[[], int] | None = None,
    ) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.n_jobs = n_jobs
        self.partitions = partitions
        self.group_size = group_size
        self.window = window
        self.shares = shares
        self.slots = list(slots or [])
        self.waves = waves
        # Recovery: jobs of aborted groups, re-run one per group, lowest first; then new
        # groups grow back from 1 to group_size by doubling.
        self.redo: list[int] = []
        self._regrow: int | None = None
        self.recoveries = 0
        self.next_group_size = next_group_size
        self._group_ids = group_ids
        self.next_job = 0
        self.in_flight: dict[int, _GroupState] = {}
        self._values: dict[int, list[Any]] = {}
        self._remaining: dict[int, int] = {}
        self._errors: dict[int, TaskError] = {}
        self._done: dict[int, JobOutcome] = {}
        self.next_to_deliver = 0
        self.groups_launched = 0

    @property
    def finished(self) -> bool:
        return self.next_to_deliver >= self.n_jobs

    def can_launch(self) -> bool:
        if len(self.in_flight) >= self.window or not self.shares:
            return False
        return bool(self.redo) or self.next_job < self.n_jobs

    def plan_next_group(self, group_size: int | None = None) -> GroupPlan | None:
        """The next group to launch, or None while the window is full or no job is left."""
        if not self.can_launch():
            return None
        if self.redo:
            first = self.redo.pop(0)
            last = first + 1
        else:
            target = group_size or self._planned_size()
            size = target
            if self._regrow is not None:
                size = min(size, self._regrow)
                self._regrow = None if size >= target else size * 2
            first = self.next_job
            last = min(first + size, self.n_jobs)
            self.next_job = last
        plan = GroupPlan(next(self._group_ids), first, last, self.shares, slots=self.slots)
        self.in_flight[plan.group] = _GroupState(plan, {s.worker for s in plan.shares})
        for job in plan.jobs:
            self._values[job] = [None] * self.partitions
            self._remaining[job] = self.partitions
        self.groups_launched += 1
        return plan

    def _planned_size(self) -> int:
        if self.next_group_size is None:
            return self.group_size
        size = self.next_group_size()
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"the group size hook answered {size!r}, not a positive int")
        return min(size, self.group_size)

    def batch_result(
        self, worker: str, job: int, parts: list[int], values: list[Any], failed: int
    ) -> list[JobOutcome]:
        """Record one slot's values for one job; return the jobs now deliverable, in order."""
        slot_values = self._values.get(job)
        if slot_values is None:
            return []  # a late duplicate of a job already finished
        if len(values) != len(parts):
            raise ValueError(f"job {job}: {len(parts)} partitions but {len(values)} values")
        for p, v in zip(parts, values, strict=True):
            slot_values[p] = v
        if failed:
            # Report the lowest failed partition, whichever slot answers first.
            for p, v in zip(parts, values, strict=True):
                known = self._errors.get(job)
                if isinstance(v, TaskFailure) and (known is None or p < known.partition):
                    self._errors[job] = TaskError(
                        job=job,
                        partition=p,
                        worker=worker,
                        exc_type=v.exc_type,
                        message=v.message,
                        remote_traceback=v.traceback,
                    )
        remaining = self._remaining[job] - len(parts)
        self._remaining[job] = remaining
        if remaining > 0:
            return []
        del self._remaining[job]
        del self._values[job]
        error = self._errors.pop(job, None)
        self._done[job] = JobOutcome(job, None if error else slot_values, error)
        out: list[JobOutcome] = []
        while self.next_to_deliver in self._done:
            out.append(self._done.pop(self.next_to_deliver))
            self.next_to_deliver += 1
        return out

    def group_done(self, worker: str, group: int) -> tuple[bool, GroupPlan | None]:
        """Record a worker's acknowledgement of the group's current wave.

        Returns ``(finished, next_wave)``: ``finished`` once every worker acked the last wave;
        ``next_wave`` is the plan to launch when a BSP wave completed and another follows.
        """
        state = self.in_flight.get(group)
        if state is None:
            return False, None
        state.awaiting.discard(worker)
        if state.awaiting:
            return False, None
        if state.plan.wave + 1 < self.waves:
            state.plan = dataclasses.replace(state.plan, wave=state.plan.wave + 1)
            state.awaiting = {s.worker for s in state.plan.shares}
            return False, state.plan
        del self.in_flight[group]
        return True, None

    def describe_progress(self) -> str:
        """One line on where the run stands, for timeout and stall errors."""
        groups = ", ".join(
            f"group {g} (jobs {st.plan.first_job}..{st.plan.last_job - 1}) awaiting "
            f"{sorted(st.awaiting)}"
            for g, st in self.in_flight.items()
        )
        waiting = sorted(self._remaining.items())[:3]
        parts = ", ".join(f"job {j} lacks {n} partitions" for j, n in waiting)
        return (
            f"{self.next_to_deliver} of {self.n_jobs} jobs delivered; in flight: "
            f"{groups or 'none'}; {parts or 'no partial job'}"
        )

    def set_placement(self, slots: list[SlotRef], shares: list[WorkerShare]) -> None:
        """Groups planned from now on run on these slots (groups in flight keep theirs)."""
        self.slots, self.shares = list(slots), shares

    def recover(self, worker: str) -> list[GroupPlan]:
        """``worker`` is gone: abort every group in flight that placed work on it.

        Their unfinished jobs go back to be re-run one job per group (values that arrived
        for them are dropped, so each (job, partition) is delivered once, from one attempt);
        finished jobs stay done. Returns the aborted plans (their late frames must be
        ignored, and the survivors told to drop them).
        """
        return self._abort(
            [
                st.plan
                for st in self.in_flight.values()
                if any(share.worker == worker for share in st.plan.shares)
            ]
        )

    def recover_link(self, a: str, b: str) -> list[GroupPlan]:
        """The data link between workers ``a`` and ``b`` broke: abort the groups in flight
        that placed work on both."""
        return self._abort(
            [
                st.plan
                for st in self.in_flight.values()
                if {a, b} <= {share.worker for share in st.plan.shares}
            ]
        )

    def recover_stalled(self) -> list[GroupPlan]:
        """No frame for any group in flight for too long (a frame lost without the connection
        failing): groups whose jobs all finished are retired (only acks were missing); the
        others are aborted and their unfinished jobs re-run, as after a loss."""
        aborted = []
        covered: set[int] = set()
        for group, st in list(self.in_flight.items()):
            if all(job not in self._remaining for job in st.plan.jobs):
                del self.in_flight[group]
            else:
                aborted.append(st.plan)
                covered.update(st.plan.jobs)
        # Jobs of groups that were acknowledged although a result frame never came.
        orphans = [job for job in self._remaining if job not in covered]
        for job in orphans:
            self._reset(job)
        result = self._abort(aborted)
        if orphans:
            self.redo = sorted({*self.redo, *orphans})
            self._regrow = 1
        return result

    def retire_awaiting(self, worker: str) -> list[int]:
        """A run with nothing left to re-run (finished or failed) lost ``worker``: retire the
        groups in flight still awaiting its ack, which will never come. Returns their numbers."""
        retired = [g for g, st in self.in_flight.items() if worker in st.awaiting]
        for group in retired:
            del self.in_flight[group]
        return retired

    def abort_all(self) -> list[GroupPlan]:
        """Abort every group in flight and plan nothing more (a stateful run rolls back)."""
        aborted = [st.plan for st in self.in_flight.values()]
        self.in_flight.clear()
        for plan in aborted:
            for job in plan.jobs:
                self._reset(job)
        self.redo = []
        return aborted

    def start_small(self) -> None:
        """Plan the next group with one job, then double the size back (as after a loss)."""
        self._regrow = 1

    def stop_planning(self) -> None:
        """Plan no more groups: the run ends once the groups launched so far are delivered."""
        self.redo = []
        self.n_jobs = min(self.n_jobs, self.next_job)

    @property
    def incomplete(self) -> bool:
        """Some launched job still lacks results."""
        return bool(self._remaining)

    def _reset(self, job: int) -> None:
        self._values.pop(job, None)
        self._remaining.pop(job, None)
        self._errors.pop(job, None)

    def _abort(self, aborted: list[GroupPlan]) -> list[GroupPlan]:
        for plan in aborted:
            del self.in_flight[plan.group]
            for job in plan.jobs:
                if job in self._remaining:  # not finished: forget this attempt's values
                    self._reset(job)
                    self.redo.append(job)
        if aborted:
            self.redo.sort()
            self._regrow = 1
            self.recoveries += 1
        return aborted

    def worker_lost(self, worker: str) -> WorkerLostError | None:
        """The error to fail the run with if ``worker`` held work of this run, else None."""
        involved = [g for g in self.in_flight.values() if worker in g.awaiting]
        if not involved and not any(s.worker == worker for s in self.shares):
            return None
        if not involved and self.next_job >= self.n_jobs:
            return None
        if involved:
            jobs = f"jobs {involved[0].plan.first_job}..{involved[-1].plan.last_job - 1}"
            return WorkerLostError(f"worker {worker} was lost while running {jobs}")
        return WorkerLostError(f"worker {worker}, which holds partitions of this run, was lost")
