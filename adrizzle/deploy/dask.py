"""Dask launcher: one ``adrizzle-worker`` per worker of an existing Dask cluster.

``handle = await start_workers(client, engine, cores_per_worker=1)`` registers a Dask
``WorkerPlugin`` whose ``setup`` (on every Dask worker, present and future) starts an
``adrizzle-worker`` as a child of the Dask worker process, and whose ``teardown`` stops it
(SIGTERM: the worker drains, then SIGKILL after ``grace`` s). So the adrizzle worker lives and
dies with its Dask worker: closed or retired by Dask, it drains; SIGKILLed, the parent-death
signal drains it (``adrizzle.deploy.process``); restarted by its nanny, a new one joins.
``await handle.close()`` unregisters the plugin (a teardown on every Dask worker) and returns
once the workers left the engine.

The token travels inside the plugin, through Dask's scheduler to its workers: anyone who can
submit work to that Dask cluster can run code on its workers anyway, but on a network you do
not trust turn on Dask's TLS (``distributed.security``). Needs ``pip install 'adrizzle[dask]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from typing import TYPE_CHECKING, Any

try:
    from distributed import WorkerPlugin
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "adrizzle.deploy.dask needs Dask's distributed: pip install 'adrizzle[dask]'"
    ) from exc

from adrizzle.deploy.process import (
    DEFAULT_CONNECT_RETRY,
    reachable_address,
    spawn_worker,
    stop_async,
    worker_args,
)
from adrizzle.deploy.workers import WorkerSet, new_prefix

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Sequence

    from distributed import Client, Worker

    import adrizzle


class AdrizzleWorkerPlugin(WorkerPlugin):
    """Starts one ``adrizzle-worker`` beside each Dask worker; stops it on teardown."""

    def __init__(
        self,
        *,
        driver: str,
        token: str,
        prefix: str,
        cores: int,
        connect_retry: float,
        extra_args: Sequence[str],
        grace: float,
    ) -> None:
        self.name = prefix  # the plugin's name in Dask (one per launch)
        self.driver = driver
        self.token = token
        self.prefix = prefix
        self.cores = cores
        self.connect_retry = connect_retry
        self.extra_args = list(extra_args)
        self.grace = grace
        self.process: subprocess.Popen[bytes] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "process": None}  # a process stays where it was started

    def worker_name(self, worker: Worker) -> str:
        # Unique even when a nanny restarts the Dask worker under the same name.
        label = re.sub(r"[^A-Za-z0-9_.]+", "_", str(worker.name))[-40:]
        return f"{self.prefix}-{label}-{os.getpid()}"

    async def setup(self, worker: Worker) -> None:
        argv = worker_args(
            self.driver,
            name=self.worker_name(worker),
            cores=self.cores,
            connect_retry=self.connect_retry,
            extra=self.extra_args,
        )
        self.process = spawn_worker(argv, self.token)

    async def teardown(self, worker: Worker) -> None:
        if self.process is not None:
            await stop_async(self.process, self.grace)


async def _call(client: Client, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A ``Client`` method from the engine's loop: awaited on an asynchronous client, in a
    thread on a synchronous one (whose calls block)."""
    if client.asynchronous:
        return await method(*args, **kwargs)
    return await asyncio.to_thread(method, *args, **kwargs)


async def start_workers(
    client: Client,
    engine: adrizzle.Engine,
    cores_per_worker: int = 1,
    *,
    driver_address: str | None = None,
    connect_retry: float = DEFAULT_CONNECT_RETRY,
    worker_args: Sequence[str] = (),
    grace: float = 30.0,
    timeout: float = 120.0,
) -> WorkerSet:
    """Start one ``adrizzle-worker`` (``cores_per_worker`` slots) per Dask worker of
    ``client``'s cluster; return once all joined ``engine``.

    ``driver_address``: ``host:port`` the Dask workers dial (default ``engine.address``, a
    wildcard host replaced by this host's name). ``worker_args``: more ``adrizzle-worker``
    flags. ``grace``: seconds a stopped worker may drain before it is killed. Dask workers
    that join later get an adrizzle worker too, until ``await handle.close()``.
    """
    if cores_per_worker < 1:
        raise ValueError(f"cores_per_worker must be >= 1, got {cores_per_worker}")
    prefix = new_prefix("dask")
    plugin = AdrizzleWorkerPlugin(
        driver=reachable_address(driver_address or engine.address),
        token=engine.token,
        prefix=prefix,
        cores=cores_per_worker,
        connect_retry=connect_retry,
        extra_args=worker_args,
        grace=grace,
    )
    n = len(await _call(client, client.nthreads))

    async def stop(timeout: float) -> None:
        await _call(client, client.unregister_worker_plugin, prefix)

    handle = WorkerSet(engine, prefix, stop, expected=n)
    try:
        await _call(client, client.register_plugin, plugin, name=prefix)
        await handle.wait_for(n, timeout)
    except BaseException:
        with contextlib.suppress(Exception):  # the plugin may not have been registered
            await handle.close()
        raise
    return handle
