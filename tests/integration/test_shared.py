"""Broadcast variables and accumulators on real workers (issue 20 items 2 and 3).

A broadcast value crosses the wire once per worker (counted in frames and bytes), also to a
worker that joins later, and is gone after ``unpersist``. Accumulators count every successful
task once: across group sizes and shuffles, not for a failed job, and not twice for a stream
batch replayed after a worker SIGKILL.
"""

from __future__ import annotations

import functools
import operator
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import cloudpickle
import pytest
import pytest_asyncio

import adrizzle
from adrizzle.errors import TaskError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.asyncio(loop_scope="module"),
]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine() -> AsyncIterator[adrizzle.Engine]:
    async with adrizzle.Engine.local(workers=2, cores=1) as eng:
        yield eng


async def test_a_broadcast_is_shipped_once_per_worker(engine: adrizzle.Engine) -> None:
    def sent(kind: str) -> tuple[int, int]:
        stats = engine.statistics()
        return stats["frames_sent"].get(kind, 0), stats["bytes_sent"].get(kind, 0)

    big = bytes(range(256)) * 8192  # 2 MiB
    frames0, bytes0 = sent("put_shared")
    table = engine.broadcast({"blob": big, "offset": 7})
    assert table.value["offset"] == 7  # on the driver, the value itself
    frames1, bytes1 = sent("put_shared")
    assert frames1 - frames0 == len(engine.workers) == 2  # when made, to each worker
    assert bytes1 - bytes0 >= 2 * len(big)
    data = engine.parallelize(range(400), partitions=4).cache()
    ds = data.map(lambda x: x + table.value["offset"] + len(table.value["blob"]) % 3)
    _, launch0 = sent("launch_group")
    results = await engine.run_jobs([ds] * 30, sum, group_size=5, timeout=60)
    assert results == [[sum(range(q * 100, (q + 1) * 100)) + 100 * (7 + 2) for q in range(4)]] * 30
    # Never again: the 6 groups' launches carry the broadcast's id only.
    assert sent("put_shared") == (frames1, bytes1)
    assert sent("launch_group")[1] - launch0 < len(big) / 10
    shared = engine.statistics()["shared"]
    assert shared["broadcasts"] >= 1
    assert shared["broadcast_bytes"] >= len(big)

    table.unpersist()
    assert engine.statistics()["shared"]["broadcasts"] == shared["broadcasts"] - 1
    assert sent("drop_shared")[0] >= 2
    with pytest.raises(TaskError, match="unpersisted"):
        await ds.count(timeout=30)
    assert table.value["offset"] == 7  # still readable on the driver


async def test_accumulators_count_each_task_once(engine: adrizzle.Engine) -> None:
    seen = engine.accumulator(0, name="seen")
    keys = engine.accumulator(frozenset(), operator.or_)
    biggest = engine.accumulator(-1, max)

    def note(x: int) -> tuple[int, int]:
        seen.add(1)
        keys.add(frozenset({x % 5}))
        biggest.add(x)
        return (x % 5, x)

    data = engine.parallelize(range(1000), partitions=5)
    pairs = data.map(note)
    for group_size, pre_schedule in ((1, True), (4, True), (10, False)):
        before = seen.value
        jobs = [pairs.reduce_by_key(operator.add, 3)] * 12  # map tasks in a shuffle
        await engine.run_jobs(jobs, list, group_size=group_size, pre_schedule=pre_schedule)
        assert seen.value - before == 12 * 1000
    assert keys.value == frozenset(range(5))
    assert biggest.value == 999
    assert engine.statistics()["accumulators"]["seen"] == seen.value


async def test_a_failed_job_counts_nothing(engine: adrizzle.Engine) -> None:
    seen = engine.accumulator(0)

    def fragile(batch: int, x: int) -> int:
        seen.add(1)
        if batch == 1 and x == 3:
            raise ValueError("bad record")
        return x

    data = engine.parallelize(range(20), partitions=4)
    jobs = [data.map(functools.partial(fragile, b)) for b in range(3)]
    results = await engine.run_jobs(jobs, sum, return_exceptions=True, timeout=30)
    assert isinstance(results[1], TaskError)
    assert seen.value == 2 * 20  # jobs 0 and 2; none of job 1's tasks


P, K = 4, 25


def ints(batch: int, partition: int) -> range:
    start = (batch * P + partition) * K
    return range(start, start + K)


def add_values(values: list[int], total: int | None) -> int:
    return (total or 0) + sum(values)


@pytest.mark.asyncio(loop_scope="function")
@pytest.mark.parametrize("kill_at", [7, 23])
async def test_replayed_stream_batches_do_not_count_twice(kill_at: int, tmp_path: Path) -> None:
    computed = tmp_path / "computed"  # one line per partition computed, replays included

    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        table = engine.broadcast(3)
        items = engine.accumulator(0)

        def keyed(x: int) -> tuple[int, int]:
            items.add(1)
            return (x % table.value, x)

        def note(it: Iterator[int]) -> list[int]:
            out = list(it)
            with open(computed, "a") as f:
                f.write(f"{out[0]}\n")
            return out

        stream = (
            engine.stream(ints, partitions=P)
            .map_partitions(note)
            .map(keyed)
            .update_state(add_values, combine=operator.add, partitions=3)
        )
        last = None
        async for update in stream.run(40, group_size=4, timeout=90):
            if update.batch == kill_at:
                os.kill(engine.workers[1]["pid"], signal.SIGKILL)
            last = update
        assert last is not None
        assert dict(last.values) == {
            k: sum(x for x in range(40 * P * K) if x % 3 == k) for k in range(3)
        }
        assert engine.statistics()["recoveries"] >= 1
        replayed = len(computed.read_text().split()) - 40 * P
        assert replayed > 0  # some batches ran again after the loss...
        assert items.value == 40 * P * K  # ...and their updates did not count again


@pytest.mark.asyncio(loop_scope="function")
async def test_workers_that_join_later_get_broadcasts() -> None:
    async with adrizzle.Engine.local(workers=1, cores=1) as engine:
        factor = engine.broadcast(11)
        await engine.add_workers(2)
        ds = engine.parallelize(range(60), partitions=6).map(lambda x: x * factor.value)
        parts = await engine.run_jobs([ds], list, timeout=30)
        assert sorted(x for part in parts[0] for x in part) == [x * 11 for x in range(60)]
        assert engine.statistics()["frames_sent"]["put_shared"] == 3  # once per worker
