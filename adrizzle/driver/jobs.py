"""The books of one run: its groups in flight, its jobs' values and errors, delivery in job
order, and which jobs are complete for good.

Pure bookkeeping for ``RunScheduler`` (``adrizzle.driver.run_state``), which holds the rules.
Cost is per (job, slot) result, never per task: one slot's values for one job fill all its
partitions at once.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from adrizzle.errors import TaskError
from adrizzle.plan.failure import TaskFailure

if TYPE_CHECKING:
    from collections.abc import Sequence

    from adrizzle.driver.checkpoint_files import Piece
    from adrizzle.driver.placement import GroupPlan


@dataclasses.dataclass(slots=True)
class StatePolicy:
    """A run that rolls back after a loss (stream state, or a connector source): checkpoint
    its state at most once per ``interval`` s (0: every group; ``checkpoints`` False: no state
    to checkpoint); ``restore``: its first group ships the state to restore."""

    interval: float = 0.0
    restore: bool = False
    checkpoints: bool = True


@dataclasses.dataclass(slots=True)
class GroupState:
    """Everything the driver keeps about one group in flight."""

    plan: GroupPlan
    awaiting: set[str]  # workers that have not acknowledged the current wave
    launched_at: float
    pieces: list[Piece] | None = None  # a checkpointed group's state pieces so far
    # Its clock, for the adaptive group size (adrizzle.driver.adaptive.GroupTiming).
    start: float = 0.0  # max(launch, the previous group's last result)
    first_done: float | None = None
    last_done: float | None = None
    cost_s: float = 0.0  # driver time spent launching it
    busy_s: float | None = None  # the busiest slot's acknowledged time
    slots_of: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class JobOutcome:
    """A finished micro-batch: its values per partition, or the first task error.

    ``launched_at``: when its group was launched (the shell's clock; for monitoring).
    """

    index: int
    values: list[Any] | None
    error: TaskError | None
    launched_at: float = 0.0
    # A connector stream's batch: each source partition's (start, end) positions.
    positions: dict[int, tuple[Any, Any]] | None = None


class JobLedger:
    """Values per open job; ``record`` returns the jobs that became deliverable, in order.

    With ``sources`` (a connector stream's source partitions), a job is finished only once
    every source partition's range is in as well (``add_positions``).
    """

    def __init__(self, n_jobs: int, partitions: int, sources: int = 0) -> None:
        self.n_jobs = n_jobs
        self.partitions = partitions
        self.sources = sources
        self._positions: dict[int, dict[int, tuple[Any, Any]]] = {}
        self.next_to_deliver = 0
        self._values: dict[int, list[Any]] = {}
        self._remaining: dict[int, int] = {}
        self._errors: dict[int, TaskError] = {}
        self._done: dict[int, JobOutcome] = {}

    @property
    def finished(self) -> bool:
        return self.next_to_deliver >= self.n_jobs

    @property
    def incomplete(self) -> bool:
        """Some opened job still lacks values."""
        return bool(self._remaining)

    def is_open(self, job: int) -> bool:
        return job in self._remaining

    def open(self, jobs: range) -> None:
        """A group with these jobs was launched: expect every partition of each."""
        n = self.partitions
        self._values.update({job: [None] * n for job in jobs})
        self._remaining.update(dict.fromkeys(jobs, n))
        if self.sources:
            self._positions.update({job: {} for job in jobs})

    def reset(self, job: int) -> None:
        """Forget what arrived for ``job`` (its attempt was aborted; it runs again)."""
        self._values.pop(job, None)
        self._remaining.pop(job, None)
        self._errors.pop(job, None)
        self._positions.pop(job, None)

    def open_jobs(self) -> list[int]:
        return list(self._remaining)

    def record(
        self,
        worker: str,
        job: int,
        parts: list[int],
        values: list[Any],
        failed: int,
        launched_at: float = 0.0,
    ) -> list[JobOutcome]:
        """One slot's values for one job; the jobs now deliverable, in job order."""
        return self.record_frame(worker, [job], parts, [values], [failed], launched_at)[0]

    def record_frame(
        self,
        worker: str,
        jobs: Sequence[int],
        parts: Sequence[int],
        batches: Sequence[Sequence[Any]],
        failed: Sequence[int],
        launched_at: float = 0.0,
    ) -> tuple[list[JobOutcome], bool]:
        """One slot's values for several jobs (one ``batch_result`` frame: ``batches[i]``
        holds job ``jobs[i]``'s values for ``parts``). Returns the jobs now deliverable, in
        job order, and whether any of the frame's jobs is now complete. One call per frame:
        per job it costs a few dict operations (at 1,024 workers the per-job calls were half
        the driver's CPU)."""
        n = len(parts)
        values_of, remaining = self._values, self._remaining
        out: list[JobOutcome] = []
        completed = False
        # A slot's partitions are usually every k-th (placement p % k): one slice assignment
        # per job then files them all.
        if parts and (min(parts) < 0 or max(parts) >= self.partitions):
            raise ValueError(f"partitions {list(parts)} not in 0..{self.partitions - 1}")
        where = _as_slice(parts)
        full: list[int] = []  # jobs whose values are now all in
        for job, values, bad in zip(jobs, batches, failed, strict=True):
            slot_values = values_of.get(job)
            if slot_values is None:  # a late duplicate of a job already finished
                completed = True
                continue
            if len(values) != n:
                raise ValueError(f"job {job}: {n} partitions but {len(values)} values")
            if where is not None:
                slot_values[where] = values
            else:
                for p, v in zip(parts, values, strict=True):
                    slot_values[p] = v
            if bad:
                self._record_errors(worker, job, parts, values)
            left = remaining[job] - n
            remaining[job] = left
            if left <= 0:
                full.append(job)
        if not full:
            return out, completed
        if not self.sources:  # values are all a job needs: the frame's full jobs in one go
            return self._deliver(full, launched_at), True
        for job in full:  # a connector batch also needs its source ranges
            out += self._finish(job, launched_at)
            completed = completed or job not in remaining
        return out, completed

    def _record_errors(
        self, worker: str, job: int, parts: Sequence[int], values: Sequence[Any]
    ) -> None:
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

    def add_positions(self, entries: list[list[Any]], launched_at: float = 0.0) -> list[JobOutcome]:
        """Source ranges ``[job, partition, start, end]``; the jobs now deliverable."""
        out: list[JobOutcome] = []
        for job, partition, start, end in entries:
            known = self._positions.get(job)
            if known is None:
                continue  # a job already finished (or reset): a duplicate
            known[partition] = (start, end)
            out += self._finish(job, launched_at)
        return out

    def _finish(self, job: int, launched_at: float) -> list[JobOutcome]:
        """Deliver ``job`` if it has everything, with every job after it that waited for it."""
        if self._remaining.get(job, 1) > 0:
            return []
        positions = None
        if self.sources:
            positions = self._positions.get(job)
            failed = job in self._errors  # a read that raised reports no range: fail the job
            if not failed and (positions is None or len(positions) < self.sources):
                return []
            self._positions.pop(job, None)
        return self._deliver([job], launched_at, positions)

    def _deliver(
        self,
        jobs: list[int],
        launched_at: float,
        positions: dict[int, tuple[Any, Any]] | None = None,
    ) -> list[JobOutcome]:
        """``jobs`` are complete: their outcomes, with every job after each that waited for
        it, in job order; a job after a gap waits in ``_done``. One call per frame: per job
        this is the hot path's last step (at G=100, 100 jobs per frame)."""
        remaining, values_of, errors, done = self._remaining, self._values, self._errors, self._done
        out: list[JobOutcome] = []
        n = self.next_to_deliver
        for job in jobs:
            del remaining[job]
            slot_values = values_of.pop(job)
            error = errors.pop(job, None) if errors else None
            outcome = JobOutcome(job, None if error else slot_values, error, launched_at, positions)
            if job != n:  # waits for an earlier job
                done[job] = outcome
                continue
            out.append(outcome)
            n += 1
            while n in done:
                out.append(done.pop(n))
                n += 1
        self.next_to_deliver = n
        return out

    def describe_missing(self, limit: int = 3) -> str:
        waiting = sorted(self._remaining.items())[:limit]
        return ", ".join(f"job {j} lacks {n} partitions" for j, n in waiting)


def per_job(flat: Any, jobs: int, parts: int) -> list[list[Any]]:
    """A ``batch_result`` payload (one flat list, ``parts`` values per job in turn) as each
    job's list of values; ``ValueError`` naming the mismatch when it is not that."""
    if type(flat) is not list:
        raise ValueError(f"expected a list of values, got {type(flat).__name__}")
    if len(flat) != jobs * parts:
        raise ValueError(f"{jobs} jobs x {parts} partitions but {len(flat)} values")
    if parts == 0:
        return [[] for _ in range(jobs)]
    return [flat[i : i + parts] for i in range(0, len(flat), parts)]


def _as_slice(parts: Sequence[int]) -> slice | None:
    """``parts`` (ascending, in range) as a slice when they are evenly spaced, else None."""
    if not parts:
        return None
    step = parts[1] - parts[0] if len(parts) > 1 else 1
    if step <= 0 or list(range(parts[0], parts[-1] + 1, step)) != list(parts):
        return None
    return slice(parts[0], parts[-1] + 1, step)


class Completion:
    """Which jobs will never run again: the contiguous prefix of acknowledged groups, up to
    the last one that counts as a completion point (every group, or for a run with stream
    state only checkpointed ones: a replay starts after the last checkpoint)."""

    def __init__(self) -> None:
        self.through = -1  # the last job that will never be replayed
        self._prefix = 0  # jobs 0 .. _prefix - 1 are acknowledged
        self._acked: dict[int, tuple[int, bool]] = {}  # first job -> (last job + 1, point)

    def acked(self, first: int, last: int, point: bool) -> int | None:
        """Group of jobs ``first .. last - 1`` acknowledged (``point``: it completes them);
        the new ``through`` when it advanced, else None."""
        self._acked[first] = (last, point)
        before = self.through
        while self._prefix in self._acked:
            end, is_point = self._acked.pop(self._prefix)
            self._prefix = end
            if is_point:
                self.through = end - 1
        return self.through if self.through > before else None
