"""Spawning and reaping the real ``adrizzle-worker`` processes of an embedded local cluster.

The token goes to the children through the environment, never the command line (which other
users can read in ``ps``). ``stop()`` asks nicely (the driver's ``shutdown`` frame and SIGTERM),
then kills; it always reaps, so no worker outlives its engine, even on error or cancellation.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from adrizzle.wire.auth import TOKEN_ENV

if TYPE_CHECKING:
    from adrizzle.wire.tls import TlsConfig


def worker_command() -> list[str]:
    """``adrizzle-worker`` from this interpreter's environment, else ``python -m``."""
    script = Path(sys.executable).with_name("adrizzle-worker")
    if script.exists():
        return [str(script)]
    found = shutil.which("adrizzle-worker")
    if found and Path(found).parent == Path(sys.executable).parent:
        return [found]
    return [sys.executable, "-m", "adrizzle.worker"]


class LocalWorkers:
    def __init__(
        self,
        *,
        driver_address: str,
        token: str,
        log_level: str = "warning",
        tls: TlsConfig | None = None,
    ) -> None:
        self._driver_address = driver_address
        self._token = token
        self._tls = tls
        self._log_level = log_level
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._next = 0

    def spawn(self, n: int, cores: int, extra_args: list[str] | None = None) -> list[str]:
        env = dict(os.environ)
        env[TOKEN_ENV] = self._token
        names = []
        for _ in range(n):
            name = f"local-{self._next}"
            self._next += 1
            cmd = [
                *worker_command(),
                f"tcp://{self._driver_address}",
                "--cores",
                str(cores),
                "--name",
                name,
                "--log-level",
                self._log_level,
                *(self._tls.worker_args() if self._tls is not None else []),
                *(extra_args or []),
            ]
            self.processes[name] = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
            names.append(name)
        return names

    def check_alive(self) -> list[str]:
        """Names of spawned workers that have already exited, with their exit codes."""
        return [
            f"{name} (exit code {proc.returncode})"
            for name, proc in self.processes.items()
            if proc.poll() is not None
        ]

    def pid(self, name: str) -> int | None:
        proc = self.processes.get(name)
        return proc.pid if proc is not None else None

    async def stop(self, grace: float = 3.0) -> None:
        """Wait up to ``grace`` s for workers to exit on their own, SIGTERM, then SIGKILL."""
        try:
            await self._wait_all(grace)
            self._signal_all(signal.SIGTERM)
            await self._wait_all(grace)
        finally:
            self.kill_all()

    async def reap(self, name: str, timeout: float) -> None:
        """Wait for one worker to exit (SIGKILL after ``timeout`` s) and forget it."""
        proc = self.processes.get(name)
        if proc is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            await asyncio.sleep(0.02)
        else:
            proc.kill()
            proc.wait(timeout=5)
        del self.processes[name]

    def kill_all(self) -> None:
        """Synchronous last resort (also used from ``atexit``): SIGKILL and reap everything."""
        self._signal_all(signal.SIGKILL)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - the kernel is stuck
                pass
        self.processes.clear()

    def _signal_all(self, sig: signal.Signals) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:  # pragma: no cover - exited in between
                    pass

    async def _wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(proc.poll() is not None for proc in self.processes.values()):
                return
            await asyncio.sleep(0.02)
