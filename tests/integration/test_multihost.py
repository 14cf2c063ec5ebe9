"""Several hosts for real (adrizzle_bench.netns): real ``adrizzle-worker``s, each in its own
network namespace with its own address, behind delay proxies that add round-trip time; the
driver on the bridge. A run, a shuffle across hosts, a host's link pulled mid-shuffle, and a
host joining mid-stream. Needs root and iproute2: skipped with the reason otherwise, failed
instead under CI=true (the CI runner must be able to run them)."""

from __future__ import annotations

import asyncio
import operator
import os
import subprocess
import time
from collections.abc import Awaitable, Callable

import psutil
import pytest

import adrizzle
from adrizzle_bench import scaling_hosts
from adrizzle_bench.netns import Hosts, host_of, unavailable_reason

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOKEN = "multihost-test-token"
FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.5}
FAST_WORKER = ["--heartbeat-interval", "0.2", "--heartbeat-timeout", "1.5"]


@pytest.fixture(autouse=True)
def namespaces() -> None:
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"multi-host tests cannot run on this CI runner: {reason}")
        pytest.skip(reason)


def on_hosts(
    n: int, rtt_ms: float, body: Callable[[Hosts, adrizzle.Engine], Awaitable[None]]
) -> None:
    """``body(hosts, engine)`` with ``n`` hosts joined (fast heartbeats both ways), on uvloop;
    the engine, the workers and the namespaces are gone when it returns or raises."""

    async def main() -> None:
        async with Hosts(n, rtt_ms=rtt_ms) as hosts:
            engine = adrizzle.Engine(listen=f"{hosts.driver_ip}:0", token=TOKEN, **FAST)
            async with engine:
                await hosts.start_workers(engine.address, TOKEN, FAST_WORKER)
                await engine.wait_for_workers(n, timeout=30)
                await body(hosts, engine)

    adrizzle.run(main())


def sums_by_key(n: int, keys: int = 3) -> list[tuple[int, int]]:
    return sorted((k, sum(x for x in range(n) if x % keys == k)) for k in range(keys))


def test_a_run_across_three_hosts_is_exact_and_keeps_the_frame_contract() -> None:
    async def body(hosts: Hosts, engine: adrizzle.Engine) -> None:
        by_id = {w["id"]: w for w in engine.workers}
        for host in hosts.hosts:  # each worker really is on its own address
            assert host_of(by_id[host.worker_name]["address"]) == host.address
            assert by_id[host.worker_name]["data_address"] == f"{host.address}:7101"
        data = engine.parallelize(range(600), partitions=6).cache()
        before = engine.statistics()["frames_sent"].get("launch_group", 0)
        t0 = time.perf_counter()
        results = await engine.run_jobs([data] * 40, sum, group_size=10, timeout=30)
        elapsed = time.perf_counter() - t0
        assert results == [[sum(range(p * 100, (p + 1) * 100)) for p in range(6)]] * 40
        assert await engine.wait_settled()
        assert engine.statistics()["frames_sent"]["launch_group"] - before == 3 * 4
        # The injected delay is real: the run paid at least one round trip. (Not one per group:
        # with EngineConfig.window = 4 all four groups are in flight at once.)
        assert elapsed >= 0.002

    on_hosts(3, 2.0, body)


def test_a_shuffle_across_hosts_is_exact() -> None:
    async def body(hosts: Hosts, engine: adrizzle.Engine) -> None:
        data = engine.parallelize(range(900), partitions=6).cache()
        pairs = data.map(lambda x: (x % 3, x)).reduce_by_key(operator.add, 3)
        results = await engine.run_jobs([pairs] * 12, sorted, group_size=4, timeout=30)
        for per_partition in results:
            assert sorted(kv for part in per_partition for kv in part) == sums_by_key(900)
        assert await engine.wait_settled()
        # Map outputs crossed hosts through the data proxies (none pass the driver).
        assert engine.statistics()["shuffle_blocks_pushed"] > 0

    on_hosts(3, 1.0, body)


def test_a_host_whose_link_is_pulled_mid_shuffle_is_lost_and_the_run_recovers_exactly() -> None:
    async def body(hosts: Hosts, engine: adrizzle.Engine) -> None:
        data = engine.parallelize(range(900), partitions=6).cache()
        slow = data.map(lambda x: __import__("time").sleep(0.0002) or x)
        pairs = slow.map(lambda x: (x % 3, x)).reduce_by_key(operator.add, 3)
        run = asyncio.ensure_future(engine.run_jobs([pairs] * 60, sorted, group_size=4))
        await asyncio.sleep(0.5)
        assert not run.done()
        await hosts.pull_link(1)  # silence: no FIN, no RST
        results = await asyncio.wait_for(run, 45)
        for per_partition in results:
            assert sorted(kv for part in per_partition for kv in part) == sums_by_key(900)
        assert sorted(w["id"] for w in engine.workers) == ["host0", "host2"]
        assert engine.statistics()["recoveries"] >= 1
        # Cut off, the worker hears nothing from the driver and leaves by itself.
        code = await hosts.wait_worker_exit(1, timeout=20)
        assert code not in (None, 0)

    on_hosts(3, 1.0, body)


def test_a_host_joining_mid_stream_takes_partitions_by_the_next_run() -> None:
    async def body(hosts: Hosts, engine: adrizzle.Engine) -> None:
        data = engine.parallelize(range(800), partitions=8).cache()
        expected = [[sum(range(p * 100, (p + 1) * 100)) for p in range(8)]]
        # ~3 tasks of 3 ms per slot and batch: the stream lasts ~10 s, longer than a join.
        slow = data.map_partitions(lambda it: __import__("time").sleep(0.003) or it)
        run = asyncio.ensure_future(engine.run_jobs([slow] * 1000, sum, group_size=4))
        await asyncio.sleep(0.3)
        await hosts.add_host()
        await engine.wait_for_workers(4, timeout=30)
        assert not run.done()  # it joined mid-stream
        assert await asyncio.wait_for(run, 40) == expected * 1000  # exact across the join
        results = await engine.run_jobs([data] * 20, sum, group_size=4, timeout=30)
        assert results == expected * 20
        joined = next(w for w in engine.workers if w["id"] == "host3")
        assert host_of(joined["address"]) == hosts.hosts[3].address
        assert joined["tasks_done"] > 0  # the new host ran partitions of the next run

    on_hosts(3, 0.5, body)


def test_everything_is_torn_down_when_the_body_fails() -> None:
    namespaces: list[str] = []
    links: list[str] = []
    pids: list[int] = []

    async def main() -> None:
        async with Hosts(2, rtt_ms=0.5) as hosts:
            engine = adrizzle.Engine(listen=f"{hosts.driver_ip}:0", token=TOKEN)
            async with engine:
                await hosts.start_workers(engine.address, TOKEN)
                await engine.wait_for_workers(2, timeout=30)
                namespaces.extend(h.ns for h in hosts.hosts)
                links.extend([hosts.bridge, *(h.veth for h in hosts.hosts)])
                pids.extend(p.pid for h in hosts.hosts for p in (h.proxy, h.worker) if p)
                raise RuntimeError("the body failed")

    with pytest.raises(RuntimeError, match="the body failed"):
        adrizzle.run(main())
    assert (len(namespaces), len(links), len(pids)) == (2, 3, 4)
    left_ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert [n for n in namespaces if n in left_ns] == []
    assert [n for n in links if f" {n}:" in left_links or f" {n}@" in left_links] == []
    assert [p for p in pids if psutil.pid_exists(p)] == []


def test_the_hosts_benchmark_measures_both_group_sizes_and_an_exact_recovery() -> None:
    row, rec = adrizzle.run(scaling_hosts.bench_rtt(2, 1.0, 1, {1: 20, 100: 100}, quick=True))
    assert row["g1_exact"]
    assert row["g100_exact"]
    # a round trip of 1 ms, at most EngineConfig.window (4) groups in flight
    assert row["g1_ms"] >= 1.0 / adrizzle.EngineConfig().window
    assert rec["exact"], rec["problems"]
    assert rec["recoveries"] >= 1
    assert rec["detected_s"] is not None
    assert rec["from_detection_s"] is not None
