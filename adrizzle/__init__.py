"""adrizzle: a low-latency, group-scheduled execution engine for asyncio Python.

>>> import adrizzle
>>> async def main() -> None:
...     async with adrizzle.Engine.local(workers=2, cores=1) as engine:
...         data = engine.parallelize(range(4000), partitions=4).cache()
...         print(await engine.run_jobs([data] * 10, sum, group_size=10))
>>> adrizzle.run(main())  # doctest: +SKIP

Scripts and notebooks can skip the asyncio part:

>>> with adrizzle.LocalEngine(workers=2, cores=1) as engine:  # doctest: +SKIP
...     print(engine.parallelize(range(10), partitions=2).map(lambda x: x * x).collect())

General layout (docs/architecture.md; imports point down, tests/unit/test_layering.py):

- ``errors``, ``version``: leaves every layer may import.
- ``plan/``: pure code the driver plans with and the slots execute (programs, partitioning,
  stream state and windows).
- ``wire/``: framing, typed messages, authentication, TLS, addresses, liveness (sans-I/O core
  with an asyncio shell).
- ``driver/`` (on plan/ and wire/): configuration, the run state machine and its shell,
  placement, adaptive group size, checkpoints, the cluster, the driver session.
- ``worker/`` (on plan/ and wire/, never driver/): the ``adrizzle-worker`` runtime, data links,
  slot pool and slot processes.
- ``api/`` (on driver/): the ``Engine`` façade, ``Dataset`` and ``Stream``, and the blocking
  ``LocalEngine`` for scripts and notebooks.
- ``status/``: the read-only status server, fed a snapshot callable.

Everything a user needs is re-exported here; the rest is internal.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from adrizzle import errors
from adrizzle.api.dataset import Dataset
from adrizzle.api.engine import Engine, JobResult
from adrizzle.api.stream import Stream, StreamBatch
from adrizzle.api.sync_dataset import SyncDataset, SyncStream
from adrizzle.api.sync_engine import LocalEngine
from adrizzle.driver.adaptive import AdaptiveGroupSize
from adrizzle.driver.config import EngineConfig
from adrizzle.errors import TaskError
from adrizzle.plan.shared import Accumulator, Broadcast
from adrizzle.plan.state import STATE_TIMEOUT
from adrizzle.plan.windows import WindowResult
from adrizzle.version import __version__

if TYPE_CHECKING:
    from collections.abc import Coroutine

__all__ = [
    "STATE_TIMEOUT",
    "Accumulator",
    "AdaptiveGroupSize",
    "Broadcast",
    "Dataset",
    "Engine",
    "EngineConfig",
    "JobResult",
    "LocalEngine",
    "Stream",
    "StreamBatch",
    "SyncDataset",
    "SyncStream",
    "TaskError",
    "WindowResult",
    "__version__",
    "errors",
    "run",
]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on asyncio's default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(main)
    return uvloop.run(main)
