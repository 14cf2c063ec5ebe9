"""Multi-stage jobs on real workers: wide operations equal plain Python, pre-scheduled and BSP.

Each hypothesis example runs real jobs on one engine (two worker processes); the expected
answer is computed with dicts and lists.
"""

from __future__ import annotations

import collections
import operator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adrizzle
from adrizzle.errors import TaskError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Keys of every kind a user shuffles on: None, ints (incl. bool-like values and negatives),
# strings, bytes, tuples and nested tuples; values are small ints.
KEYS = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.sampled_from(["", "a", "b", "ünï", "x" * 30]),
    st.binary(max_size=3),
    st.tuples(st.integers(0, 2), st.sampled_from(["p", "q"])),
    st.tuples(st.none(), st.tuples(st.integers(0, 1))),
)
# Skew: many pairs on few keys is the common case, so draw keys from a small pool.
PAIRS = st.lists(KEYS, min_size=1, max_size=6, unique_by=repr).flatmap(
    lambda pool: st.lists(st.tuples(st.sampled_from(pool), st.integers(-3, 9)), max_size=60)
)
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def by_repr(items: Any) -> list[Any]:
    return sorted(items, key=repr)


def expected_reduce(pairs: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
    out: dict[Any, int] = {}
    for k, v in pairs:
        out[k] = out[k] + v if k in out else v
    return by_repr(out.items())


def expected_groups(pairs: list[tuple[Any, int]]) -> list[tuple[Any, list[int]]]:
    out: dict[Any, list[int]] = collections.defaultdict(list)
    for k, v in pairs:
        out[k].append(v)
    return by_repr((k, sorted(vs)) for k, vs in out.items())


def flatten(per_partition: list[list[Any]]) -> list[Any]:
    return [item for part in per_partition for item in part]


async def run_one(engine: adrizzle.Engine, ds: adrizzle.Dataset, **kw: Any) -> list[Any]:
    (values,) = await engine.run_jobs([ds], list, timeout=30, **kw)
    return flatten(values)


@SETTINGS
@given(
    pairs=PAIRS,
    maps=st.integers(1, 5),
    reducers=st.integers(1, 7),
    pre_schedule=st.booleans(),
)
async def test_wide_operations_equal_plain_python(
    engine: adrizzle.Engine,
    pairs: list[tuple[Any, int]],
    maps: int,
    reducers: int,
    pre_schedule: bool,
) -> None:
    data = engine.parallelize(pairs, partitions=maps)  # more partitions than pairs: empty ones
    kw = {"pre_schedule": pre_schedule}

    reduced = await run_one(engine, data.reduce_by_key(operator.add, reducers), **kw)
    assert by_repr(reduced) == expected_reduce(pairs)
    assert len({k for k, _v in reduced}) == len(reduced)  # each key reduced in one place

    grouped = await run_one(engine, data.group_by_key(reducers), **kw)
    assert by_repr((k, sorted(vs)) for k, vs in grouped) == expected_groups(pairs)

    counted = await run_one(engine, data.count_by_key(reducers), **kw)
    assert by_repr(counted) == by_repr(collections.Counter(k for k, _v in pairs).items())


@SETTINGS
@given(left=PAIRS, right=PAIRS, reducers=st.integers(1, 5), pre_schedule=st.booleans())
async def test_join_equals_nested_loop(
    engine: adrizzle.Engine,
    left: list[tuple[Any, int]],
    right: list[tuple[Any, int]],
    reducers: int,
    pre_schedule: bool,
) -> None:
    a = engine.parallelize(left, partitions=3)
    b = engine.parallelize(right, partitions=2)
    joined = await run_one(engine, a.join(b, reducers), pre_schedule=pre_schedule)
    expected = [(k1, (v1, v2)) for k1, v1 in left for k2, v2 in right if k1 == k2]
    assert by_repr(joined) == by_repr(expected)


@pytest.mark.parametrize("pre_schedule", [True, False])
@pytest.mark.parametrize("group_size", [1, 4])
async def test_three_stages_over_many_batches(
    engine: adrizzle.Engine, pre_schedule: bool, group_size: int
) -> None:
    # words -> count per word -> regroup by count -> words per count: three stages.
    words = engine.parallelize(["a b c", "b c", "c", "", "d d d d"], partitions=3)
    counts = words.flat_map(str.split).map(lambda w: (w, 1)).reduce_by_key(operator.add, 2)
    by_count = counts.map(lambda kv: (kv[1], kv[0])).group_by_key(3)
    assert len(by_count.plan(list).stages) == 3
    results = await engine.run_jobs(
        [by_count] * 9,
        lambda it: sorted((n, sorted(ws)) for n, ws in it),
        group_size=group_size,
        pre_schedule=pre_schedule,
        timeout=30,
    )
    expected = [(1, ["a"]), (2, ["b"]), (3, ["c"]), (4, ["d"])]
    for per_partition in results:
        assert sorted(flatten(per_partition)) == expected


async def test_no_driver_frame_between_stages(engine: adrizzle.Engine) -> None:
    data = engine.parallelize(range(4000), partitions=4).cache()
    reduced = data.map(lambda x: (x % 16, 1)).reduce_by_key(operator.add, 2)
    await engine.run_jobs([reduced], list, timeout=30)  # warm up: ship sources, dial peers
    await engine.wait_settled()
    before = engine.statistics()
    results = await engine.run_jobs([reduced] * 40, list, group_size=10, timeout=30)
    await engine.wait_settled()
    after = engine.statistics()
    assert all(sorted(flatten(r)) == [(k, 250) for k in range(16)] for r in results)

    def delta(kind: str) -> dict[str, int]:
        return {
            name: int(n - before[kind].get(name, 0))
            for name, n in after[kind].items()
            if n != before[kind].get(name, 0)
        }

    workers = len(engine.workers)
    # The driver sent one launch per worker per group and nothing else; it received acks and
    # results only: map outputs went worker to worker, never through the driver.
    sent = delta("frames_sent")
    sent.pop("heartbeat", None)  # liveness, once a second, whatever runs
    assert sent == {"launch_group": 4 * workers}
    received = delta("frames_received")
    received.pop("heartbeat", None)
    assert set(received) == {"group_done", "batch_result"}
    assert received["group_done"] == 4 * workers


async def test_bsp_mode_launches_each_stage_as_a_wave(engine: adrizzle.Engine) -> None:
    data = engine.parallelize(range(100), partitions=4)
    reduced = data.map(lambda x: (x % 3, x)).reduce_by_key(operator.add, 2)
    await engine.wait_settled()
    before = engine.statistics()["frames_sent"].get("launch_group", 0)
    results = await engine.run_jobs([reduced] * 6, list, group_size=1, pre_schedule=False)
    sent = engine.statistics()["frames_sent"]["launch_group"] - before
    expected = expected_reduce([(x % 3, x) for x in range(100)])
    assert all(by_repr(flatten(r)) == expected for r in results)
    # The driver is the barrier: two waves (map, then reduce) per batch, each to both workers.
    assert sent == 6 * 2 * len(engine.workers)


@pytest.mark.parametrize("pre_schedule", [True, False])
async def test_map_failure_fails_the_job_with_the_users_exception(
    engine: adrizzle.Engine, pre_schedule: bool
) -> None:
    def explode(x: int) -> tuple[int, int]:
        if x == 13:
            raise KeyError(f"bad record {x}")
        return (x % 4, x)

    data = engine.parallelize(range(40), partitions=4).map(explode)
    with pytest.raises(TaskError) as info:
        await engine.run_jobs(
            [data.reduce_by_key(operator.add, 2)], list, pre_schedule=pre_schedule, timeout=30
        )
    assert info.value.exc_type == "KeyError"
    assert "bad record 13" in str(info.value)
    # The engine still works after a failed shuffle.
    ok = engine.parallelize(range(40), partitions=4).map(lambda x: (x % 4, x))
    assert by_repr(await run_one(engine, ok.reduce_by_key(operator.add, 2))) == expected_reduce(
        [(x % 4, x) for x in range(40)]
    )


async def test_blocks_larger_than_the_frame_cap_are_split() -> None:
    # Data-port frames are capped at 64 KiB; each map output here is ~400 KiB.
    async with adrizzle.Engine.local(
        workers=2, cores=1, worker_args=["--max-frame-bytes", str(1 << 16)]
    ) as engine:
        data = engine.parallelize(range(8), partitions=4)
        big = data.map(lambda x: (x % 2, bytes([x]) * 200_000)).group_by_key(2)
        for pre_schedule in (True, False):
            (values,) = await engine.run_jobs(
                [big],
                lambda it: sorted((k, sorted(len(v) for v in vs)) for k, vs in it),
                pre_schedule=pre_schedule,
                timeout=30,
            )
            assert sorted(flatten(values)) == [(0, [200_000] * 4), (1, [200_000] * 4)]


async def test_reducer_whose_input_never_arrives_fails_after_the_timeout() -> None:
    async with adrizzle.Engine.local(
        workers=2, cores=1, worker_args=["--shuffle-timeout", "0.5"]
    ) as engine:

        def slow(x: int) -> tuple[int, int]:
            if x == 0:
                import time

                time.sleep(3)  # map partition 0 arrives long after the reducers gave up
            return (x % 2, x)

        data = engine.parallelize(range(4), partitions=2).map(slow)
        with pytest.raises(TaskError) as info:
            await engine.run_jobs([data.reduce_by_key(operator.add, 2)], list, timeout=30)
        message = str(info.value)
        assert "waited 0.5 s" in message
        assert "missing map partitions [0]" in message
