"""A worker on another network address loses its link: no FIN, no RST, just silence.

A Linux network namespace with a veth pair puts a real ``adrizzle-worker`` on its own address
(10.231.x.2) talking to the driver on 10.231.x.1. Mid-run the link goes down. Only the
heartbeat timeout can tell the driver the worker is gone; the run must finish on the worker
that is left with the exact answer, and the cut-off worker must notice the silent driver and
exit on its own. Needs root and iproute2; skipped with the reason otherwise.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
from collections.abc import Iterator

import pytest

import adrizzle
from adrizzle.driver.local import worker_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TOKEN = "netns-test-token"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def netns() -> Iterator[tuple[str, str, str, str]]:
    """(namespace, host veth, host address, namespace address); removed afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (the ip command) is not installed")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    tag = f"{os.getpid() % 10000}{random.randrange(100)}"
    ns, veth_host, veth_ns = f"adz{tag}", f"adzh{tag}", f"adzn{tag}"
    subnet = random.randrange(1, 250)
    host_ip, ns_ip = f"10.231.{subnet}.1", f"10.231.{subnet}.2"
    try:
        _ip("netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot create a network namespace here: {exc.stderr.decode().strip()}")
    try:
        _ip("link", "add", veth_host, "type", "veth", "peer", "name", veth_ns)
        _ip("link", "set", veth_ns, "netns", ns)
        _ip("addr", "add", f"{host_ip}/24", "dev", veth_host)
        _ip("link", "set", veth_host, "up")
        _ip("netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", veth_ns)
        _ip("netns", "exec", ns, "ip", "link", "set", veth_ns, "up")
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, veth_host, host_ip, ns_ip
    finally:
        subprocess.run(["ip", "link", "del", veth_host], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


async def test_worker_behind_a_dead_link_is_lost_and_its_work_redone(
    netns: tuple[str, str, str, str],
) -> None:
    ns, veth_host, host_ip, ns_ip = netns
    beat = ["--heartbeat-interval", "0.2", "--heartbeat-timeout", "1.5"]
    engine = adrizzle.Engine(
        listen=f"{host_ip}:0", token=TOKEN, heartbeat_interval=0.2, heartbeat_timeout=1.5
    )
    env = {**os.environ, "ADRIZZLE_AUTH_TOKEN": TOKEN}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    async with engine:
        try:
            procs["host"] = subprocess.Popen(  # noqa: ASYNC220 - fork+exec only
                [*worker_command(), engine.address, "--name", "host", *beat],
                env=env,
                stdin=subprocess.DEVNULL,
            )
            procs["remote"] = subprocess.Popen(  # noqa: ASYNC220 - fork+exec only
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    *worker_command(),
                    engine.address,
                    "--name",
                    "remote",
                    "--data-listen",
                    f"{ns_ip}:0",
                    *beat,
                ],
                env=env,
                stdin=subprocess.DEVNULL,
            )
            await engine.wait_for_workers(2, timeout=30)
            remote = next(w for w in engine.workers if w["id"] == "remote")
            assert remote["address"].startswith(ns_ip)  # really on the other address

            data = engine.parallelize(range(800), partitions=4).cache()
            slow = data.map(lambda x: __import__("time").sleep(0.0002) or x)
            pairs = slow.map(lambda x: (x % 3, x)).reduce_by_key(lambda a, b: a + b, 2)
            run = asyncio.ensure_future(
                engine.run_jobs([pairs] * 60, sorted, group_size=4, timeout=60)
            )
            await asyncio.sleep(0.3)
            _ip("link", "set", veth_host, "down")  # the cable is pulled: silence, no FIN
            results = await asyncio.wait_for(run, 60)
            expected = sorted((k, sum(x for x in range(800) if x % 3 == k)) for k in range(3))
            for per_partition in results:
                assert sorted(kv for part in per_partition for kv in part) == expected
            assert [w["id"] for w in engine.workers] == ["host"]
            assert engine.statistics()["recoveries"] >= 1
            # Cut off, the remote worker hears nothing from the driver and exits by itself.
            loop = asyncio.get_running_loop()
            code = await loop.run_in_executor(None, lambda: procs["remote"].wait(timeout=20))
            assert code != 0  # it left because the driver went silent, not by request
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
