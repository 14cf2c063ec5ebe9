"""Where a run's tasks go: slots, each worker's share of a group, and a group's plan (pure).

Partition ``p`` of every stage is pinned to ``slots[p % len(slots)]``; ``slots`` interleave
workers (w0/s0, w1/s0, w0/s1, ...) so that consecutive partitions spread across hosts. A slot
keeps the cached partitions and the stream state of the partitions pinned to it, so the same
placement is kept group after group until workers join, drain or are lost.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


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
    """One group as launched: jobs ``first_job .. last_job - 1`` on ``slots`` (fixed for the
    group's life), ``wave`` of the run's stage waves (0 unless BSP)."""

    group: int
    first_job: int
    last_job: int
    shares: list[WorkerShare]
    wave: int = 0
    slots: list[SlotRef] = dataclasses.field(default_factory=list)

    @property
    def jobs(self) -> range:
        return range(self.first_job, self.last_job)

    @property
    def workers(self) -> set[str]:
        return {share.worker for share in self.shares}


def place_partitions(
    partitions: int, slots: Sequence[SlotRef], stage_partitions: Sequence[int] = ()
) -> list[WorkerShare]:
    """Pin partition ``p`` of every stage to ``slots[p % len(slots)]``; group by worker.

    ``partitions`` is the result stage's count; ``stage_partitions`` the other stages' counts
    (a slot with a task in any stage takes part in the group).
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
