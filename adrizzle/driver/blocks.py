"""Source partitions held by the driver, which slot already has which, and releases.

``parallelize`` data lives here and is shipped to a slot the first time a task placed on that
slot needs it; afterwards the slot keeps it (pinned), so steady-state launches carry no data.
When a source or cached dataset is garbage collected on the driver, its node id is queued for
release and piggybacked on the next launch to every worker, which drops the blocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cloudpickle

if TYPE_CHECKING:
    from collections.abc import Iterable


class BlockRegistry:
    def __init__(self) -> None:
        self._sources: dict[int, list[list[Any]]] = {}
        self._on_slot: dict[int, set[tuple[str, int, int]]] = {}
        # Filled by weakref finalizers, which may run at any bytecode boundary: append only.
        self._release_queue: list[int] = []
        self._pending_release: dict[str, list[int]] = {}

    def add_source(self, node_id: int, partitions: list[list[Any]]) -> None:
        self._sources[node_id] = partitions

    def source_partition(self, node_id: int, partition: int) -> list[Any]:
        return self._sources[node_id][partition]

    def release(self, node_id: int) -> None:
        """Finalizer callback: forget ``node_id`` (processed at the next launch)."""
        self._release_queue.append(node_id)

    def add_worker(self, worker: str) -> None:
        self._pending_release.setdefault(worker, [])

    def forget_worker(self, worker: str) -> None:
        self._pending_release.pop(worker, None)
        for holders in self._on_slot.values():
            for key in [k for k in holders if k[0] == worker]:
                holders.discard(key)

    def forget_slot(self, worker: str, slot: int) -> None:
        """Ship every source block to this slot again when next needed."""
        for holders in self._on_slot.values():
            for key in [k for k in holders if k[:2] == (worker, slot)]:
                holders.discard(key)

    def _process_releases(self) -> None:
        while self._release_queue:
            node_id = self._release_queue.pop()
            self._sources.pop(node_id, None)
            self._on_slot.pop(node_id, None)
            for pending in self._pending_release.values():
                pending.append(node_id)

    def take_released(self, worker: str) -> list[int]:
        """Node ids ``worker`` should drop, sent with its next launch."""
        self._process_releases()
        pending = self._pending_release.get(worker)
        if not pending:
            return []
        out = list(pending)
        pending.clear()
        return out

    def missing_blocks(
        self, worker: str, slot: int, sources: Iterable[tuple[int, list[int]]]
    ) -> bytes:
        """Pickled ``{(node, partition): data}`` of the ``(node, partitions)`` the slot lacks
        (they are marked shipped), or b"" when it has them all."""
        need: dict[tuple[int, int], list[Any]] = {}
        for node_id, parts in sources:
            data = self._sources.get(node_id)
            if data is None:
                continue
            holders = self._on_slot.setdefault(node_id, set())
            for p in parts:
                key = (worker, slot, p)
                if key not in holders:
                    holders.add(key)
                    need[(node_id, p)] = data[p]
        return cloudpickle.dumps(need) if need else b""

    def statistics(self) -> dict[str, int]:
        return {
            "sources": len(self._sources),
            "source_partitions_shipped": sum(len(h) for h in self._on_slot.values()),
        }
