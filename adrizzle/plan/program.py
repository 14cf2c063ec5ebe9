"""Job programs: what slots execute, shipped pickled once per group.

A ``JobProgram`` is a job's stages in topological order. Each ``StageProgram`` reads its
partition from a source (``ShippedSource``/``FunctionSource``) or from the shuffles feeding it
(``ShuffleRead``), applies its narrow steps (some cached), and either writes a shuffle
(``ShuffleWrite``: map side, partitioned by ``portable_hash``, combined per key for
``reduce_by_key``) or, in the last stage, hands the iterator to the job's action.

Slots keep a block store keyed by ``(node_id, partition)`` holding shipped source partitions and
cached results, and a state store keyed by ``(state_id, partition)`` holding the per-partition
state of stateful steps (``StateUpdate``), which lives in the slot across groups and runs and is
never shipped. Everything here is plain functions over plain data: no I/O.
"""

from __future__ import annotations

import itertools
import operator
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from adrizzle.errors import StateOrderError
from adrizzle.plan.offsets import OffsetSource, SourceIO, WorkerSink
from adrizzle.plan.operators import READERS
from adrizzle.plan.partitioning import portable_hash
from adrizzle.plan.state import StateStore, StateUpdate

BlockStore = dict[tuple[int, int], list[Any]]
Action = Callable[[Iterator[Any]], Any]

MAP, FILTER, FLAT_MAP, MAP_PARTITIONS = "map", "filter", "flat_map", "map_partitions"
# ``func(partition, iterator)``: the partition's index comes with its items (Spark's
# ``mapPartitionsWithIndex``; repartition and sort tag their items with it).
WITH_INDEX = "map_partitions_with_index"
NARROW_KINDS = (MAP, FILTER, FLAT_MAP, MAP_PARTITIONS, WITH_INDEX)
REDUCE, GROUP, JOIN = "reduce_by_key", "group_by_key", "join"
STATEFUL = "stateful"


@dataclass(frozen=True, slots=True)
class ShippedSource:
    """Partitions held by the driver and shipped once to the slot that owns each partition."""

    node_id: int

    def ready_at(self, job: int) -> float | None:
        return None

    def read(
        self, partition: int, store: BlockStore, job: int = 0, io: SourceIO | None = None
    ) -> Iterator[Any]:
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

    def ready_at(self, job: int) -> float | None:
        return None

    def read(
        self, partition: int, store: BlockStore, job: int = 0, io: SourceIO | None = None
    ) -> Iterator[Any]:
        return iter(self.func(partition))


@dataclass(frozen=True, slots=True)
class BatchSource:
    """A stream's source: partition ``p`` of job ``j`` is ``func(first_batch + j, p)``, read on
    the slot. One program serves every micro-batch of a run (the slot supplies the job index),
    so a group pickles and unpickles it once, whatever its size.

    Paced (``interval`` seconds from ``start``, epoch seconds): batch ``b``'s data exists from
    ``start + (b + 1) * interval``; until then the slot runs other ready tasks.
    """

    node_id: int
    func: Callable[[int, int], Iterable[Any]]
    first_batch: int
    interval: float | None = None
    start: float | None = None

    def ready_at(self, job: int) -> float | None:
        if self.interval is None or self.start is None:
            return None
        return self.start + (self.first_batch + job + 1) * self.interval

    def read(
        self, partition: int, store: BlockStore, job: int = 0, io: SourceIO | None = None
    ) -> Iterator[Any]:
        due = self.ready_at(job)
        if due is not None:  # the slot waits for it; this only guards a forced early run
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
        return iter(self.func(self.first_batch + job, partition))


Source = ShippedSource | FunctionSource | BatchSource | OffsetSource


@dataclass(frozen=True, slots=True)
class ShuffleRead:
    """Reduce side of one shuffle (two for a join): ``shuffles`` is ``((stage, maps), ...)``,
    the producing stage's index in the job and its number of map partitions. The kinds beyond
    reduce, group and join (outer joins, cogroup, sort, repartition) read with
    ``adrizzle.plan.operators``."""

    kind: str
    shuffles: tuple[tuple[int, int], ...]
    func: Any = None

    def ready_at(self, job: int) -> float | None:
        """Shuffle inputs are ready when they arrive (a union with a paced source says more)."""
        return None

    def open(
        self,
        partition: int,
        store: BlockStore,
        inputs: Any,
        job: int = 0,
        io: SourceIO | None = None,
    ) -> Iterator[Any]:
        """The stage's input for ``partition`` given what ``read`` returned (a union reads its
        sources here; see ``adrizzle.plan.union``)."""
        return iter(inputs)

    def read(self, blocks: list[list[Any]]) -> Iterator[Any]:
        """``blocks[i]`` holds the map blocks of ``shuffles[i]``, in map-partition order."""
        if self.kind == REDUCE:
            func = self.func
            assert func is not None
            merged: dict[Any, Any] = {}
            for block in blocks[0]:
                for k, v in block.items():
                    merged[k] = func(merged[k], v) if k in merged else v
            return iter(merged.items())
        if self.kind == GROUP:
            groups: dict[Any, list[Any]] = {}
            for block in blocks[0]:
                for k, v in block:
                    groups.setdefault(k, []).append(v)
            return iter(groups.items())
        if self.kind != JOIN:
            return READERS[self.kind](self.func, blocks)
        left: dict[Any, list[Any]] = {}
        for block in blocks[0]:
            for k, v in block:
                left.setdefault(k, []).append(v)
        right: dict[Any, list[Any]] = {}
        for block in blocks[1]:
            for k, v in block:
                if k in left:
                    right.setdefault(k, []).append(v)
        return ((k, (lv, rv)) for k, rvs in right.items() for lv in left[k] for rv in rvs)


@dataclass(frozen=True, slots=True)
class ShuffleWrite:
    """Map side: split a partition's ``(key, value)`` pairs into one block per reducer.

    ``combine`` (``reduce_by_key``, ``combine_by_key``) combines values per key before the
    shuffle, starting each key from ``create(value)`` when given. ``direct``: the items are
    ``(reducer, value)`` pairs that name their reducer (repartition, sort) and blocks hold the
    values. A shuffle that feeds one side of a union writes ``partitions`` blocks of which only
    ``offset .. offset + span - 1`` can hold data (that side's reducers are the union's
    partitions there).
    """

    partitions: int
    combine: Callable[[Any, Any], Any] | None = None
    create: Callable[[Any], Any] | None = None
    direct: bool = False
    offset: int = 0
    span: int = 0  # 0: all of ``partitions``

    def split(self, it: Iterator[Any]) -> list[Any]:
        # Per element only a dict operation (and the combine call); the portable hash runs
        # once per distinct key, which is what makes a Python map task cheap.
        n = self.partitions
        span = self.span or n
        off = self.offset
        combine = self.combine
        try:
            if self.direct:
                values: list[list[Any]] = [[] for _ in range(n)]
                for r, v in it:
                    values[off + r].append(v)
                return values
            if combine is not None:
                acc: dict[Any, Any] = {}
                create = self.create
                if create is None and combine is operator.add:
                    # The commonest combiner, without a call per element: `a + b` is exactly
                    # what operator.add does (~7 % of a map task of (x % 16, 1) pairs, timeit).
                    for k, v in it:
                        acc[k] = acc[k] + v if k in acc else v
                elif create is None:
                    for k, v in it:
                        acc[k] = combine(acc[k], v) if k in acc else v
                else:
                    for k, v in it:
                        acc[k] = combine(acc[k], v) if k in acc else create(v)
                combined: list[dict[Any, Any]] = [{} for _ in range(n)]
                for k, v in acc.items():
                    combined[off + portable_hash(k) % span][k] = v
                return combined
            pairs: list[list[tuple[Any, Any]]] = [[] for _ in range(n)]
            target: dict[Any, list[tuple[Any, Any]]] = {}
            for kv in it:
                k = kv[0]
                bucket = target.get(k)
                if bucket is None:
                    bucket = target[k] = pairs[off + portable_hash(k) % span]
                bucket.append((k, kv[1]))
            return pairs
        except (TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, IndexError) or "unpack" in str(exc) or "subscriptable" in str(exc):
                raise TypeError(f"a shuffle needs (key, value) pairs: {exc}") from exc
            raise


@dataclass(frozen=True, slots=True)
class Step:
    node_id: int
    kind: str
    func: Callable[..., Any]
    cache: bool


def _apply(kind: str, func: Callable[..., Any], it: Iterator[Any], partition: int) -> Iterator[Any]:
    if kind == MAP:
        return map(func, it)
    if kind == FILTER:
        return filter(func, it)
    if kind == FLAT_MAP:
        return itertools.chain.from_iterable(map(func, it))
    if kind == WITH_INDEX:
        return iter(func(partition, it))
    return iter(func(it))


def run_steps(
    steps: tuple[Step, ...],
    partition: int,
    store: BlockStore,
    read: Callable[[], Iterator[Any]],
    states: StateStore | None = None,
    job: int = 0,
) -> Iterator[Any]:
    """``steps`` over ``partition``: from the last cached step present in ``store``, else from
    ``read()``; cached steps keep their output in ``store``, stateful ones use ``states``."""
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
        it = read()
    for step in steps[start:]:
        if step.kind == STATEFUL:
            if states is None:
                raise StateOrderError("a stateful step needs the slot's state store")
            it = step.func(states, partition, it, job)
            continue
        it = _apply(step.kind, step.func, it, partition)
        if step.cache:
            block = list(it)
            store[(step.node_id, partition)] = block
            it = iter(block)
    return it


@dataclass(frozen=True, slots=True)
class StageProgram:
    partitions: int
    input: Source | ShuffleRead
    steps: tuple[Step, ...]
    output: ShuffleWrite | None  # None: the job's result stage

    def compute(
        self,
        partition: int,
        store: BlockStore,
        inputs: Iterator[Any] | None,
        states: StateStore | None = None,
        job: int = 0,
        io: SourceIO | None = None,
    ) -> Any:
        """The stage's output iterator for ``partition`` of job ``job`` (``inputs``: the
        shuffle read; ``states``: the slot's state store, for stateful steps; ``io``: the slot's
        connector readers, for connector sources)."""
        read = self.input
        if not self.steps:  # the stage's output is its input (the common single-stage case)
            if isinstance(read, ShuffleRead):
                return read.open(partition, store, inputs, job, io)
            return read.read(partition, store, job, io)

        def first() -> Iterator[Any]:
            if isinstance(read, ShuffleRead):
                return read.open(partition, store, inputs, job, io)
            return read.read(partition, store, job, io)

        return run_steps(self.steps, partition, store, first, states, job)

    def opener(
        self,
        partition: int,
        store: BlockStore,
        states: StateStore | None = None,
        io: SourceIO | None = None,
    ) -> Callable[[int], Iterator[Any]]:
        """``compute`` for ``partition`` of a stage with no shuffle read, as a function of the
        job, resolved once for a group of jobs: a shipped block read as is is looked up once
        (the store does not change while a slot runs a group)."""
        read = self.input
        if not self.steps and isinstance(read, ShippedSource):
            block = store.get((read.node_id, partition))
            if block is not None:
                return lambda job: iter(block)
        return lambda job: self.compute(partition, store, None, states, job, io)


@dataclass(frozen=True, slots=True)
class JobProgram:
    """A job's stages in topological order, the action its result stage runs, and, for a
    stream with a sink on the workers, where its output goes instead of to the driver."""

    stages: tuple[StageProgram, ...]
    action: Action
    sink: WorkerSink | None = None

    def shape(self) -> tuple[Any, ...]:
        """The stage structure: jobs of one run must share it."""
        return tuple(
            (
                s.partitions,
                type(s.input).__name__,
                s.input.kind if isinstance(s.input, ShuffleRead) else "",
                s.input.shuffles if isinstance(s.input, ShuffleRead) else (),
                tuple(step.kind for step in s.steps),
                s.output.partitions if s.output else None,
            )
            for s in self.stages
        )


def stage_waves(stages: tuple[StageProgram, ...]) -> list[list[int]]:
    """Stages grouped by depth: every stage's inputs are in earlier waves (the BSP barriers)."""
    depth: list[int] = []
    for s in stages:
        if isinstance(s.input, ShuffleRead):
            depth.append(1 + max((depth[i] for i, _maps in s.input.shuffles), default=-1))
        else:
            depth.append(0)
    return [[i for i, d in enumerate(depth) if d == w] for w in range(max(depth) + 1)]


def state_steps(program: JobProgram) -> dict[int, tuple[int, StateUpdate]]:
    """The program's stateful steps: ``state_id -> (partitions of its stage, the step)``."""
    found: dict[int, tuple[int, StateUpdate]] = {}
    for stage in program.stages:
        for step in stage.steps:
            if step.kind == STATEFUL and isinstance(step.func, StateUpdate):
                found[step.func.state_id] = (stage.partitions, step.func)
    return found
