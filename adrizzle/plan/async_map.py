"""``map_async``: coroutine functions over a partition, on an event loop that lives in the slot.

Each slot process keeps one event loop (made on first use, reused by every later task, so a
client the user's function creates on it can be kept across tasks). A partition's items are
started in order with at most ``concurrency`` calls in flight; results come out in input order,
as soon as each is done and every earlier one was taken. The loop runs only while the task
waits for a result: between items (while later steps consume one) the calls in flight pause.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator

_loop: asyncio.AbstractEventLoop | None = None


def slot_loop() -> asyncio.AbstractEventLoop:
    """This process's event loop for ``map_async`` (made on first use)."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop


async def _call(func: Callable[[Any], Awaitable[Any]], item: Any) -> Any:
    result = func(item)
    if not inspect.isawaitable(result):
        raise TypeError(
            f"map_async() needs a coroutine function; {func!r} returned "
            f"{type(result).__name__}, not an awaitable (use map for plain functions)"
        )
    return await result


def map_async(
    func: Callable[[Any], Awaitable[Any]], concurrency: int, items: Iterable[Any]
) -> Iterator[Any]:
    """``await func(x)`` for each item, at most ``concurrency`` at once, in input order."""
    loop = slot_loop()
    if loop.is_running():
        raise RuntimeError("map_async() cannot run inside a running event loop")
    window: collections.deque[asyncio.Task[Any]] = collections.deque()
    try:
        for item in items:
            window.append(loop.create_task(_call(func, item)))
            if len(window) >= concurrency:
                yield loop.run_until_complete(window.popleft())
        while window:
            yield loop.run_until_complete(window.popleft())
    finally:
        if window:  # a failure or an early stop: cancel what is left, and let it finish
            for task in window:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*window, return_exceptions=True))
