"""``LocalEngine``: the engine for scripts and notebooks, with methods that block and return.

It runs an ``Engine.local(...)`` on its own event loop in a background thread (uvloop when
installed) and hands out ``SyncDataset``/``SyncStream`` wrappers (``adrizzle.api.sync_dataset``)
whose actions block: ``engine.parallelize(range(10)).map(f).collect()`` returns a list. Every
call hops to the engine's loop and waits there, so it works the same from a plain script and
from code that already runs an event loop in its own thread (Jupyter, ``asyncio.run``): that
loop is blocked for the call's duration, the engine's is not. The async ``Engine`` stays
reachable as ``engine.engine`` and ``engine.run(coroutine)`` runs any coroutine on its loop.

    >>> with adrizzle.LocalEngine(workers=2, cores=1) as engine:  # doctest: +SKIP
    ...     data = engine.parallelize(range(1000), partitions=4)
    ...     print(data.map(lambda x: x * x).take(3))
    ...     print(engine.run_jobs([data] * 3, sum, group_size=3))
"""

from __future__ import annotations

import asyncio
import inspect
import operator
import threading
from typing import TYPE_CHECKING, Any, TypeVar

from adrizzle.api.engine import Engine
from adrizzle.api.sync_dataset import SyncDataset, SyncStream, unwrap
from adrizzle.errors import AdrizzleError

if TYPE_CHECKING:
    import os
    from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
    from types import TracebackType

    from adrizzle.api.running import JobResult
    from adrizzle.driver.adaptive import GroupSize
    from adrizzle.plan.shared import Accumulator, Broadcast

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def _call(func: Callable[[], T]) -> T:
    return func()


class LoopThread:
    """An event loop running in a daemon thread; ``run``/``call`` block the caller until done."""

    def __init__(self) -> None:
        self.loop = _new_loop()
        self.thread = threading.Thread(target=self._serve, name="adrizzle-engine", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def run(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` on the loop; an interrupt (Ctrl-C) cancels it there."""
        if threading.current_thread() is self.thread:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never awaited: say so without a warning
            raise AdrizzleError(
                "a blocking LocalEngine call from the engine's own loop (a sink or callback?): "
                "use the async API there (engine.engine)"
            )
        future = asyncio.run_coroutine_threadsafe(_await(awaitable), self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def call(self, func: Callable[[], T]) -> T:
        """``func()`` on the loop's thread (the driver's state is the loop's alone)."""
        return self.run(_call(func))

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


class LocalEngine:
    """A local cluster (``workers`` processes with ``cores`` slots each) with a blocking API.

    Keyword arguments are ``EngineConfig`` fields (see ``adrizzle.Engine``). Use it as a
    context manager, or call ``start()`` and ``close()``. Methods mirror ``Engine``'s, blocking
    until done: ``run_jobs`` returns the per-job values, ``iter_jobs`` is a plain iterator,
    datasets and streams are ``SyncDataset``/``SyncStream``.
    """

    def __init__(self, workers: int = 2, cores: int = 1, **settings: Any) -> None:
        self._args = (workers, cores, settings)
        self._thread: LoopThread | None = None
        self._engine: Engine | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> LocalEngine:
        if self._thread is not None:
            return self
        workers, cores, settings = self._args
        self._thread = LoopThread()
        try:
            self._engine = self._thread.call(lambda: Engine.local(workers, cores, **settings))
            self._thread.run(self._engine.start())
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            if self._engine is not None:
                thread.run(self._engine.close())
        finally:
            thread.stop()

    def __enter__(self) -> LocalEngine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        """The async ``Engine`` (its coroutines run on this engine's loop: ``run(...)``)."""
        if self._engine is None:
            raise AdrizzleError("the LocalEngine is not running: use 'with' or start()")
        return self._engine

    @property
    def _loop(self) -> LoopThread:
        if self._thread is None:
            raise AdrizzleError("the LocalEngine is not running: use 'with' or start()")
        return self._thread

    def run(self, awaitable: Awaitable[T]) -> T:
        """Await anything on the engine's loop (e.g. ``engine.run(stream.drain(10))``)."""
        return self._loop.run(awaitable)

    # -- datasets, streams, shared variables -----------------------------------------------

    def parallelize(self, data: Iterable[T], partitions: int | None = None) -> SyncDataset[T]:
        return SyncDataset(self._loop.call(lambda: self.engine.parallelize(data, partitions)),
                           self._loop)  # fmt: skip

    def generate(self, func: Callable[[int], Iterable[T]], partitions: int) -> SyncDataset[T]:
        return SyncDataset(self._loop.call(lambda: self.engine.generate(func, partitions)),
                           self._loop)  # fmt: skip

    def stream(
        self,
        source: Callable[[int, int], Iterable[Any]] | Any,
        partitions: int | None = None,
        *,
        batch_interval: float | None = None,
        start: float | None = None,
        batches: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> SyncStream[Any]:
        """See ``Engine.stream``; the stream's ``run()`` is a plain iterator."""
        made = self._loop.call(
            lambda: self.engine.stream(
                source,
                partitions,
                batch_interval=batch_interval,
                start=start,
                batches=batches,
                checkpoint_dir=checkpoint_dir,
                name=name,
            )
        )
        return SyncStream(made, self._loop)

    def broadcast(self, value: T) -> Broadcast[T]:
        return self._loop.call(lambda: self.engine.broadcast(value))

    def accumulator(
        self, zero: T, combine: Callable[[T, T], T] = operator.add, *, name: str | None = None
    ) -> Accumulator[T]:
        return self._loop.call(lambda: self.engine.accumulator(zero, combine, name=name))

    def add_module(self, module_or_path: Any) -> None:
        """See ``Engine.add_module``."""
        self._loop.run(self.engine.add_module(module_or_path))

    # -- jobs ----------------------------------------------------------------------------

    def run_jobs(
        self,
        datasets: Sequence[SyncDataset[Any]],
        funcs: Callable[[Any], Any] | Sequence[Callable[[Any], Any]],
        group_size: GroupSize = 1,
        **options: Any,
    ) -> list[Any]:
        """See ``Engine.run_jobs`` (``pre_schedule``, ``return_exceptions``, ``timeout``)."""
        plain = [unwrap(ds) for ds in datasets]
        return self._loop.run(self.engine.run_jobs(plain, funcs, group_size, **options))

    def iter_jobs(
        self,
        datasets: Sequence[SyncDataset[Any]],
        funcs: Callable[[Any], Any] | Sequence[Callable[[Any], Any]],
        group_size: GroupSize = 1,
        **options: Any,
    ) -> Iterator[JobResult]:
        """See ``Engine.iter_jobs``: each micro-batch as it completes, blocking for the next."""
        plain = [unwrap(ds) for ds in datasets]
        jobs = self.engine.iter_jobs(plain, funcs, group_size, **options)
        loop = self._loop
        try:
            while True:
                try:
                    yield loop.run(anext(jobs))
                except StopAsyncIteration:
                    return
        finally:
            closing = getattr(jobs, "aclose", None)  # an async generator's
            if closing is not None:
                loop.run(closing())

    # -- cluster and monitoring ----------------------------------------------------------

    @property
    def address(self) -> str:
        return self.engine.address

    @property
    def status_url(self) -> str | None:
        return self.engine.status_url

    @property
    def workers(self) -> list[dict[str, Any]]:
        return self._loop.call(lambda: self.engine.workers)

    def add_workers(self, n: int, timeout: float | None = None) -> list[str]:
        return self._loop.run(self.engine.add_workers(n, timeout))

    def remove_worker(self, worker_id: str, timeout: float = 30.0) -> None:
        self._loop.run(self.engine.remove_worker(worker_id, timeout))

    def wait_settled(self, timeout: float = 10.0) -> bool:
        return self._loop.run(self.engine.wait_settled(timeout))

    def statistics(self) -> dict[str, Any]:
        return self._loop.call(self.engine.statistics)
