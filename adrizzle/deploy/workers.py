"""``WorkerSet``: the handle a launcher returns for the workers it started for one engine.

The workers are recognised in ``engine.workers`` by their names, which all start with the
set's ``prefix``. ``await handle.close()`` asks the cluster manager to stop them (each worker
drains on SIGTERM: its groups in flight finish) and returns once they left the engine.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING

from adrizzle.errors import NoWorkersError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from adrizzle import Engine


def new_prefix(kind: str) -> str:
    """A fresh name prefix for one launch, e.g. ``dask-3f9a1c``."""
    return f"{kind}-{secrets.token_hex(3)}"


class WorkerSet:
    """Workers a launcher started for ``engine``. ``await close()`` stops them all."""

    def __init__(
        self,
        engine: Engine,
        prefix: str,
        stop: Callable[[float], Awaitable[None]],
        *,
        expected: int = 0,
    ) -> None:
        self.engine = engine
        self.prefix = prefix
        self.expected = expected  # how many the launcher started
        self._stop = stop
        self._closed = False

    def owns(self, worker_id: str) -> bool:
        return worker_id.startswith(self.prefix + "-")

    @property
    def names(self) -> list[str]:
        """The ids of this set's workers connected to the engine now."""
        return [w["id"] for w in self.engine.workers if self.owns(w["id"])]

    def __len__(self) -> int:
        return len(self.names)

    async def wait_for(self, n: int, timeout: float | None = 120.0) -> None:
        """Wait until ``n`` of this set's workers are connected (``NoWorkersError`` after
        ``timeout`` s)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.names) < n:
            if deadline is not None and time.monotonic() > deadline:
                raise NoWorkersError(
                    f"{len(self.names)} of {n} workers {self.prefix}-* joined within {timeout:g} s"
                )
            await asyncio.sleep(0.05)

    async def close(self, timeout: float = 30.0) -> None:
        """Stop every worker of the set through its cluster manager and wait (up to
        ``timeout`` s) until they left the engine. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._stop(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.names:
                return
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> WorkerSet:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<WorkerSet {self.prefix}: {len(self.names)} of {self.expected} connected>"
