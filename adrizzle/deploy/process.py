"""One ``adrizzle-worker`` child process that a launcher starts, that dies with its parent.

Launchers (Dask, Ray) run each worker as a child of a process the cluster manager owns (a Dask
worker, a Ray actor). The child must not outlive it, even when the manager SIGKILLs it: the
child is started through a tiny trampoline that asks Linux for a parent-death signal
(``prctl(PR_SET_PDEATHSIG, SIGTERM)``, kept across ``exec``) and then execs the worker, so a
dead parent drains the worker (SIGTERM) instead of leaving an orphan. The token goes through
the environment, never the command line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from adrizzle.wire.address import parse_address
from adrizzle.wire.auth import TOKEN_ENV

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

DEFAULT_CONNECT_RETRY = 120.0  # seconds a launched worker keeps dialing a driver not up yet

# Run by ``python -c``: argv = [PARENT_PID, EXECUTABLE, ARG...]. Linux only; elsewhere the
# worker is exec'ed without the parent-death signal (the launcher's stop still reaps it).
_TRAMPOLINE = """\
import ctypes, os, signal, sys
parent = int(sys.argv[1])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != parent:  # the parent died before prctl: no signal will come
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def worker_command() -> list[str]:
    """``adrizzle-worker`` next to this interpreter, else ``python -m adrizzle.worker``."""
    script = Path(sys.executable).with_name("adrizzle-worker")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "adrizzle.worker"]


def reachable_address(address: str, host: str | None = None) -> str:
    """``host:port`` workers can dial for a driver listening on ``address``: a wildcard
    listen host (``0.0.0.0``, ``::``) is replaced by ``host``, else by this host's name."""
    listen_host, port = parse_address(address, 7077)
    try:
        wildcard = ipaddress.ip_address(listen_host).is_unspecified
    except ValueError:
        wildcard = False
    if wildcard or host is not None:
        listen_host = host or socket.gethostname()
    if ":" in listen_host:
        listen_host = f"[{listen_host}]"
    return f"{listen_host}:{port}"


def worker_args(
    driver: str,
    *,
    name: str,
    cores: int,
    connect_retry: float = DEFAULT_CONNECT_RETRY,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``adrizzle-worker`` command line of one launched worker (no token in it)."""
    return [
        *worker_command(),
        f"tcp://{driver.removeprefix('tcp://')}",
        "--cores",
        str(cores),
        "--name",
        name,
        "--connect-retry",
        f"{connect_retry:g}",
        *extra,
    ]


def spawn_worker(
    argv: Sequence[str], token: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (an ``adrizzle-worker`` command line) as a child that gets SIGTERM when
    this process (the thread calling this, strictly: call it from a long-lived one) dies."""
    child_env = dict(os.environ if env is None else env)
    child_env[TOKEN_ENV] = token
    executable = argv[0]
    if not os.path.isabs(executable):
        raise ValueError(f"the worker command must be an absolute path, got {executable!r}")
    return subprocess.Popen(
        [sys.executable, "-c", _TRAMPOLINE, str(os.getpid()), *argv],
        env=child_env,
        stdin=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes], grace: float = 30.0) -> int:
    """SIGTERM (the worker drains: its groups in flight finish), SIGKILL after ``grace`` s;
    always reaped. Returns the exit code."""
    if proc.poll() is None:
        _signal(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL)
    return proc.wait()


async def stop_async(proc: subprocess.Popen[bytes], grace: float = 30.0) -> int:
    """``stop`` without blocking the event loop (polled)."""
    for sig, timeout in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            break
        _signal(proc, sig)
        await _exited(proc, timeout)
    return proc.wait()


async def _exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        await asyncio.sleep(0.02)
    return False


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:  # pragma: no cover - exited in between
        pass
