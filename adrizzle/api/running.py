"""Running jobs for the public objects: a run's outcomes as ``JobResult``s, and the actions.

``Engine.run_jobs``/``iter_jobs``, ``Stream.run`` and the ``Dataset`` actions (``collect``,
``count``, ``take``) all start their runs on the driver session and read them here, so what a
delivered job carries besides its values (accumulator updates, ``adrizzle.plan.shared``) is
settled in one place: once per delivered job, which the engine delivers exactly once.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from adrizzle.errors import AdrizzleError, TaskError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from adrizzle.driver.execution import RunExecution
    from adrizzle.driver.session import DriverSession
    from adrizzle.plan.program import JobProgram


@dataclasses.dataclass(frozen=True, slots=True)
class JobResult:
    """One finished micro-batch: its index in the call and its value per partition.

    With ``return_exceptions=True`` a failed job has ``values=None`` and ``error`` set.
    """

    index: int
    values: list[Any] | None
    error: TaskError | None = None


async def results_of(
    session: DriverSession,
    run: RunExecution,
    timeout: float | None,
    return_exceptions: bool,
    settle: bool = True,
) -> AsyncIterator[JobResult]:
    """A run's outcomes as ``JobResult``s; the run is finished with when the caller stops.

    ``settle``: apply each job's accumulator updates as it is yielded; False leaves them in
    the values for the caller (a stream applies them itself, only for the batches it
    delivers: a replay's must not count twice).
    """
    try:
        async for outcome in run.outcomes(timeout):
            if outcome.error is not None and not return_exceptions:
                raise outcome.error
            values = outcome.values
            if values is not None and settle:
                values = session.shared.settle(values)
            yield JobResult(outcome.index, values, outcome.error)
    finally:
        session.finished(run)


async def collect(
    session: DriverSession, run: RunExecution, timeout: float | None
) -> tuple[list[Any], TaskError | None]:
    """A run's values per job in job order, a failed job's ``TaskError`` in its place, and the
    first such error: ``run_jobs``' loop over the outcomes directly. (Through ``iter_jobs``
    each micro-batch crossed three async generators: about a sixth of the driver's CPU per
    micro-batch at G=100, cProfile.)"""
    out: list[Any] = []
    first_error: TaskError | None = None
    settle = session.shared.settle
    try:
        async for outcomes in run.outcome_lists(timeout):
            for outcome in outcomes:
                if outcome.error is not None:
                    first_error = first_error or outcome.error
                    out.append(outcome.error)
                else:
                    assert outcome.values is not None
                    out.append(settle(outcome.values))
    finally:
        session.finished(run)
    return out, first_error


async def run_one(
    session: DriverSession, program: JobProgram, timeout: float | None = None
) -> list[Any]:
    """One job (an action): its value per partition, in partition order."""
    if session.closed or not session.address:
        raise AdrizzleError("the engine is not running: use 'async with' or await start()")
    run = await session.start_run([program], 1)
    values: list[Any] | None = None
    async for job in results_of(session, run, timeout, False):
        values = job.values
    assert values is not None
    return values
