"""The run state machine's vocabulary: events (what happened) and instructions (what to do).

``RunScheduler.handle(event) -> list[Instruction]`` (``adrizzle.driver.run_state``). Events are
built by the asyncio shell (``adrizzle.driver.execution``) from frames, timers and cluster
changes, with the time passed in; instructions are carried out by the shell in order. Nothing
here does I/O.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from adrizzle.driver.adaptive import GroupDecision
    from adrizzle.driver.checkpoint_files import Piece
    from adrizzle.driver.jobs import JobOutcome
    from adrizzle.driver.placement import GroupPlan, SlotRef


# -- events ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Start:
    """The run begins: plan the first groups."""

    now: float


@dataclasses.dataclass(frozen=True, slots=True)
class ResultsArrived:
    """A slot's ``batch_result``: per job of ``jobs``, one value per partition in ``parts``."""

    worker: str
    group: int
    jobs: Sequence[int]
    parts: list[int]
    values: Sequence[list[Any]]
    failed: Sequence[int]
    now: float
    positions: Sequence[list[Any]] = ()  # connector reads: [job, partition, start, end]


@dataclasses.dataclass(frozen=True, slots=True)
class GroupAcked:
    """A worker's ``group_done`` for the group's current wave (``busy_s``: its slots' time;
    ``cost_s``: the driver's time reading it, part of the group's coordination)."""

    worker: str
    group: int
    busy_s: float
    now: float
    cost_s: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class Launched:
    """The shell carried out a ``Launch``: what encoding and sending it cost the driver."""

    group: int
    cost_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class CheckpointArrived:
    """A slot's ``state_checkpoint`` for a checkpointed group."""

    group: int
    piece: Piece


@dataclasses.dataclass(frozen=True, slots=True)
class LoadFailed:
    """A slot could not load a group's program, data or state (``group_failed``)."""

    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Broken:
    """The run cannot go on: an unreadable frame, a program that cannot be pickled, the
    engine closing. The run fails with ``error``."""

    error: BaseException


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerLost:
    """``worker`` is gone (connection closed or heartbeat timeout); ``slots``: the running
    slots left, where groups planned from now on go."""

    worker: str
    slots: list[SlotRef]
    now: float


@dataclasses.dataclass(frozen=True, slots=True)
class LinkLost:
    """The data link between ``worker`` and ``peer`` broke: map outputs between them may be
    lost; both workers stay."""

    worker: str
    peer: str
    now: float


@dataclasses.dataclass(frozen=True, slots=True)
class Stalled:
    """No frame for this run for ``silent_s`` s (of the driver's listening time) while it
    waits for some: a frame was lost while its connection stayed up."""

    silent_s: float
    now: float


@dataclasses.dataclass(frozen=True, slots=True)
class PlacementChanged:
    """Workers joined or started draining: groups planned from now on go to ``slots``."""

    slots: list[SlotRef]
    now: float


@dataclasses.dataclass(frozen=True, slots=True)
class Consumed:
    """The caller took ``n`` delivered outcomes (backpressure: launching resumes)."""

    n: int
    now: float


@dataclasses.dataclass(frozen=True, slots=True)
class NoWorkersTimeout:
    """The run waited ``WaitForWorkers.timeout`` s for a worker and none came."""


@dataclasses.dataclass(frozen=True, slots=True)
class Closed:
    """The caller stopped iterating: plan nothing more (groups in flight are still acked)."""


Event = (
    Start
    | ResultsArrived
    | GroupAcked
    | Launched
    | CheckpointArrived
    | LoadFailed
    | Broken
    | WorkerLost
    | LinkLost
    | Stalled
    | PlacementChanged
    | Consumed
    | NoWorkersTimeout
    | Closed
)

# -- instructions --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Launch:
    """Send ``plan``'s wave to its workers. ``restore``: ship the stream state to restore with
    it (the run's first group); ``checkpoint``: the slots send their changed state after it."""

    plan: GroupPlan
    restore: bool = False
    checkpoint: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Cancel:
    """Tell every worker but ``lost`` to drop these groups (their late frames are ignored)."""

    groups: list[int]
    lost: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Forget:
    """Stop routing frames of ``group`` to this run; ``acked``: it completed normally."""

    group: int
    acked: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Deliver:
    """Hand these finished jobs to the caller, in job order."""

    outcomes: list[JobOutcome]


@dataclasses.dataclass(frozen=True, slots=True)
class Fail:
    """End the run with ``error`` (the caller sees it after the outcomes delivered before)."""

    error: BaseException


@dataclasses.dataclass(frozen=True, slots=True)
class Commit:
    """Every worker acknowledged a checkpointed group: commit its state pieces."""

    pieces: list[Piece]


@dataclasses.dataclass(frozen=True, slots=True)
class Completed:
    """Jobs up to ``through`` will never be replayed (a connector stream's offset log may
    forget them and tell its source)."""

    through: int


@dataclasses.dataclass(frozen=True, slots=True)
class Rollback:
    """The run's stream state on the slots can no longer be trusted (a loss): invalidate the
    live copies; the stream restores its last checkpoint. A ``Fail`` follows."""

    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class Recovered:
    """Groups were aborted and their unfinished jobs go again (for logs and metrics)."""

    reason: str
    groups: list[int]
    jobs: list[int]


@dataclasses.dataclass(frozen=True, slots=True)
class WaitForWorkers:
    """No slot to place on: send ``NoWorkersTimeout`` after ``timeout`` s (None: a worker
    came, cancel that)."""

    timeout: float | None


@dataclasses.dataclass(frozen=True, slots=True)
class Observed:
    """The adaptive group size judged a finished group."""

    decision: GroupDecision


Instruction = (
    Launch
    | Cancel
    | Forget
    | Deliver
    | Fail
    | Commit
    | Completed
    | Rollback
    | Recovered
    | WaitForWorkers
    | Observed
)
