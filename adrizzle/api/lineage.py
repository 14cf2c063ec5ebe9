"""Planning a dataset's lineage into a ``JobProgram``: stages cut at shuffles, unions flattened.

A stage is a chain of narrow nodes from an input node: a source, a wide node (its parents'
stages write the shuffle it reads), or a union (``adrizzle.plan.union``: its sides, each a
source or a shuffle, placed at the union's partitions). The stages come out in topological
order, the last one running the job's action.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from adrizzle.plan.operators import RANGE_PARTITION, REPARTITION, SORT, UNION
from adrizzle.plan.program import (
    MAP_PARTITIONS,
    REDUCE,
    STATEFUL,
    Action,
    FunctionSource,
    JobProgram,
    ShuffleRead,
    ShuffleWrite,
    Source,
    StageProgram,
    Step,
)
from adrizzle.plan.union import UnionRead, UnionSide

if TYPE_CHECKING:
    from adrizzle.api.dataset import Dataset
    from adrizzle.plan.offsets import WorkerSink

COMBINE = "combine_by_key"  # a REDUCE read whose map side starts each key with ``create``
DIRECT_KINDS = (REPARTITION, RANGE_PARTITION, SORT)  # map sides tag items with their reducer


def plan_job(ds: Dataset[Any], action: Action, sink: WorkerSink | None = None) -> JobProgram:
    """``ds``'s job as stages in topological order, the last one running ``action``."""
    stages: list[StageProgram] = []
    plan_into(ds, stages, None)
    return JobProgram(tuple(stages), action, sink)


def identity(it: Any) -> Any:
    return it


def _steps(nodes: list[Dataset[Any]], cache: bool = True) -> tuple[Step, ...]:
    return tuple(Step(n.node_id, n.kind, n.func, cache and n.is_cached) for n in nodes)


def _cache_step(head: Dataset[Any]) -> tuple[Step, ...]:
    """A cached input node keeps its partitions through an identity step (a shipped source
    is pinned to its slot anyway; stream sources are read once per batch)."""
    if not head.is_cached or (head.source is not None and type(head.source) is not FunctionSource):
        return ()
    return (Step(head.node_id, MAP_PARTITIONS, identity, True),)


def plan_into(ds: Dataset[Any], stages: list[StageProgram], output: ShuffleWrite | None) -> int:
    """Append ``ds``'s stage (after the stages it reads) and return its index."""
    head, nodes = ds.chain()
    steps = _steps(nodes)
    stage_input: Source | ShuffleRead
    if head.source is not None:
        stage_input = head.source
    elif head.kind == UNION:
        stage_input = _union(head, stages)
    else:
        stage_input = _shuffle(head, stages, head.partitions, 0)
    stages.append(StageProgram(ds.partitions, stage_input, _cache_step(head) + steps, output))
    return len(stages) - 1


def _write(head: Dataset[Any], partitions: int, offset: int) -> ShuffleWrite:
    span = head.partitions
    if head.kind == REDUCE:
        return ShuffleWrite(partitions, head.func, offset=offset, span=span)
    if head.kind == COMBINE:
        create, merge_value, _merge = head.func
        return ShuffleWrite(partitions, merge_value, create, offset=offset, span=span)
    return ShuffleWrite(partitions, direct=head.kind in DIRECT_KINDS, offset=offset, span=span)


def _shuffle(
    head: Dataset[Any], stages: list[StageProgram], partitions: int, offset: int
) -> ShuffleRead:
    """The read of wide node ``head``; its parents' stages write ``partitions`` blocks, the
    head's reducers being ``offset ..`` (a side of a union) or all of them."""
    write = _write(head, partitions, offset)
    shuffles = tuple(
        (plan_into(parent, stages, write), parent.partitions) for parent in head.wide_parents
    )
    if head.kind == COMBINE:
        return ShuffleRead(REDUCE, shuffles, head.func[2])
    return ShuffleRead(head.kind, shuffles, head.func)


def _union(head: Dataset[Any], stages: list[StageProgram]) -> UnionRead:
    sides: list[UnionSide] = []
    shuffles: list[tuple[int, int]] = []
    _add_sides(head, 0, (), stages, head.partitions, sides, shuffles)
    return UnionRead(UNION, tuple(shuffles), None, tuple(sides))


def _add_sides(
    union: Dataset[Any],
    offset: int,
    after: tuple[Step, ...],
    stages: list[StageProgram],
    total: int,
    sides: list[UnionSide],
    shuffles: list[tuple[int, int]],
) -> int:
    """Add ``union``'s sides from ``offset`` (``after``: steps that follow the union, applied
    per side); a side that is itself a union is flattened (its cached steps recompute: they
    would be keyed by the inner union's partition, not the side's)."""
    for side in union.wide_parents:
        head, nodes = side.chain()
        if any(n.kind == STATEFUL for n in nodes) or any(s.kind == STATEFUL for s in after):
            raise ValueError("union: a side cannot hold stream state (union before it)")
        if head.kind == UNION and head.source is None:
            _add_sides(head, offset, _steps(nodes, cache=False) + after, stages, total, sides,
                       shuffles)  # fmt: skip
            offset += side.partitions
            continue
        steps = _cache_step(head) + _steps(nodes) + after
        if head.source is not None:
            sides.append(UnionSide(offset, side.partitions, head.source, steps))
        else:
            read = _shuffle(head, stages, total, offset)
            sides.append(UnionSide(offset, side.partitions, read, steps, len(shuffles)))
            shuffles.extend(read.shuffles)
        offset += side.partitions
    return offset
