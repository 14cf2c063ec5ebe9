"""The RDD operators planned and executed in-process (no engine), against plain Python.

``run_locally`` executes a ``JobProgram`` the way the slots do, stage by stage: map tasks split
their output by reducer (``ShuffleWrite.split``), reduce tasks read every map partition's block
(``ShuffleRead.read``), union stages read their sides by partition. Fast, so hypothesis can try
many shapes (empty partitions, more reducers than keys, unions of shuffles, nested unions).
"""

from __future__ import annotations

import collections
import itertools
import operator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrizzle.api.dataset import Dataset, parallelize
from adrizzle.plan.operators import range_bounds, sample_keys, tag_round_robin
from adrizzle.plan.program import JobProgram, ShuffleRead
from adrizzle.plan.shared import Carrying, absorb, attach_updates, begin_task, take_updates


class FakeSession:
    """What planning needs of a driver session: node ids and the sources' data."""

    def __init__(self) -> None:
        self.ids = itertools.count()
        self.sources: dict[int, list[list[Any]]] = {}

    def new_node_id(self) -> int:
        return next(self.ids)

    def add_source(self, node_id: int, partitions: list[list[Any]]) -> None:
        self.sources[node_id] = partitions

    def release_with(self, owner: object, node_id: int) -> None:
        pass


def run_locally(session: FakeSession, program: JobProgram) -> list[Any]:
    store: dict[tuple[int, int], list[Any]] = {
        (node, p): data for node, parts in session.sources.items() for p, data in enumerate(parts)
    }
    outputs: dict[int, list[list[Any]]] = {}
    results: list[Any] = []
    for index, stage in enumerate(program.stages):
        per_partition = []
        for p in range(stage.partitions):
            inputs = None
            if isinstance(stage.input, ShuffleRead):
                blocks = [
                    [absorb(outputs[s][m][p]) for m in range(maps)]
                    for s, maps in stage.input.shuffles
                ]
                inputs = stage.input.read(blocks)
            it = stage.compute(p, store, inputs, {}, 0, None)
            if stage.output is not None:
                per_partition.append(stage.output.split(it))
            else:
                results.append(program.action(it))
        outputs[index] = per_partition
    return results


def collect(session: FakeSession, ds: Dataset[Any]) -> list[Any]:
    return [x for part in run_locally(session, ds.plan(list)) for x in part]


KEYS = st.one_of(st.integers(-4, 6), st.sampled_from(["a", "b", "c", ""]))
PAIRS = st.lists(st.tuples(st.integers(-3, 5), st.integers(-9, 9)), max_size=50)
SETTINGS = settings(max_examples=150, deadline=None)


def by_repr(items: Any) -> list[Any]:
    return sorted(items, key=repr)


def lists_by_key(pairs: list[tuple[Any, Any]]) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = collections.defaultdict(list)
    for k, v in pairs:
        out[k].append(v)
    return out


@SETTINGS
@given(
    left=PAIRS, right=PAIRS, maps=st.integers(1, 4), reducers=st.integers(1, 5)
)  # fmt: skip
def test_outer_joins_and_cogroup_equal_nested_loops(
    left: list[tuple[int, int]], right: list[tuple[int, int]], maps: int, reducers: int
) -> None:
    s = FakeSession()
    a, b = parallelize(s, left, maps), parallelize(s, right, 3)
    lk, rk = lists_by_key(left), lists_by_key(right)
    inner = [(k, (v, w)) for k, v in left for k2, w in right if k == k2]
    left_only = [(k, (v, None)) for k, v in left if k not in rk]
    right_only = [(k, (None, w)) for k, w in right if k not in lk]
    assert by_repr(collect(s, a.join(b, reducers))) == by_repr(inner)
    assert by_repr(collect(s, a.left_outer_join(b, reducers))) == by_repr(inner + left_only)
    assert by_repr(collect(s, a.right_outer_join(b, reducers))) == by_repr(inner + right_only)
    assert by_repr(collect(s, a.full_outer_join(b, reducers))) == by_repr(
        inner + left_only + right_only
    )
    grouped = collect(s, a.cogroup(b, reducers))
    assert len({k for k, _ in grouped}) == len(grouped)
    assert by_repr((k, (sorted(x), sorted(y))) for k, (x, y) in grouped) == by_repr(
        (k, (sorted(lk.get(k, [])), sorted(rk.get(k, [])))) for k in {*lk, *rk}
    )


@SETTINGS
@given(
    items=st.lists(KEYS, max_size=60), maps=st.integers(1, 5), reducers=st.integers(1, 6)
)  # fmt: skip
def test_distinct_and_repartition(items: list[Any], maps: int, reducers: int) -> None:
    s = FakeSession()
    ds = parallelize(s, items, maps)
    assert by_repr(collect(s, ds.distinct(reducers))) == by_repr(set(items))
    parts = run_locally(s, ds.repartition(reducers).plan(list))
    assert len(parts) == reducers
    assert by_repr(x for part in parts for x in part) == by_repr(items)
    # Balanced: each map partition deals its items round robin, so sizes differ by <= maps.
    assert max(map(len, parts)) - min(map(len, parts)) <= maps


@SETTINGS
@given(
    pairs=st.lists(st.tuples(st.integers(-20, 20), st.integers()), max_size=80),
    maps=st.integers(1, 5),
    reducers=st.integers(1, 6),
    ascending=st.booleans(),
)
def test_sort_by_key_concatenates_to_a_stable_sort(
    pairs: list[tuple[int, int]], maps: int, reducers: int, ascending: bool
) -> None:
    s = FakeSession()
    ds = parallelize(s, pairs, maps).sort_by_key(ascending, reducers)
    parts = run_locally(s, ds.plan(list))
    assert len(parts) == reducers
    flat = [x for part in parts for x in part]
    assert flat == sorted(pairs, key=operator.itemgetter(0), reverse=not ascending)
    assert collect(s, parallelize(s, pairs, maps).sort_by(lambda kv: -kv[1])) == sorted(
        pairs, key=lambda kv: -kv[1]
    )


def test_sort_ranges_are_balanced_on_uniform_keys() -> None:
    s = FakeSession()
    keys = [(i * 7919) % 10007 for i in range(10007)]
    parts = run_locally(
        s,
        parallelize(s, [(k, None) for k in keys], 8)
        .sort_by_key(True, 5)
        .plan(lambda it: len(list(it))),
    )
    assert sum(parts) == 10007
    assert max(parts) < 1.3 * 10007 / 5, parts


def test_range_bounds_weigh_each_sample_by_its_partition_size() -> None:
    # Partition 0 has 1000 items around 0, partition 1 has 10 around 100: most bounds near 0.
    bounds = range_bounds([(1000, list(range(0, 50))), (10, list(range(100, 110)))], 4)
    assert len(bounds) == 3
    assert all(b < 50 for b in bounds)
    assert range_bounds([(5, [1, 1, 1])], 3) == [1]  # equal keys: one bound, no duplicates
    assert range_bounds([], 3) == []


def test_sort_refuses_keys_that_do_not_compare() -> None:
    s = FakeSession()
    ds = parallelize(s, [(1, "a"), ("x", "b")], 1).sort_by_key(True, 2)
    with pytest.raises(TypeError, match="compare"):
        collect(s, ds)
    with pytest.raises(TypeError, match="pairs"):
        list(sample_keys(2, 1, 0, [1, 2]))


@SETTINGS
@given(pairs=PAIRS, maps=st.integers(1, 4), reducers=st.integers(1, 5))
def test_aggregate_and_combine_by_key(
    pairs: list[tuple[int, int]], maps: int, reducers: int
) -> None:
    s = FakeSession()
    ds = parallelize(s, pairs, maps)
    expected = {k: sorted(vs) for k, vs in lists_by_key(pairs).items()}

    def append(acc: list[int], v: int) -> list[int]:
        acc.append(v)  # mutates: only correct if every key got its own copy of the zero
        return acc

    zero: list[int] = []
    agg = collect(s, ds.aggregate_by_key(zero, append, operator.add, reducers))
    assert {k: sorted(v) for k, v in agg} == expected
    assert zero == []
    combined = collect(
        s, ds.combine_by_key(lambda v: [v], append, operator.add, reducers)
    )  # fmt: skip
    assert {k: sorted(v) for k, v in combined} == expected


@SETTINGS
@given(
    a=PAIRS,
    b=PAIRS,
    c=st.lists(st.integers(), max_size=10),
    na=st.integers(1, 3),
    nb=st.integers(1, 3),
    reducers=st.integers(1, 4),
)
def test_union_keeps_partitions_in_order_with_any_sides(
    a: list[tuple[int, int]],
    b: list[tuple[int, int]],
    c: list[int],
    na: int,
    nb: int,
    reducers: int,
) -> None:
    s = FakeSession()
    da, db = parallelize(s, a, na), parallelize(s, b, nb)
    plain = da.union(db)
    assert plain.partitions == na + nb
    assert run_locally(s, plain.plan(list)) == run_locally(s, da.plan(list)) + run_locally(
        s, db.plan(list)
    )
    # Shuffled sides, a generated side, nested unions and steps after the union.
    reduced = da.reduce_by_key(operator.add, reducers)
    generated = Dataset(s, partitions=2, source=parallelize(s, c, 2).source)
    nested = reduced.union(
        db.map(lambda kv: (kv[0], -kv[1])).union(generated.map(lambda x: (x, x)))
    )
    counted = nested.map_partitions(lambda it: [len(list(it))])
    parts = run_locally(s, counted.plan(list))
    sides = [reduced, db, generated]
    assert len(parts) == nested.partitions == sum(d.partitions for d in sides)
    expected = [[n] for d in sides for n in run_locally(s, d.plan(lambda it: len(list(it))))]
    assert parts == expected
    # A union as the input of a shuffle, and a sort of a union.
    again = nested.union(da).reduce_by_key(operator.add, 2)
    total = collections.Counter()
    for k, v in [*collect(s, reduced), *[(k, -v) for k, v in b], *[(x, x) for x in c], *a]:
        total[k] += v
    assert dict(collect(s, again)) == dict(total.items())
    assert collect(s, da.union(db).sort_by_key()) == sorted(a + b, key=operator.itemgetter(0))


def test_accumulator_updates_ride_on_block_zero_and_result_values() -> None:
    begin_task()
    take_updates()
    from adrizzle.plan.shared import _task_add

    _task_add(7, operator.add, 2)
    _task_add(7, operator.add, 3)
    blocks = attach_updates([[1], [2]])
    assert isinstance(blocks[0], Carrying)
    assert blocks[1] == [2]
    begin_task()
    assert absorb(blocks[0]) == [1]
    assert absorb(blocks[1]) == [2]
    assert take_updates() == [{7: 5}]
    assert take_updates() == []
    # Round robin starts at the map partition's index: small partitions spread out.
    assert list(tag_round_robin(3, 2, "abcd")) == [(2, "a"), (0, "b"), (1, "c"), (2, "d")]


def test_a_result_task_in_one_call_wraps_only_its_own_updates() -> None:
    from adrizzle.plan.shared import Accumulator, WithUpdates, run_task

    acc: Accumulator[int] = Accumulator(9, operator.add, 0)  # a slot's copy: updates travel
    acc.add(100)  # an earlier task's update, never taken
    assert run_task(sum, lambda job: iter(range(job)), 4) == 6  # begins afresh: no updates

    def counting(it: Any) -> int:
        acc.add(1)
        return sum(it)

    value = run_task(counting, lambda job: iter([job, job]), 5)
    assert isinstance(value, WithUpdates)
    assert (value.value, value.updates) == (10, [{9: 1}])


def test_an_opener_reads_a_shipped_block_once_per_group_else_computes_per_job() -> None:
    from adrizzle.plan.program import FunctionSource, ShippedSource, StageProgram

    store: dict[tuple[int, int], Any] = {(3, 1): [1, 2, 3]}
    shipped = StageProgram(2, ShippedSource(3), (), None)
    read = shipped.opener(1, store)
    store[(3, 1)] = ["replaced"]  # resolved already: the group keeps what it started with
    assert list(read(0)) == [1, 2, 3]
    assert list(read(1)) == [1, 2, 3]
    missing = shipped.opener(0, store)  # not on this slot: each task fails as compute does
    with pytest.raises(LookupError, match="source block 3/0 is not on this slot"):
        missing(0)
    generated = StageProgram(2, FunctionSource(4, lambda p: [p, p * 10]), (), None)
    assert list(generated.opener(1, store)(7)) == [1, 10]


def test_the_add_combiner_without_a_call_combines_exactly_as_a_called_one() -> None:
    from adrizzle.plan.program import ShuffleWrite

    pairs = [("a", 1), ("b", "x"), ("a", 2), ("c", [1]), ("b", "y"), ("c", [2]), ("a", 3)]
    fast = ShuffleWrite(3, combine=operator.add).split(iter(pairs))
    called = ShuffleWrite(3, combine=lambda a, b: a + b).split(iter(pairs))
    assert fast == called
    assert {k: v for block in fast for k, v in block.items()} == {"a": 6, "b": "xy", "c": [1, 2]}
    with pytest.raises(TypeError):  # the same error a called operator.add raises
        ShuffleWrite(2, combine=operator.add).split(iter([("k", 1), ("k", "s")]))
