"""Counters and recent samples the driver keeps for ``Engine.statistics()`` and monitoring.

Updated from the scheduler shell once per group or per finished job (never per task); read
only through ``snapshot()``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from adrizzle.driver.scheduler import JobOutcome

RECENT = 100


class DriverMetrics:
    def __init__(self) -> None:
        self.started_at = time.time()
        self.groups_launched = 0
        self.groups_acked = 0
        self.jobs_done = 0
        self.jobs_failed = 0
        self.failures = 0
        self.recoveries = 0
        self.group_sizes: deque[int] = deque(maxlen=RECENT)
        self.shuffle_blocks_pushed = 0
        self.shuffle_bytes_pushed = 0

    def group_launched(self, size: int) -> None:
        self.groups_launched += 1
        self.group_sizes.append(size)

    def group_acked(self) -> None:
        self.groups_acked += 1

    def shuffle_pushed(self, blocks: int, nbytes: int) -> None:
        self.shuffle_blocks_pushed += blocks
        self.shuffle_bytes_pushed += nbytes

    def jobs_completed(self, outcomes: Iterable[JobOutcome]) -> None:
        for o in outcomes:
            if o.error is None:
                self.jobs_done += 1
            else:
                self.jobs_failed += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "uptime_s": time.time() - self.started_at,
            "groups_launched": self.groups_launched,
            "groups_acked": self.groups_acked,
            "groups_in_flight": self.groups_launched - self.groups_acked,
            "jobs_completed": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "failures": self.failures,
            "recoveries": self.recoveries,
            "group_size": self.group_sizes[-1] if self.group_sizes else None,
            "recent_group_sizes": list(self.group_sizes),
            "shuffle_blocks_pushed": self.shuffle_blocks_pushed,
            "shuffle_bytes_pushed": self.shuffle_bytes_pushed,
        }
