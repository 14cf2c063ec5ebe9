"""Jittered exponential back-off: how a worker keeps dialing a driver that is not up yet.

Launchers (SLURM, Dask, Ray, Kubernetes) start workers and the driver in no particular order;
``adrizzle-worker --connect-retry SECONDS`` then retries an unreachable driver instead of
exiting at once. Only the errors the caller names are retried (an unreachable driver, never a
wrong token), each retry is logged in one info line, and no attempt starts after ``seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

log = logging.getLogger("adrizzle.worker")
T = TypeVar("T")

FIRST_DELAY = 0.1  # seconds before the second attempt (before jitter)
MAX_DELAY = 5.0  # the cap of one delay (before jitter)


def backoff_delays(
    first: float = FIRST_DELAY,
    cap: float = MAX_DELAY,
    rng: Callable[[], float] = random.random,
) -> Iterator[float]:
    """``first``, doubling up to ``cap``, each with equal jitter (between half of it and all
    of it), so that many workers started at once do not dial in lockstep."""
    delay = first
    while True:
        yield delay / 2 + rng() * delay / 2
        delay = min(delay * 2, cap)


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    seconds: float,
    retry_on: tuple[type[Exception], ...],
    *,
    delays: Iterator[float] | None = None,
) -> T:
    """``await attempt()`` until it returns; an exception of ``retry_on`` is retried after the
    next back-off delay while ``seconds`` have not passed since the first attempt (0: never),
    then re-raised. Any other exception propagates at once."""
    deadline = time.monotonic() + seconds
    delays = delays if delays is not None else backoff_delays()
    tries = 1
    while True:
        try:
            return await attempt()
        except retry_on as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            delay = min(next(delays), left)
            log.info("%s; retry %d in %.2f s (%.0f s left)", exc, tries, delay, left)
            tries += 1
            await asyncio.sleep(delay)
