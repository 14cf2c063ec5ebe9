"""The RDD operators and actions on real workers, against plain Python (issue 20 item 1).

Each operator runs as the datasets of ``run_jobs`` (a different dataset per job, same shape) for
group sizes 1, 4 and 10, pre-scheduled and BSP; per stream batch; and across a worker SIGKILL.
One engine per module (per event loop) serves every test that does not kill workers.
"""

from __future__ import annotations

import asyncio
import collections
import operator
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import cloudpickle
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adrizzle

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.asyncio(loop_scope="module"),
]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine() -> AsyncIterator[adrizzle.Engine]:
    async with adrizzle.Engine.local(workers=2, cores=1) as eng:
        yield eng


Pairs = list[tuple[Any, int]]
KEYS = st.one_of(st.integers(-3, 6), st.sampled_from(["a", "b", ""]))
PAIRS = st.lists(st.tuples(st.integers(-3, 6), st.integers(-9, 9)), max_size=30)
SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def by_repr(items: Any) -> list[Any]:
    return sorted(items, key=repr)


def flat(parts: list[list[Any]]) -> list[Any]:
    return [x for part in parts for x in part]


def lists_by_key(pairs: Pairs) -> dict[Any, list[int]]:
    out: dict[Any, list[int]] = collections.defaultdict(list)
    for k, v in pairs:
        out[k].append(v)
    return out


def joined(left: Pairs, right: Pairs, how: str) -> list[Any]:
    lk, rk = lists_by_key(left), lists_by_key(right)
    out = [(k, (v, w)) for k, v in left for k2, w in right if k == k2]
    if how in ("left", "full"):
        out += [(k, (v, None)) for k, v in left if k not in rk]
    if how in ("right", "full"):
        out += [(k, (None, w)) for k, w in right if k not in lk]
    return by_repr(out)


def append(acc: list[int], v: int) -> list[int]:
    acc.append(v)
    return acc


def sorted_values(kv: tuple[Any, list[int]]) -> tuple[Any, list[int]]:
    return (kv[0], sorted(kv[1]))


# Each case: how to build the dataset from the job's two inputs, and the expected output.
Case = tuple[
    Callable[[adrizzle.Dataset[Any], adrizzle.Dataset[Any], int], adrizzle.Dataset[Any]],
    Callable[[Pairs, Pairs], Any],
    bool,  # compare in order (sorts, unions) rather than as a multiset
]
CASES: dict[str, Case] = {
    "left_outer_join": (
        lambda a, b, r: a.left_outer_join(b, r),
        lambda x, y: joined(x, y, "left"),
        False,
    ),
    "right_outer_join": (
        lambda a, b, r: a.right_outer_join(b, r),
        lambda x, y: joined(x, y, "right"),
        False,
    ),
    "full_outer_join": (
        lambda a, b, r: a.full_outer_join(b, r),
        lambda x, y: joined(x, y, "full"),
        False,
    ),
    "cogroup": (
        lambda a, b, r: a.cogroup(b, r).map(
            lambda kv: (kv[0], (sorted(kv[1][0]), sorted(kv[1][1])))
        ),
        lambda x, y: by_repr(
            (k, (sorted(lists_by_key(x).get(k, [])), sorted(lists_by_key(y).get(k, []))))
            for k in {*lists_by_key(x), *lists_by_key(y)}
        ),
        False,
    ),
    "distinct": (
        lambda a, b, r: a.keys().distinct(r),
        lambda x, y: by_repr({k for k, _ in x}),
        False,
    ),
    "repartition": (
        lambda a, b, r: a.repartition(r),
        lambda x, y: by_repr(x),
        False,
    ),
    "sort_by_key": (
        lambda a, b, r: a.sort_by_key(True, r),
        lambda x, y: sorted(x, key=operator.itemgetter(0)),
        True,
    ),
    "sort_by_key_descending": (
        lambda a, b, r: a.sort_by_key(False, r),
        lambda x, y: sorted(x, key=operator.itemgetter(0), reverse=True),
        True,
    ),
    "aggregate_by_key": (
        lambda a, b, r: a.aggregate_by_key([], append, operator.add, r).map(sorted_values),
        lambda x, y: by_repr((k, sorted(vs)) for k, vs in lists_by_key(x).items()),
        False,
    ),
    "combine_by_key": (
        lambda a, b, r: a.combine_by_key(lambda v: [v], append, operator.add, r).map(sorted_values),
        lambda x, y: by_repr((k, sorted(vs)) for k, vs in lists_by_key(x).items()),
        False,
    ),
    "union": (
        lambda a, b, r: a.union(b.reduce_by_key(operator.add, r)),
        lambda x, y: [*x, *by_repr(_reduced(y))],
        False,
    ),
}


def _reduced(pairs: Pairs) -> list[tuple[Any, int]]:
    out: dict[Any, int] = collections.Counter()
    for k, v in pairs:
        out[k] += v
    return list(out.items())


@SETTINGS
@given(
    data=st.lists(st.tuples(PAIRS, PAIRS), min_size=1, max_size=12),
    maps=st.integers(1, 4),
    reducers=st.integers(1, 5),
    group_size=st.sampled_from([1, 4, 10]),
    pre_schedule=st.booleans(),
)
async def test_operators_in_run_jobs_equal_plain_python(
    engine: adrizzle.Engine,
    data: list[tuple[Pairs, Pairs]],
    maps: int,
    reducers: int,
    group_size: int,
    pre_schedule: bool,
) -> None:
    inputs = [
        (engine.parallelize(x, partitions=maps), engine.parallelize(y, partitions=2))
        for x, y in data
    ]
    for name, (build, expected, ordered) in CASES.items():
        datasets = [build(a, b, reducers) for a, b in inputs]  # one dataset per job
        results = await engine.run_jobs(
            datasets, list, group_size=group_size, pre_schedule=pre_schedule, timeout=60
        )
        for (x, y), parts in zip(data, results, strict=True):
            got = flat(parts)
            if name == "union":
                assert got[: len(x)] == x
                assert by_repr(got[len(x) :]) == expected(x, y)[len(x) :]
            elif ordered:
                assert got == expected(x, y), name
            else:
                assert by_repr(got) == expected(x, y), name


@SETTINGS
@given(items=st.lists(KEYS, max_size=40), maps=st.integers(1, 5), n=st.integers(0, 50))
async def test_actions_equal_plain_python(
    engine: adrizzle.Engine, items: list[Any], maps: int, n: int
) -> None:
    ds = engine.parallelize(items, partitions=maps)
    assert await ds.collect(timeout=30) == items
    assert await ds.count(timeout=30) == len(items)
    assert await ds.take(n, timeout=30) == items[:n]
    assert await ds.map(repr).distinct(3).count(timeout=30) == len({repr(x) for x in items})


async def test_unpersist_drops_the_cached_partitions(engine: adrizzle.Engine) -> None:
    calls = engine.accumulator(0)

    def counted(x: int) -> int:
        calls.add(1)
        return x

    ds = engine.parallelize(range(40), partitions=4).map(counted).cache()
    assert ds.is_cached
    assert await ds.count() == 40
    assert await ds.count() == 40  # from the cache: not computed again
    assert calls.value == 40
    assert ds.unpersist() is ds
    assert not ds.is_cached
    assert await ds.collect() == list(range(40))  # recomputed from its lineage
    assert await ds.count() == 40
    assert calls.value == 120


async def test_coroutine_functions_need_map_async(engine: adrizzle.Engine) -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0.001)
        return 2 * x

    ds = engine.parallelize(range(30), partitions=3)
    with pytest.raises(TypeError, match="map_async"):
        ds.map(double)
    with pytest.raises(TypeError, match="map_async"):
        ds.filter(double)
    assert await ds.map_async(double, concurrency=4).collect() == [2 * x for x in range(30)]


async def test_map_async_runs_at_most_n_calls_at_once_per_partition(
    engine: adrizzle.Engine,
) -> None:
    peak = engine.accumulator(0, max)
    state = {"now": 0}

    async def fetch(x: int) -> int:
        state["now"] += 1
        peak.add(state["now"])
        await asyncio.sleep(0.002 * (x % 3))
        state["now"] -= 1
        if x == 1234:
            raise LookupError("no such user")
        return x * 10

    ds = engine.parallelize(range(80), partitions=2).map_async(fetch, concurrency=5)
    assert await ds.collect() == [x * 10 for x in range(80)]
    assert peak.value == 5
    bad = engine.parallelize([1, 1234], partitions=1).map_async(fetch)
    with pytest.raises(adrizzle.TaskError, match="no such user") as info:
        await bad.collect()
    assert info.value.exc_type == "LookupError"
    stream = engine.stream(ints, partitions=P).map_async(fetch, concurrency=3)
    async for update in stream.run(3, group_size=3, timeout=60):
        assert update.values == [x * 10 for p in range(P) for x in ints(update.batch, p)]


P, K = 4, 30


def ints(batch: int, partition: int) -> range:
    start = (batch * P + partition) * K
    return range(start, start + K)


def batch_pairs(batch: int) -> list[tuple[int, int]]:
    return [((x * 31) % 11, x) for p in range(P) for x in ints(batch, p)]


async def test_operators_per_stream_batch(engine: adrizzle.Engine) -> None:
    table_pairs = [(k, f"t{k}") for k in range(0, 11, 2)]
    table = engine.parallelize(table_pairs, partitions=2).cache()
    stream = engine.stream(ints, partitions=P).map(lambda x: ((x * 31) % 11, x))
    pipelines: dict[str, tuple[adrizzle.Stream[Any], Callable[[int], list[Any]], bool]] = {
        "sort": (
            stream.sort_by_key(False, 3),
            lambda b: sorted(batch_pairs(b), key=operator.itemgetter(0), reverse=True),
            True,
        ),
        "left_outer_join": (
            stream.left_outer_join(table, 3),
            lambda b: joined(batch_pairs(b), table_pairs, "left"),
            False,
        ),
        "union": (
            stream.union(table.map(lambda kv: (kv[0], -1))),
            lambda b: batch_pairs(b) + [(k, -1) for k, _ in table_pairs],
            True,
        ),
        "distinct": (
            stream.keys().distinct(2),
            lambda b: sorted({k for k, _ in batch_pairs(b)}),
            False,
        ),
    }
    for name, (pipeline, expected, ordered) in pipelines.items():
        async for update in pipeline.run(12, group_size=4, timeout=60):
            want = expected(update.batch)
            got = update.values if ordered else by_repr(update.values)
            assert got == (want if ordered else by_repr(want)), (name, update.batch)


def weighted(batch: int, x: int) -> tuple[int, int]:
    return (x % 13, x * (batch + 1))


@pytest.mark.asyncio(loop_scope="function")
@pytest.mark.parametrize(("seed", "pre_schedule"), [(0, True), (1, False)])
async def test_operators_survive_a_worker_sigkill(seed: int, pre_schedule: bool) -> None:
    rng = random.Random(seed)
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        n = 200
        base = [[weighted(b, x) for x in range(120)] for b in range(n)]
        other = engine.parallelize([(k, -k) for k in range(0, 13, 3)], partitions=2).cache()
        seen = engine.accumulator(0)

        def count_it(kv: tuple[int, int]) -> tuple[int, int]:
            seen.add(1)
            return kv

        jobs = [
            engine.parallelize(pairs, partitions=6)
            .map(count_it)
            .sort_by_key(True, 4)
            .left_outer_join(other, 3)
            .union(engine.parallelize(pairs[:5], partitions=1))
            for pairs in base
        ]
        run = asyncio.ensure_future(
            engine.run_jobs(jobs, list, group_size=rng.choice([4, 10]), pre_schedule=pre_schedule)
        )
        # The loss comes mid-run: after a random number of micro-batches, not after a random
        # time (a fast run can finish inside any fixed sleep).
        done_before = engine.statistics()["micro_batches_completed"]
        kill_after = rng.randrange(1, n // 4)
        while engine.statistics()["micro_batches_completed"] - done_before < kill_after:
            assert not run.done()
            await asyncio.sleep(0.0005)
        assert not run.done()
        os.kill(engine.workers[rng.randrange(3)]["pid"], signal.SIGKILL)
        results = await asyncio.wait_for(run, 90)
        right = lists_by_key([(k, -k) for k in range(0, 13, 3)])
        for pairs, parts in zip(base, results, strict=True):
            got = flat(parts)
            expected = [(k, (v, w)) for k, v in pairs for w in right.get(k, [None])]
            assert by_repr(got[:-5]) == by_repr(expected)
            assert got[-5:] == pairs[:5]
        assert seen.value == n * 120  # every map task counted once, re-runs not again
        assert engine.statistics()["recoveries"] >= 1
