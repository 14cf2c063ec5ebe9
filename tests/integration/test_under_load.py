"""The important paths on a busy machine (issue 14): every core spinning (``busy_cpu``), each
run exact, and no stall or lost-worker warning. Races between the driver, the workers and
their slots show up here first: under load, callbacks and processes interleave in orders a
quiet machine never produces.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import operator
import os
import signal
import sys
import time

import cloudpickle
import pytest

import adrizzle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

# What a stall, a false loss or a recovery logs on the driver.
TROUBLE = ("no progress", "lost", "rolling back", "re-running")


def trouble(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and any(t in r.getMessage() for t in TROUBLE)
    ]


@pytest.fixture
def driver_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="adrizzle")
    return caplog


async def test_fresh_engines_run_their_first_jobs_without_a_stall(
    busy_cpu: int, driver_log: pytest.LogCaptureFixture
) -> None:
    # The reproducer of issue 14, shortened: a stall would take stall_timeout (3 s) to show.
    expected = [sum(range(100)), sum(range(100, 200))]
    for _ in range(6):
        async with adrizzle.Engine.local(workers=1, cores=1, stall_timeout=3.0) as engine:
            data = engine.parallelize(range(200), partitions=2).cache()
            for g, n in ((10, 20), (1, 100), (10, 200), (100, 400)):
                assert await engine.run_jobs([data] * n, sum, group_size=g) == [expected] * n
                assert await engine.wait_settled()
            assert engine.statistics()["recoveries"] == 0
    assert trouble(driver_log) == []


def pairs(p: int) -> list[tuple[str, int]]:
    return [(f"k{(p * 31 + i) % 17}", i) for i in range(200)]


async def test_a_pre_scheduled_shuffle_under_load_is_exact(
    busy_cpu: int, driver_log: pytest.LogCaptureFixture
) -> None:
    want: collections.Counter[str] = collections.Counter()
    for p in range(4):
        for k, v in pairs(p):
            want[k] += v
    async with adrizzle.Engine.local(workers=2, cores=1, stall_timeout=10.0) as engine:
        counts = engine.generate(pairs, partitions=4).reduce_by_key(operator.add, 2)
        for g in (1, 10):
            for values in await engine.run_jobs([counts] * 40, list, group_size=g):
                assert dict(kv for part in values for kv in part) == want
        assert engine.statistics()["recoveries"] == 0
    assert trouble(driver_log) == []


P, K, KEYS = 4, 40, 6


def ints(batch: int, partition: int) -> range:
    start = (batch * P + partition) * K
    return range(start, start + K)


def add_values(values: list[int], total: int | None) -> int:
    return (total or 0) + sum(values)


async def test_a_stateful_stream_with_a_sigkilled_worker_under_load_is_exact(
    busy_cpu: int, driver_log: pytest.LogCaptureFixture
) -> None:
    totals: collections.Counter[int] = collections.Counter()
    want = []
    for b in range(80):
        for p in range(P):
            for x in ints(b, p):
                totals[x % KEYS] += x
        want.append(dict(totals))
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        stream = (
            engine.stream(ints, partitions=P)
            .map(lambda x: (x % KEYS, x))
            .update_state(add_values, combine=operator.add, partitions=3)
        )
        seen = []
        victim = engine.workers[1]
        async for update in stream.run(80, group_size=4, timeout=120):
            assert dict(update.values) == want[update.batch], f"batch {update.batch}"
            seen.append(update.batch)
            if update.batch == 30:
                os.kill(victim["pid"], signal.SIGKILL)
        assert seen == list(range(80))
        assert [w["id"] for w in engine.workers] == ["local-0", "local-2"]
    # Only the worker we killed was lost, and no run stalled.
    lost = [m for m in trouble(driver_log) if "lost" in m]
    assert lost
    assert all(victim["id"] in m for m in lost)
    assert not [m for m in trouble(driver_log) if "no progress" in m]


async def test_a_slow_consumer_loses_no_worker(
    busy_cpu: int, driver_log: pytest.LogCaptureFixture
) -> None:
    # A consumer that awaits between batches, and one that blocks the driver's loop for longer
    # than the default heartbeat timeout (5 s): the workers' heartbeats wait unread in the
    # socket and the driver sends none, which is nobody's failure (adrizzle.wire.liveness; the
    # workers tolerate a silent driver for longer than the driver tolerates them).
    expected = [sum(range(100)), sum(range(100, 200))]
    async with adrizzle.Engine.local(workers=2, cores=1) as engine:
        data = engine.parallelize(range(200), partitions=2).cache()
        seen = 0
        async for job in engine.iter_jobs([data] * 40, sum, group_size=2):
            assert job.values == expected
            seen += 1
            await asyncio.sleep(0.05)
            if seen == 10:
                time.sleep(6.0)  # noqa: ASYNC251 - blocks the loop on purpose: no frame is read
        assert seen == 40
        assert len(engine.workers) == 2
        stats = engine.statistics()
        assert stats["workers_lost"] == 0
        assert stats["recoveries"] == 0
    assert trouble(driver_log) == []
