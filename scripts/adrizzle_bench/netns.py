"""Several hosts on one Linux machine: network namespaces on a bridge, a real
``adrizzle-worker`` on each behind a delay proxy; always torn down.

    async with Hosts(3, rtt_ms=2.0) as hosts:          # bridge + 3 namespaces (needs root)
        async with adrizzle.Engine(listen=f"{hosts.driver_ip}:0", token=TOKEN) as engine:
            await hosts.start_workers(engine.address, TOKEN)   # proxies and workers
            await engine.wait_for_workers(3)
            ...
            await hosts.pull_link(1)      # that host's cable: silence, no FIN, no RST
            await hosts.add_host()        # a new namespace, proxy and worker join

Topology (10.232.S.0/24, S picked free at random): the bridge holds 10.232.S.1 in the root
namespace, where the driver listens; host ``i`` is namespace ``adz<tag>-h<i>`` joined to the
bridge by a veth pair, address 10.232.S.(10 + i). In each host a ``delay_proxy`` process
listens on the host's address: port 7077 forwards to the driver, port 7101 to the worker's
data port 7100. The worker dials its own proxy and advertises the proxy's data port
(``--data-advertise``), so every byte between hosts (driver <-> worker, and map outputs pushed
worker -> worker) crosses exactly one proxy hop of ``rtt_ms / 2`` each way: a round trip costs
``rtt_ms``. ``pull_link`` sets the host's bridge-side veth down: its proxy's link to the driver
and to the other hosts goes silent, as a pulled cable does.

Teardown (``close``, also on failure and cancellation): workers are stopped (SIGINT, then
SIGKILL), proxies killed, any process left in a namespace killed, then veths, bridge and
namespaces deleted. Names carry a per-instance tag, so concurrent runs never touch each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from typing import Any

from adrizzle.driver.local import worker_command
from adrizzle.wire.auth import TOKEN_ENV

CONTROL_PORT = 7077  # on each host's address: its proxy to the driver
DATA_PORT = 7100  # the worker's data port
DATA_PROXY_PORT = 7101  # its proxy, advertised to the other workers


class NetnsUnavailable(RuntimeError):
    """This machine (or user) cannot make network namespaces and bridges."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["ip", *args], check=check, capture_output=True, text=True, timeout=15
        )
    except subprocess.CalledProcessError as exc:
        raise NetnsUnavailable(f"ip {' '.join(args)}: {exc.stderr.strip()}") from None


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces are Linux only"
    if shutil.which("ip") is None:
        return "iproute2 (the ip command) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"adzprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _free_subnet() -> int:
    used = _ip("-4", "-o", "addr", "show").stdout
    for _ in range(100):
        s = random.randrange(1, 250)
        if f"10.232.{s}." not in used:
            return s
    raise NetnsUnavailable("no free 10.232.x.0/24 subnet")


@dataclasses.dataclass
class Host:
    """One simulated machine: its namespace, its link, its address and its processes."""

    index: int
    ns: str
    veth: str  # the bridge-side end: set it down to pull this host's cable
    address: str
    worker_name: str
    proxy: subprocess.Popen[bytes] | None = None
    worker: subprocess.Popen[bytes] | None = None


class Hosts:
    """``n`` hosts on a bridge with ``rtt_ms`` of round trip between any two of them (and the
    driver). See the module docstring."""

    def __init__(self, n: int, rtt_ms: float = 0.0, *, log_level: str = "warning") -> None:
        if n < 1 or rtt_ms < 0:
            raise ValueError("Hosts needs n >= 1 and rtt_ms >= 0")
        self.n = n
        self.rtt_ms = rtt_ms
        self.log_level = log_level
        self.tag = f"{os.getpid() % 10000}{random.randrange(100):02d}"
        self.bridge = f"adzb{self.tag}"
        self.subnet = 0
        self.hosts: list[Host] = []
        self._driver: tuple[str, str, list[str]] | None = None  # address, token, worker flags
        self._made_bridge = False

    @property
    def driver_ip(self) -> str:
        return f"10.232.{self.subnet}.1"

    @property
    def workers(self) -> list[str]:
        return [h.worker_name for h in self.hosts]

    async def __aenter__(self) -> Hosts:
        try:
            await asyncio.to_thread(self._make_bridge)
            for _ in range(self.n):
                await asyncio.to_thread(self._make_host)
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the network ---------------------------------------------------------------------

    def _make_bridge(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        self.subnet = _free_subnet()
        _ip("link", "add", "name", self.bridge, "type", "bridge")
        self._made_bridge = True
        _ip("addr", "add", f"{self.driver_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    def _make_host(self) -> Host:
        i = len(self.hosts)
        host = Host(
            index=i,
            ns=f"adz{self.tag}-h{i}",
            veth=f"adz{self.tag}h{i}",
            address=f"10.232.{self.subnet}.{10 + i}",
            worker_name=f"host{i}",
        )
        inside = f"adz{self.tag}n{i}"
        _ip("netns", "add", host.ns)
        self.hosts.append(host)  # from here on, close() removes it
        _ip("link", "add", host.veth, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", host.ns)
        _ip("link", "set", host.veth, "master", self.bridge)
        _ip("link", "set", host.veth, "up")
        _ip("-n", host.ns, "addr", "add", f"{host.address}/24", "dev", inside)
        _ip("-n", host.ns, "link", "set", inside, "up")
        _ip("-n", host.ns, "link", "set", "lo", "up")
        return host

    async def pull_link(self, index: int) -> None:
        """Host ``index``'s cable is pulled: its link goes down, nothing is said."""
        await asyncio.to_thread(_ip, "link", "set", self.hosts[index].veth, "down")

    # -- processes -----------------------------------------------------------------------

    async def start_workers(
        self, driver: str, token: str, worker_args: list[str] | None = None
    ) -> None:
        """A proxy and a worker (1 core) on every host not yet running one; they dial
        ``driver`` (the engine's address: on ``driver_ip``) with ``token``."""
        self._driver = (driver, token, list(worker_args or []))
        idle = [host for host in self.hosts if host.worker is None]
        for host in idle:  # the proxies start side by side (an interpreter each) ...
            self._start_proxy(host)
        for host in idle:  # ... and each worker once its proxy listens
            await self._start_worker(host)

    async def add_host(self) -> Host:
        """A new host joins: namespace, link, proxy and worker (after ``start_workers``)."""
        host = await asyncio.to_thread(self._make_host)
        self._start_proxy(host)
        await self._start_worker(host)
        return host

    def _start_proxy(self, host: Host) -> None:
        assert self._driver is not None, "start_workers() first"
        driver = self._driver[0]
        delay_ms = self.rtt_ms / 2
        host.proxy = subprocess.Popen(
            [
                "ip", "netns", "exec", host.ns, sys.executable, "-m", "adrizzle_bench.delay_proxy",
                "--delay-ms", str(delay_ms),
                "--route", f"{host.address}:{CONTROL_PORT}={driver}",
                "--route", f"{host.address}:{DATA_PROXY_PORT}={host.address}:{DATA_PORT}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    async def _start_worker(self, host: Host) -> None:
        assert host.proxy is not None
        line = await asyncio.to_thread(self._first_line, host.proxy)
        if json.loads(line or "{}").get("event") != "ready":
            raise NetnsUnavailable(f"the delay proxy on {host.ns} did not start: {line!r}")
        self._spawn_worker(host)

    def _spawn_worker(self, host: Host) -> None:
        assert self._driver is not None
        _driver, token, extra = self._driver
        host.worker = subprocess.Popen(
            [
                "ip", "netns", "exec", host.ns, *worker_command(),
                f"{host.address}:{CONTROL_PORT}",
                "--name", host.worker_name,
                "--cores", "1",
                "--data-listen", f"{host.address}:{DATA_PORT}",
                "--data-advertise", f"{host.address}:{DATA_PROXY_PORT}",
                "--connect-retry", "10",
                "--log-level", self.log_level,
                *extra,
            ],
            env={**os.environ, TOKEN_ENV: token},
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    @staticmethod
    def _first_line(proc: subprocess.Popen[bytes]) -> str:
        assert proc.stdout is not None
        return proc.stdout.readline().decode()

    def statuses(self) -> dict[str, Any]:
        """Each host's worker exit code (None: running)."""
        return {h.worker_name: h.worker.poll() if h.worker else None for h in self.hosts}

    async def wait_worker_exit(self, index: int, timeout: float) -> int | None:
        """Host ``index``'s worker's exit code once it exits, None if still running."""
        worker = self.hosts[index].worker
        if worker is None:
            return None
        try:
            return await asyncio.to_thread(worker.wait, timeout)
        except subprocess.TimeoutExpired:
            return None

    # -- teardown ------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop every process, then remove every namespace, veth and the bridge."""
        await asyncio.shield(asyncio.to_thread(self._teardown))

    def _teardown(self) -> None:
        for host in self.hosts:
            _stop(host.worker, signal.SIGINT)
        for host in self.hosts:
            _stop(host.proxy, signal.SIGKILL)
            if host.proxy is not None and host.proxy.stdin is not None:
                host.proxy.stdin.close()
            if host.proxy is not None and host.proxy.stdout is not None:
                host.proxy.stdout.close()
        for host in self.hosts:
            pids = _ip("netns", "pids", host.ns, check=False).stdout.split()
            for pid in pids:  # anything left in our namespace is ours
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("link", "del", host.veth, check=False)
            _ip("netns", "del", host.ns, check=False)
        self.hosts.clear()
        if self._made_bridge:
            _ip("link", "del", self.bridge, check=False)
            self._made_bridge = False


def _stop(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def host_of(address: str) -> str:
    """The IP of a ``host:port`` address (the driver's view of a worker)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    return str(ipaddress.ip_address(host))
