"""Stage programs: what a slot executes for one task, shipped pickled once per group.

A ``StageProgram`` is a narrow chain (source, then map/filter/flat_map/map_partitions steps, some
marked cached) ending in the job's action. Slots keep a block store keyed by
``(node_id, partition)`` holding shipped source partitions and cached results; running a task
starts from the deepest cached block present and falls back to the source.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

BlockStore = dict[tuple[int, int], list[Any]]
Action = Callable[[Iterator[Any]], Any]

MAP, FILTER, FLAT_MAP, MAP_PARTITIONS = "map", "filter", "flat_map", "map_partitions"
NARROW_KINDS = (MAP, FILTER, FLAT_MAP, MAP_PARTITIONS)


@dataclass(frozen=True, slots=True)
class ShippedSource:
    """Partitions held by the driver and shipped once to the slot that owns each partition."""

    node_id: int

    def read(self, partition: int, store: BlockStore) -> Iterator[Any]:
        try:
            return iter(store[(self.node_id, partition)])
        except KeyError:
            raise LookupError(
                f"source block {self.node_id}/{partition} is not on this slot "
                "(it was released, or placed elsewhere)"
            ) from None


@dataclass(frozen=True, slots=True)
class FunctionSource:
    """Partitions produced on the slot by ``func(partition)`` (nothing is shipped)."""

    node_id: int
    func: Callable[[int], Iterable[Any]]

    def read(self, partition: int, store: BlockStore) -> Iterator[Any]:
        return iter(self.func(partition))


Source = ShippedSource | FunctionSource


@dataclass(frozen=True, slots=True)
class Step:
    node_id: int
    kind: str
    func: Callable[..., Any]
    cache: bool


def _apply(kind: str, func: Callable[..., Any], it: Iterator[Any]) -> Iterator[Any]:
    if kind == MAP:
        return map(func, it)
    if kind == FILTER:
        return filter(func, it)
    if kind == FLAT_MAP:
        return itertools.chain.from_iterable(map(func, it))
    return iter(func(it))


@dataclass(frozen=True, slots=True)
class StageProgram:
    source: Source
    steps: tuple[Step, ...]
    action: Action

    def run(self, partition: int, store: BlockStore) -> Any:
        steps = self.steps
        it: Iterator[Any] | None = None
        start = 0
        for i in range(len(steps) - 1, -1, -1):
            step = steps[i]
            if step.cache:
                block = store.get((step.node_id, partition))
                if block is not None:
                    it, start = iter(block), i + 1
                    break
        if it is None:
            it = self.source.read(partition, store)
        for step in steps[start:]:
            it = _apply(step.kind, step.func, it)
            if step.cache:
                block = list(it)
                store[(step.node_id, partition)] = block
                it = iter(block)
        return self.action(it)


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """Stands in a result list for a task whose user code raised."""

    exc_type: str
    message: str
    traceback: str

    @classmethod
    def capture(cls, exc: BaseException) -> TaskFailure:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__qualname__, str(exc), tb)


def run_tasks(
    programs: list[StageProgram], jobs: range, parts: list[int], store: BlockStore
) -> Iterator[tuple[int, list[Any], int]]:
    """Run every task of a slot's share of a group, yielding ``(job, values, failed)`` per job."""
    for job, program in zip(jobs, programs, strict=True):
        values: list[Any] = []
        failed = 0
        for p in parts:
            try:
                values.append(program.run(p, store))
            except Exception as exc:
                values.append(TaskFailure.capture(exc))
                failed += 1
        yield job, values, failed
