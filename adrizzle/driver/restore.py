"""Planning the state restore of a run with stream state (which checkpoint, and whether the
stream must first replay batches): the rule that keeps state and output in step."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from adrizzle.errors import ReplayNeeded, StateOrderError

if TYPE_CHECKING:
    from adrizzle.driver.placement import SlotRef
    from adrizzle.driver.session import DriverSession
    from adrizzle.plan.state import StateUpdate


async def plan_restore(
    session: DriverSession, steps: dict[int, tuple[int, StateUpdate]], slots: list[SlotRef]
) -> dict[tuple[str, int], bytes]:
    """The state to ship with a stateful run's first group, whose partitions' live state is
    not where the run places them (after a loss, or when workers joined or left).

    It must be the state as of the batch before the run's first: the last checkpoint. If that
    is older, ``ReplayNeeded`` says from which batch the stream must run again; if it is newer
    (a run was stopped with groups in flight), the state is ahead of the output: an error.
    """
    checkpoints = session.checkpoints
    expected = {sid: parts for sid, (parts, _step) in steps.items()}
    (run_first,) = {step.run_first for _parts, step in steps.values()}

    def resume_points() -> set[int]:
        committed = checkpoints.committed_batch(expected)
        return {
            steps[sid][1].first_batch if batch is None else batch + 1
            for sid, batch in committed.items()
        }

    def tail_in_flight() -> bool:  # groups of an earlier run of these states, unacked
        return any(
            run.stateful is not None and not run.stateful.expected.keys() - expected
            for run in set(session.routes.values())
        )

    points = resume_points()
    deadline = time.monotonic() + (session.config.stall_timeout or 60.0)
    while points != {run_first} and tail_in_flight() and time.monotonic() < deadline:
        await asyncio.sleep(0.001)  # their acks commit the checkpoint this run needs
        points = resume_points()
    if len(points) != 1:
        raise StateOrderError(
            f"cannot restore stream state: its states' checkpoints are at different "
            f"micro-batches (would resume at {sorted(points)})"
        )
    (start,) = points
    if start > run_first:
        raise StateOrderError(
            f"stream state is checkpointed at micro-batch {start - 1} but the stream's "
            f"output stopped at {run_first - 1} (a run was stopped while groups were in "
            "flight): the state is ahead of the output and cannot be moved"
        )
    if start < run_first:
        raise ReplayNeeded(
            start,
            f"stream state is checkpointed at micro-batch {start - 1}: micro-batches "
            f"{start}..{run_first - 1} must run again before {run_first}",
        )
    return checkpoints.restore_payloads(expected, slots, start - 1)
