"""A worker's one acknowledgement of a group, assembled from its slots' parts (pure).

Every slot of a worker that runs a group ends its share with a ``slot_done`` (one of ``of``,
the slots running the group there); ``AckTally`` sums the parts of each group and hands back the
worker's ``group_done`` once all of them are in. Cancelled groups are forgotten, and a late part
of one is dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adrizzle.wire.messages import GroupDone, SlotDone

if TYPE_CHECKING:
    from collections.abc import Iterable


class AckTally:
    """Parts of acknowledgements per group, until each group's last part arrives."""

    __slots__ = ("_gone", "_open")

    def __init__(self) -> None:
        # group -> [parts still missing, tasks, failed, busy_us, pushed_blocks, pushed_bytes]
        self._open: dict[int, list[int]] = {}
        self._gone: set[int] = set()  # forgotten groups: a late part of one is dropped

    def __len__(self) -> int:
        return len(self._open)

    def add(self, part: SlotDone) -> GroupDone | None:
        """One of ``part.of`` parts of ``part.group``'s acknowledgement; the whole
        acknowledgement when this was the last part, else None (also for a forgotten group's
        late part)."""
        if part.group in self._gone:
            return None
        sums = self._open.get(part.group)
        if sums is None:
            sums = self._open[part.group] = [part.of, 0, 0, 0, 0, 0]
        sums[0] -= 1
        sums[1] += part.tasks
        sums[2] += part.failed
        sums[3] += part.busy_us
        sums[4] += part.pushed_blocks
        sums[5] += part.pushed_bytes
        if sums[0] > 0:
            return None
        del self._open[part.group]
        return GroupDone(part.group, *sums[1:])

    def forget(self, groups: Iterable[int]) -> None:
        """Drop the parts of these groups (cancelled: their other parts may never come)."""
        for group in groups:
            self._open.pop(group, None)
            self._gone.add(group)
        if len(self._gone) > 10_000:  # group ids only grow: old ones can no longer arrive
            self._gone = set(sorted(self._gone)[-1000:])
