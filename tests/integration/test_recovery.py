"""Losing workers mid-run with real processes: every run's answer equals the failure-free one.

Workers are killed with SIGKILL by pid (from ``engine.workers``) at random moments; each
(job, partition) must reach the caller exactly once, with the value a run without failures
gives. Nothing may hang: every run has a timeout.
"""

from __future__ import annotations

import asyncio
import operator
import os
import random
import signal
import sys

import cloudpickle
import pytest

import adrizzle
from adrizzle.errors import NoWorkersError
from tests.conftest import fast_heartbeat_engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# The helpers below are module functions: ship them by value (workers cannot import tests).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

P, K = 6, 20


def slow_identity(x: int) -> int:
    __import__("time").sleep(0.0001)
    return x


def expected_single(batch: int) -> list[int]:
    return [sum(x * (batch + 1) for x in range(p * K, (p + 1) * K)) for p in range(P)]


def scale(batch: int, x: int) -> int:
    return x * (batch + 1)


def jobs_single(engine: adrizzle.Engine, n: int) -> list[adrizzle.Dataset]:
    # Each batch differs (x * (batch + 1)), so a result delivered for the wrong batch shows.
    import functools

    data = engine.parallelize(range(P * K), partitions=P).cache()
    return [data.map(slow_identity).map(functools.partial(scale, b)) for b in range(n)]


async def kill_after(engine: adrizzle.Engine, delay: float, index: int = 0) -> int:
    await asyncio.sleep(delay)
    pid = engine.workers[index]["pid"]
    os.kill(pid, signal.SIGKILL)
    return int(pid)


@pytest.mark.parametrize("seed", range(3))
async def test_sigkill_during_single_stage_runs(seed: int) -> None:
    rng = random.Random(seed)
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        n = 80
        run = asyncio.ensure_future(
            engine.run_jobs(jobs_single(engine, n), sum, group_size=rng.choice([1, 4, 10]))
        )
        await kill_after(engine, rng.uniform(0.0, 0.25), rng.randrange(3))
        results = await asyncio.wait_for(run, 60)
        assert results == [expected_single(b) for b in range(n)]
        assert len(engine.workers) == 2
        # The survivors keep working at full group size afterwards.
        again = await engine.run_jobs(jobs_single(engine, 10), sum, group_size=5, timeout=30)
        assert again == [expected_single(b) for b in range(10)]


@pytest.mark.parametrize(("seed", "pre_schedule"), [(0, True), (1, True), (2, False)])
async def test_sigkill_during_a_shuffle_run(seed: int, pre_schedule: bool) -> None:
    rng = random.Random(seed)
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        data = engine.parallelize(range(300), partitions=6).cache()
        counts = data.map(lambda x: (x % 7, slow_identity(1))).reduce_by_key(operator.add, 3)
        run = asyncio.ensure_future(
            engine.run_jobs(
                [counts] * 40,
                lambda it: sorted(it),
                group_size=rng.choice([2, 5]),
                pre_schedule=pre_schedule,
            )
        )
        await kill_after(engine, rng.uniform(0.05, 0.3), rng.randrange(3))
        results = await asyncio.wait_for(run, 60)
        expected = sorted((k, sum(1 for x in range(300) if x % 7 == k)) for k in range(7))
        for per_partition in results:
            assert sorted(kv for part in per_partition for kv in part) == expected
        assert engine.statistics()["recoveries"] >= 1


async def test_two_workers_lost_one_after_another() -> None:
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        n = 120
        run = asyncio.ensure_future(engine.run_jobs(jobs_single(engine, n), sum, group_size=5))
        await kill_after(engine, 0.1, 0)
        await kill_after(engine, 0.2, 0)
        results = await asyncio.wait_for(run, 90)
        assert results == [expected_single(b) for b in range(n)]
        assert len(engine.workers) == 1


async def test_every_worker_lost_fails_after_the_wait_for_workers() -> None:
    async with adrizzle.Engine.local(workers=2, cores=1, no_workers_timeout=1.5) as engine:
        run = asyncio.ensure_future(engine.run_jobs(jobs_single(engine, 500), sum, group_size=5))
        await asyncio.sleep(0.1)
        for w in engine.workers:
            os.kill(w["pid"], signal.SIGKILL)
        with pytest.raises(NoWorkersError, match="every worker was lost"):
            await asyncio.wait_for(run, 30)


async def test_iter_jobs_delivers_each_batch_once_across_a_loss() -> None:
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        n = 60
        seen: list[int] = []
        killed = False
        async for job in engine.iter_jobs(jobs_single(engine, n), sum, group_size=4, timeout=60):
            assert job.values == expected_single(job.index)
            seen.append(job.index)
            if job.index == 10 and not killed:
                os.kill(engine.workers[1]["pid"], signal.SIGKILL)
                killed = True
        assert seen == list(range(n))


async def test_stopped_worker_is_declared_lost_by_heartbeat_timeout() -> None:
    async with fast_heartbeat_engine() as engine:
        n = 60
        stopped = engine.workers[2]
        run = asyncio.ensure_future(engine.run_jobs(jobs_single(engine, n), sum, group_size=4))
        await asyncio.sleep(0.1)
        os.kill(stopped["pid"], signal.SIGSTOP)  # connected but silent: no FIN, no RST
        try:
            results = await asyncio.wait_for(run, 60)
            assert results == [expected_single(b) for b in range(n)]
            assert stopped["id"] not in {w["id"] for w in engine.workers}
            assert engine.statistics()["workers_lost"] == 1
        finally:
            os.kill(stopped["pid"], signal.SIGCONT)
        # Resumed, it finds the driver dropped it and exits on its own; its late frames
        # (results of aborted groups) went nowhere: the answers above are exact.
        for _ in range(100):
            if engine.session.local is not None and engine.session.local.check_alive():
                break
            await asyncio.sleep(0.05)
        assert any(stopped["id"] in s for s in engine.session.local.check_alive())  # type: ignore[union-attr]


# -- elasticity ------------------------------------------------------------------------------


async def test_a_worker_added_mid_run_takes_partitions_at_the_next_group() -> None:
    async with adrizzle.Engine.local(workers=1, cores=1) as engine:
        n = 150
        run = asyncio.ensure_future(engine.run_jobs(jobs_single(engine, n), sum, group_size=3))
        await asyncio.sleep(0.1)
        (name,) = await engine.add_workers(1)
        results = await asyncio.wait_for(run, 60)
        assert results == [expected_single(b) for b in range(n)]
        new = next(w for w in engine.workers if w["id"] == name)
        assert new["tasks_done"] > 0  # it joined the run, not just the cluster
        assert engine.statistics()["recoveries"] == 0


async def test_remove_worker_drains_without_recomputing() -> None:
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        n = 100
        leaving = engine.workers[1]
        run = asyncio.ensure_future(engine.run_jobs(jobs_single(engine, n), sum, group_size=4))
        await asyncio.sleep(0.1)
        await engine.remove_worker(leaving["id"])
        assert leaving["id"] not in {w["id"] for w in engine.workers}
        results = await asyncio.wait_for(run, 60)
        assert results == [expected_single(b) for b in range(n)]
        stats = engine.statistics()
        assert stats["recoveries"] == 0  # handed back at a group boundary, nothing lost


async def test_sigterm_makes_a_worker_drain_then_exit_cleanly() -> None:
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        n = 100
        leaving = engine.workers[0]
        run = asyncio.ensure_future(engine.run_jobs(jobs_single(engine, n), sum, group_size=4))
        await asyncio.sleep(0.1)
        os.kill(leaving["pid"], signal.SIGTERM)
        results = await asyncio.wait_for(run, 60)
        assert results == [expected_single(b) for b in range(n)]
        assert engine.statistics()["recoveries"] == 0
        proc = engine.session.local.processes[leaving["id"]]  # type: ignore[union-attr]
        for _ in range(200):
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.02)
        assert proc.returncode == 0
