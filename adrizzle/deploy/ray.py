"""Ray launcher: ``adrizzle-worker`` processes inside Ray actors, placed by Ray.

``handle = await start_workers(engine, n, num_cpus=1)`` creates ``n`` actors, each reserving
``num_cpus`` CPUs of the Ray cluster (Ray places them), and each starts one
``adrizzle-worker`` with ``num_cpus`` slots as its child; returns once all joined ``engine``.
``await handle.close()`` stops each worker (SIGTERM: it drains, SIGKILL after ``grace`` s),
kills the actors and returns once the workers left the engine. An actor that dies (``ray.kill``,
its node lost) takes its worker along: the parent-death signal drains it
(``adrizzle.deploy.process``), and the engine recovers from the loss.

The token is an argument of the actors' constructor: it goes through Ray's control store,
which anyone who can submit work to that Ray cluster can read (and they can run code on its
nodes anyway). Ray must be initialised first (``ray.init(...)``). Needs
``pip install 'adrizzle[ray]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, cast

try:
    import ray
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("adrizzle.deploy.ray needs Ray: pip install 'adrizzle[ray]'") from exc

from adrizzle.deploy import process
from adrizzle.deploy.workers import WorkerSet, new_prefix
from adrizzle.errors import NoWorkersError

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Sequence

    import adrizzle


class WorkerActor:
    """A Ray actor holding one ``adrizzle-worker`` child process."""

    def __init__(self, argv: list[str], token: str) -> None:
        self.process: subprocess.Popen[bytes] = process.spawn_worker(argv, token)

    def pid(self) -> int:
        return self.process.pid

    def stop(self, grace: float) -> int:
        return process.stop(self.process, grace)


class RayWorkerSet(WorkerSet):
    """A ``WorkerSet`` whose workers live in Ray actors (``actors``, one per worker)."""

    actors: list[Any]


async def start_workers(
    engine: adrizzle.Engine,
    n: int,
    num_cpus: float = 1,
    *,
    cores: int | None = None,
    driver_address: str | None = None,
    connect_retry: float = process.DEFAULT_CONNECT_RETRY,
    worker_args: Sequence[str] = (),
    grace: float = 30.0,
    timeout: float = 120.0,
    **actor_options: Any,
) -> RayWorkerSet:
    """Start ``n`` workers in Ray actors of ``num_cpus`` CPUs each; return once all joined.

    ``cores``: slots per worker (default ``num_cpus``, at least 1). ``driver_address``:
    ``host:port`` the actors dial (default ``engine.address``, a wildcard host replaced by
    this host's name). ``worker_args``: more ``adrizzle-worker`` flags. ``actor_options`` go
    to Ray's ``.options(...)`` (``resources``, ``scheduling_strategy``, ...).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    prefix = new_prefix("ray")
    driver = process.reachable_address(driver_address or engine.address)
    slots = cores if cores is not None else max(1, int(num_cpus))
    actor_class: Any = ray.remote(WorkerActor).options(num_cpus=num_cpus, **actor_options)
    actors: list[Any] = [
        actor_class.remote(
            process.worker_args(
                driver,
                name=f"{prefix}-{i}",
                cores=slots,
                connect_retry=connect_retry,
                extra=worker_args,
            ),
            engine.token,
        )
        for i in range(n)
    ]

    constructed: set[int] = set()  # actors Ray placed (one not placed would never answer)

    async def constructed_pid(i: int) -> None:
        await actors[i].pid.remote()
        constructed.add(i)

    async def stop(timeout: float) -> None:
        stops = [actors[i].stop.remote(grace) for i in sorted(constructed)]
        with contextlib.suppress(TimeoutError):  # dead actors raise: gathered, ignored
            await asyncio.wait_for(asyncio.gather(*stops, return_exceptions=True), grace + 5)
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)

    handle = RayWorkerSet(engine, prefix, stop, expected=n)
    handle.actors = actors
    deadline = time.monotonic() + timeout
    try:  # the actors are constructed once Ray found room for them (num_cpus each)
        await asyncio.wait_for(asyncio.gather(*map(constructed_pid, range(n))), timeout)
        await handle.wait_for(n, max(0.0, deadline - time.monotonic()))
    except TimeoutError:
        free = cast("Any", ray).available_resources()  # untyped in Ray
        await handle.close()
        raise NoWorkersError(
            f"Ray placed {len(constructed)} of {n} actors of {num_cpus:g} CPUs within "
            f"{timeout:g} s (free then: {free})"
        ) from None
    except BaseException:
        await handle.close()
        raise
    return handle
