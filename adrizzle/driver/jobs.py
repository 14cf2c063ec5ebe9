"""The jobs of one run: values as they arrive, the first task error, delivery in job order.

Pure bookkeeping for ``RunScheduler`` (``adrizzle.driver.run_state``). Cost is per (job, slot)
result, never per task: one slot's values for one job fill all its partitions at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from adrizzle.errors import TaskError
from adrizzle.plan.failure import TaskFailure


@dataclasses.dataclass(slots=True)
class JobOutcome:
    """A finished micro-batch: its values per partition, or the first task error.

    ``launched_at``: when its group was launched (the shell's clock; for monitoring).
    """

    index: int
    values: list[Any] | None
    error: TaskError | None
    launched_at: float = 0.0


class JobLedger:
    """Values per open job; ``record`` returns the jobs that became deliverable, in order."""

    def __init__(self, n_jobs: int, partitions: int) -> None:
        self.n_jobs = n_jobs
        self.partitions = partitions
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
        for job in jobs:
            self._values[job] = [None] * self.partitions
            self._remaining[job] = self.partitions

    def reset(self, job: int) -> None:
        """Forget what arrived for ``job`` (its attempt was aborted; it runs again)."""
        self._values.pop(job, None)
        self._remaining.pop(job, None)
        self._errors.pop(job, None)

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
        self._done[job] = JobOutcome(job, None if error else slot_values, error, launched_at)
        out: list[JobOutcome] = []
        while self.next_to_deliver in self._done:
            out.append(self._done.pop(self.next_to_deliver))
            self.next_to_deliver += 1
        return out

    def describe_missing(self, limit: int = 3) -> str:
        waiting = sorted(self._remaining.items())[:limit]
        return ", ".join(f"job {j} lacks {n} partitions" for j, n in waiting)
