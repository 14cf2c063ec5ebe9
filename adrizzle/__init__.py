"""adrizzle: a low-latency, group-scheduled execution engine for asyncio Python.

>>> import adrizzle
>>> async def main() -> None:
...     async with adrizzle.Engine.local(workers=2, cores=1) as engine:
...         data = engine.parallelize(range(4000), partitions=4).cache()
...         print(await engine.run_jobs([data] * 10, sum, group_size=10))
>>> adrizzle.run(main())  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from adrizzle import errors
from adrizzle.api.dataset import Dataset
from adrizzle.api.engine import Engine, JobResult
from adrizzle.api.stream import Stream, StreamBatch
from adrizzle.driver.adaptive import AdaptiveGroupSize
from adrizzle.errors import TaskError
from adrizzle.plan.windows import WindowResult

if TYPE_CHECKING:
    from collections.abc import Coroutine

__version__ = "0.1.0"
__all__ = [
    "AdaptiveGroupSize",
    "Dataset",
    "Engine",
    "JobResult",
    "Stream",
    "StreamBatch",
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
