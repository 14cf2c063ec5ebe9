"""Shared fixtures: both event loops, real local engines, and a check that no worker leaks."""

from __future__ import annotations

import asyncio
import faulthandler
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator

import psutil
import pytest
import uvloop

import adrizzle

# Real Redis, PostgreSQL and Kafka-protocol servers for the connector tests (session fixtures).
pytest_plugins = ("tests.servers",)


def adrizzle_processes() -> dict[int, str]:
    """Every live worker or slot process of this checkout, pid -> command line.

    Only processes run by this environment's interpreter count (their command line names
    ``sys.prefix``): another checkout's test run on the same machine is not ours to judge
    or kill.
    """
    found = {}
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if ("adrizzle-worker" in cmd or "adrizzle.worker" in cmd) and sys.prefix in cmd:
            found[proc.info["pid"]] = cmd
    return found


async def wait_exit(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    """Wait for a worker CLI process to exit (killed after ``timeout`` s): (code, stderr)."""
    loop = asyncio.get_running_loop()
    try:
        _out, err = await loop.run_in_executor(None, lambda: proc.communicate(timeout=timeout))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def wait_gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if p in adrizzle_processes()}
        if alive:
            time.sleep(0.05)
    return alive


# pytest-timeout's signal method raises inside whatever runs when SIGALRM lands; in an event
# loop callback asyncio hands that exception to the loop's exception handler and the test hangs
# on (a CI run once sat in one test for the rest of its 90 minutes). A second, independent
# watchdog: faulthandler's C thread writes every thread's stack to WATCHDOG_LOG and exits the
# process when a test item (setup, call and teardown) outlives its timeout by a margin.
# scripts/test prints that file when pytest fails. One hung test then costs minutes and says
# where it hung, instead of the whole CI budget. (The stacks go to a file because pytest's
# capture owns file descriptor 2 while a test runs.)
WATCHDOG_MARGIN_S = 60.0
WATCHDOG_LOG = ".pytest-watchdog.txt"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    marker = item.get_closest_marker("timeout")
    limit = (
        float(marker.args[0]) if marker and marker.args else float(item.config.getini("timeout"))
    )
    with open(item.config.rootpath / WATCHDOG_LOG, "w") as log:
        log.write(f"watchdog: {item.nodeid} ran past {2 * limit + WATCHDOG_MARGIN_S:g} s\n")
        log.flush()
        faulthandler.dump_traceback_later(2 * limit + WATCHDOG_MARGIN_S, exit=True, file=log)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
    os.unlink(item.config.rootpath / WATCHDOG_LOG)


@pytest.fixture(autouse=True)
def no_leaked_workers() -> Iterator[None]:
    """Fail any test that leaves a worker or slot process behind."""
    before = set(adrizzle_processes())
    yield
    leaked = wait_gone(set(adrizzle_processes()) - before, timeout=10.0)
    if leaked:
        procs = adrizzle_processes()
        for pid in leaked:
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
        pytest.fail(f"test leaked worker processes: {[procs.get(p) for p in leaked]}")


def fast_heartbeat_engine(workers: int = 3) -> adrizzle.Engine:
    """A local engine whose driver and workers declare a silent peer lost after 1 s (0.2 s
    heartbeats), for tests that SIGSTOP a worker."""
    return adrizzle.Engine.local(
        workers=workers,
        cores=1,
        heartbeat_interval=0.2,
        heartbeat_timeout=1.0,
        worker_args=["--heartbeat-interval", "0.2", "--heartbeat-timeout", "1.0"],
    )


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Every async test runs on asyncio's default loop and on uvloop."""
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture
async def engine() -> AsyncIterator[adrizzle.Engine]:
    async with adrizzle.Engine.local(workers=2, cores=1) as eng:
        yield eng


@pytest.fixture
def busy_cpu() -> Iterator[int]:
    """Busy processes on every core (and one more) for the test's duration, always reaped:
    the engine must behave on a loaded machine (CI runners, laptops, shared hosts). Yields
    how many there are."""
    n = (os.cpu_count() or 1) + 1
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(n)
    ]
    try:
        yield n
    finally:
        for proc in spinners:
            proc.kill()
        for proc in spinners:
            proc.wait(timeout=10)
