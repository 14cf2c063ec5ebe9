"""The real driver with 64 simulated workers (adrizzle_bench.simworkers): exact results, the
group-scheduling frame contract, honest shuffle bookkeeping, and a worker lost mid-group."""

from __future__ import annotations

import argparse
import asyncio
import operator

import psutil
import pytest

from adrizzle.wire.messages import Heartbeat
from adrizzle_bench import scaling_sim
from adrizzle_bench.scaling_sim import keyed
from adrizzle_bench.simworkers import SimCluster, expected_values, simulated_engine
from tests.fake_driver import FakeDriver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WORKERS = 64


def assert_reaped(pids: list[int]) -> None:
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert alive == [], f"simulating processes left behind: {alive}"


async def test_64_simulated_workers_give_exact_results_and_the_frame_contract() -> None:
    async with simulated_engine(WORKERS, sim={"processes": 2}) as (engine, sim):
        pids = sim.pids
        assert len(engine.workers) == WORKERS
        assert len({w["address"].rsplit(":", 1)[0] for w in engine.workers}) == WORKERS
        partitions = 2 * WORKERS
        data = engine.parallelize(range(partitions * 10), partitions).cache()
        before = engine.statistics()
        results = await engine.run_jobs([data] * 40, sum, group_size=10, timeout=30)
        assert results == expected_values(40, partitions)
        assert await engine.wait_settled()
        after = engine.statistics()

        def delta(kind: str, tag: str) -> int:
            return int(after[kind].get(tag, 0) - before[kind].get(tag, 0))

        groups = 4
        assert delta("frames_sent", "launch_group") == WORKERS * groups
        assert delta("frames_received", "group_done") == WORKERS * groups
        # The slots pack results as real ones do: each runs out of ready work at its
        # group's end, so one result frame per worker per group.
        assert delta("frames_received", "batch_result") == WORKERS * groups
        counters = await sim.stats()
        assert counters["launches"] == WORKERS * groups
        assert counters["tasks"] == partitions * 40

        # A shuffle: 128 map tasks, each pushing to the 63 reducer slots other than its own.
        pushed = after["shuffle_blocks_pushed"]
        pairs = data.map(keyed).reduce_by_key(operator.add, partitions)
        results = await engine.run_jobs([pairs] * 6, sorted, group_size=3, timeout=30)
        assert results == expected_values(6, partitions)
        assert await engine.wait_settled()
        assert engine.statistics()["shuffle_blocks_pushed"] - pushed == 6 * partitions * 63
    assert_reaped(pids)


async def test_a_worker_dropped_mid_group_is_recovered_and_its_groups_cancelled() -> None:
    # 2 ms per task, 2 tasks per batch: a group of 10 batches lasts ~40 ms on each worker.
    sim_options = {"processes": 2, "task_cost_us": 2000.0}
    async with simulated_engine(WORKERS, sim=sim_options) as (engine, sim):
        partitions = 2 * WORKERS
        data = engine.parallelize(range(partitions * 10), partitions).cache()
        run = asyncio.ensure_future(engine.run_jobs([data] * 100, sum, group_size=10, timeout=45))
        await asyncio.sleep(0.15)
        assert not run.done()
        await sim.drop("sim-00017")
        results = await run
        assert results == expected_values(100, partitions)  # every job once, exactly
        stats = engine.statistics()
        assert stats["recoveries"] >= 1
        assert "sim-00017" not in {w["id"] for w in engine.workers}
        counters = await sim.stats()
        # The survivors were told to drop the groups that had work on the lost worker.
        assert counters["cancelled_groups"] >= WORKERS - 1
        assert counters["dropped_batches"] >= 1
        assert counters["connected"] == WORKERS - 1


async def test_a_cluster_that_cannot_join_is_reported_and_reaped() -> None:
    cluster = SimCluster("127.0.0.1:9", "a-token", 3, ready_timeout=30)  # nobody listens there
    with pytest.raises(RuntimeError, match="ConnectionRefusedError"):
        async with cluster:
            pass  # pragma: no cover - never reached
    left = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "adrizzle_bench.sim_process" in cmd and "127.0.0.1:9 " in cmd:
            left.append(proc.pid)
    assert left == []


async def test_the_simulated_scaling_benchmark_measures_every_row_exactly() -> None:
    args = argparse.Namespace(task_cost_us=0.0, sim_results="slot")
    sizes = {1: 10, 10: 20, 100: 100, "auto": 50}
    table = await scaling_sim.bench_workers(16, args, sizes, repeats=1)
    assert len(table) == 8  # 2 workloads x 4 group sizes
    assert all(r["exact"] for r in table)
    g1 = next(r for r in table if r["workload"] == "single-stage" and r["group_size"] == 1)
    g100 = next(r for r in table if r["workload"] == "single-stage" and r["group_size"] == 100)
    assert g1["frames_in_per_batch"] >= 16  # at least a result frame per worker per batch
    assert g100["frames_in_per_batch"] < 16  # a slot packs its group's batches
    assert g100["cpu_us_per_batch"] < g1["cpu_us_per_batch"]


async def test_simulated_workers_send_heartbeats_and_leave_a_silent_driver() -> None:
    async with FakeDriver(token="a-token") as driver:  # answers the handshake, then says nothing
        cluster = SimCluster(
            f"{driver.host}:{driver.port}",
            "a-token",
            4,
            heartbeat_interval=0.1,
            heartbeat_timeout=0.6,
        )
        async with cluster:
            beats = 0
            while beats < 8:  # at least two rounds from the 4 workers
                msg, _payload = await driver.next(timeout=5)
                beats += isinstance(msg, Heartbeat)
            # Silent for longer than the timeout, every worker leaves; the process then exits.
            # (Through the cluster's own handle: psutil.Process.wait would reap the child behind
            # uvloop's back, and the loop would then never see it exit.)
            await cluster.wait_exit(0, timeout=10)
            final = await cluster.stop()
        assert final["silent_exits"] == 4
        assert final["heartbeats"] >= 8
