"""Adaptive group size (``group_size="auto"``): AIMD on each group's measured coordination overhead.

Pure logic, no clock and no I/O: the run state machine (``adrizzle.driver.run_state``) keeps
each group's clock from the times the shell passes in, so unit tests drive the controller with
scripted timings.

What a group's overhead is (made measurable):

- ``coordination_s``: driver time spent on the group (planning, serializing, launching, handling
  its acknowledgements), measured around that code;
- plus the **dispatch delay**: from the moment the group could start producing (its launch, or
  the previous group's last result if that came later) to its first result, minus the time one
  micro-batch takes in steady state (estimated from the spacing of results inside groups). This
  is the per-group cost the driver cannot see on its own CPU: frames through the workers,
  unpickling the group's programs in the slots, and the hops before the first batch flows.

The overhead fraction is ``overhead / active`` where ``active`` is the time the group kept
the engine working: its wall time (start to last result), but at most the slots' busy time plus
the overhead. The slots report busy time without the time they waited for a stream's data to be
due, so a paced stream is judged on the work it did, not on the time it spent waiting: with
tiny batches coordination dominates and the group grows; with heavy batches it may shrink.
Groups that run back to back (no waiting) have busy time close to their wall time.

Above ``upper`` the size grows multiplicatively, below ``lower`` it shrinks additively, in
between it holds. A decision uses only groups planned at the current size (a change takes a
window of groups to show) and the median of the last ``samples`` of them, so one noisy group
does not move the size.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections import deque
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class AdaptiveGroupSize:
    """Configuration of the adaptive group size; pass as ``group_size=`` (``"auto"`` is this
    with its defaults).

    >>> policy = AdaptiveGroupSize(upper=0.2, max_size=64)
    >>> await engine.run_jobs(datasets, sum, group_size=policy)  # doctest: +SKIP
    """

    lower: float = 0.05
    upper: float = 0.10
    min_size: int = 1
    max_size: int = 128
    initial: int | None = None  # default: min_size
    factor: float = 2.0  # multiplicative increase
    step: int = 1  # additive decrease
    samples: int = 3  # groups at the current size a decision looks at (median)

    def __post_init__(self) -> None:
        if not 0.0 <= self.lower < self.upper <= 1.0:
            raise ValueError(
                f"adaptive group size bounds need 0 <= lower < upper <= 1, got "
                f"lower={self.lower}, upper={self.upper}"
            )
        if not 1 <= self.min_size <= self.max_size:
            raise ValueError(
                f"adaptive group size needs 1 <= min_size <= max_size, got "
                f"{self.min_size}..{self.max_size}"
            )
        if self.initial is not None and not self.min_size <= self.initial <= self.max_size:
            raise ValueError(
                f"initial group size {self.initial} is outside {self.min_size}..{self.max_size}"
            )
        if self.factor <= 1.0 or self.step < 1 or self.samples < 1:
            raise ValueError("adaptive group size needs factor > 1, step >= 1 and samples >= 1")

    @property
    def start(self) -> int:
        return self.initial if self.initial is not None else self.min_size


@dataclasses.dataclass(frozen=True, slots=True)
class GroupTiming:
    """What the run shell observed of one finished group (seconds on one monotonic clock)."""

    group: int
    size: int
    start: float  # max(launch, previous group's last result)
    first_done: float  # the group's first job completed
    last_done: float  # the group's last job completed
    coordination_s: float  # driver time spent launching it and handling its acks
    busy_s: float | None = None  # the busiest slot's time on it, without waiting for data


@dataclasses.dataclass(frozen=True, slots=True)
class GroupDecision:
    """One observed group and what the controller did about it."""

    group: int
    size: int
    wall_s: float
    active_s: float  # wall_s, or busy time + overhead when that is less
    coordination_s: float
    dispatch_s: float  # dispatch delay beyond one steady-state batch
    overhead: float  # (coordination_s + dispatch_s) / active_s, capped at 1
    action: str  # "grow", "shrink", "hold", "wait" (collecting samples) or "stale"
    next_size: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class GroupSizeController:
    """Chooses each group's size from the overhead of the groups before it.

    >>> c = GroupSizeController(AdaptiveGroupSize(samples=1))
    >>> c.next_size()
    1
    >>> c.observe(GroupTiming(0, 1, start=0.0, first_done=0.004, last_done=0.004,
    ...                       coordination_s=0.001)).action
    'grow'
    >>> c.next_size()
    2
    """

    def __init__(self, policy: AdaptiveGroupSize | None = None, history: int = 10_000) -> None:
        self.policy = policy or AdaptiveGroupSize()
        self._size = self.policy.start
        self._fractions: list[float] = []  # overhead of groups seen at the current size
        self.per_batch_s: float | None = None  # steady-state time per batch (EWMA)
        self.decisions: deque[GroupDecision] = deque(maxlen=history)
        self.sizes_used: dict[int, int] = {}  # size -> groups observed at it

    @property
    def size(self) -> int:
        return self._size

    def next_size(self) -> int:
        """The size of the next group to plan (the scheduler's hook)."""
        return self._size

    def observe(self, t: GroupTiming) -> GroupDecision:
        """Record a finished group; maybe change the size of the groups planned next."""
        wall = t.last_done - t.start
        if t.size >= 2 and t.last_done > t.first_done:
            spacing = (t.last_done - t.first_done) / (t.size - 1)
            prev = self.per_batch_s
            self.per_batch_s = spacing if prev is None else 0.7 * prev + 0.3 * spacing
        steady = self.per_batch_s if self.per_batch_s is not None else 0.0
        dispatch = max(0.0, (t.first_done - t.start) - steady)
        cost = t.coordination_s + dispatch
        active = wall if t.busy_s is None else min(wall, t.busy_s + cost)
        overhead = min(1.0, cost / active) if active > 0 else 0.0
        self.sizes_used[t.size] = self.sizes_used.get(t.size, 0) + 1
        action = "stale"
        if t.size == self._size:
            self._fractions.append(overhead)
            action = "wait"
            if len(self._fractions) >= self.policy.samples:
                action = self._decide(statistics.median(self._fractions[-self.policy.samples :]))
        decision = GroupDecision(
            t.group, t.size, wall, active, t.coordination_s, dispatch, overhead, action, self._size
        )
        self.decisions.append(decision)
        return decision

    def _decide(self, overhead: float) -> str:
        p = self.policy
        if overhead > p.upper and self._size < p.max_size:
            new = min(p.max_size, max(self._size + 1, int(self._size * p.factor)))
            action = "grow"
        elif overhead < p.lower and self._size > p.min_size:
            new = max(p.min_size, self._size - p.step)
            action = "shrink"
        else:
            return "hold"
        self._size = new
        self._fractions = []
        return action

    def summary(self) -> dict[str, Any]:
        """Sizes chosen and overhead seen, for statistics and reports."""
        recent = list(self.decisions)[-20:]
        return {
            "group_size": self._size,
            "policy": dataclasses.asdict(self.policy),
            "groups_per_size": dict(sorted(self.sizes_used.items())),
            "per_batch_ms": None if self.per_batch_s is None else self.per_batch_s * 1e3,
            "recent": [d.as_dict() for d in recent],
        }


GroupSize = int | str | AdaptiveGroupSize | GroupSizeController


def resolve_group_size(group_size: GroupSize) -> tuple[int, GroupSizeController | None]:
    """``group_size=`` of a run -> (largest size, controller or None for a fixed size).

    A ``GroupSizeController`` passed in is used as is, so it keeps learning across runs (a
    stream runs as a series of runs).
    """
    if isinstance(group_size, GroupSizeController):
        return group_size.policy.max_size, group_size
    if isinstance(group_size, AdaptiveGroupSize):
        return group_size.max_size, GroupSizeController(group_size)
    if group_size == "auto":
        controller = GroupSizeController()
        return controller.policy.max_size, controller
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(
            f"group_size must be a positive int, 'auto' or an AdaptiveGroupSize, got {group_size!r}"
        )
    return group_size, None
