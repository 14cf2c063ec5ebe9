"""``union``: a stage whose partitions are those of several datasets, in order (narrow).

A union of datasets with ``n_0, n_1, ...`` partitions has ``n_0 + n_1 + ...``; its partition
``p`` is partition ``q = p - offset_i`` of the side ``i`` that covers it, computed on the slot
that owns ``p`` (no shuffle). A side is the side dataset's own stage: its input (a source, read
as partition ``q``; or a shuffle) and its narrow steps (cached ones keyed by ``q``, as
everywhere). A side whose stage starts with a shuffle has its reducers placed at the union's
partitions: its map tasks write ``n_0 + n_1 + ...`` blocks of which only the side's range can
hold data (``ShuffleWrite.offset``/``span``), and every union partition waits for the (mostly
empty) blocks of every such shuffle, as any reducer does.

Pure functions over plain data: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from adrizzle.plan.program import BlockStore, ShippedSource, ShuffleRead, Source, Step, run_steps

if TYPE_CHECKING:
    from collections.abc import Iterator

    from adrizzle.plan.offsets import SourceIO


@dataclass(frozen=True, slots=True)
class UnionSide:
    """One dataset of a union: its partitions are the union's ``offset .. offset +
    partitions - 1``; a shuffle input reads the union's shuffles from ``first_shuffle``."""

    offset: int
    partitions: int
    input: Source | ShuffleRead
    steps: tuple[Step, ...]
    first_shuffle: int = 0


@dataclass(frozen=True, slots=True)
class UnionRead(ShuffleRead):
    """A union stage's input: its ``shuffles`` are those of the sides that start with one."""

    sides: tuple[UnionSide, ...] = ()

    def side_of(self, partition: int) -> UnionSide:
        for side in self.sides:
            if side.offset <= partition < side.offset + side.partitions:
                return side
        raise IndexError(f"partition {partition} is in no side of the union")

    def ready_at(self, job: int) -> float | None:
        """A side's paced stream source is ready when its batch is due."""
        due = [
            at
            for side in self.sides
            if not isinstance(side.input, ShuffleRead)
            and (at := side.input.ready_at(job)) is not None
        ]
        return max(due) if due else None

    def read(self, blocks: list[list[Any]]) -> Iterator[Any]:
        """Holds the shuffles' blocks for ``open``, which knows the partition."""
        return iter((blocks,))

    def open(
        self,
        partition: int,
        store: BlockStore,
        inputs: Any,
        job: int = 0,
        io: SourceIO | None = None,
    ) -> Iterator[Any]:
        side = self.side_of(partition)
        q = partition - side.offset
        read = side.input
        if isinstance(read, ShuffleRead):
            held: list[list[Any]] = next(iter(inputs), [])
            mine = held[side.first_shuffle : side.first_shuffle + len(read.shuffles)]

            def first() -> Iterator[Any]:
                return read.read(mine)

        else:
            source = read

            def first() -> Iterator[Any]:
                return source.read(q, store, job, io)

        return run_steps(side.steps, q, store, first, None, job)

    def shipped(self, partitions: list[int]) -> list[tuple[int, list[int]]]:
        """The driver-held source blocks these union partitions read: ``(node, [q, ...])``."""
        out: dict[int, list[int]] = {}
        for p in partitions:
            side = self.side_of(p)
            if isinstance(side.input, ShippedSource):
                out.setdefault(side.input.node_id, []).append(p - side.offset)
        return list(out.items())
