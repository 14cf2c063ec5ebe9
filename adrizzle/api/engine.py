"""``Engine``: the driver as an asyncio application sees it (a façade over ``DriverSession``).

One engine owns one listening socket, the connected workers and the runs in progress; all of its
scheduling happens in callbacks and coroutines on the caller's event loop (no threads). Its
settings are one ``EngineConfig``; its state and the internal API that ``Dataset`` and ``Stream``
use live in ``adrizzle.driver.session`` (docs/architecture.md).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from adrizzle.api.dataset import Dataset, generate, job_programs, parallelize
from adrizzle.api.engine_streams import EngineStreams
from adrizzle.api.running import JobResult, collect, results_of
from adrizzle.driver.config import EngineConfig
from adrizzle.driver.session import DriverSession
from adrizzle.errors import AdrizzleError
from adrizzle.version import __version__
from adrizzle.wire import auth

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

    from adrizzle.driver.adaptive import GroupSize
    from adrizzle.plan.shared import Accumulator, Broadcast
    from adrizzle.status.server import StatusServer

Func = Callable[[Any], Any]
T = TypeVar("T")


class Engine(EngineStreams):
    """A driver. ``Engine.local(...)`` for an embedded cluster; ``Engine(listen=...)`` to serve.

    Settings: ``Engine(config=EngineConfig(...))`` or any ``EngineConfig`` field as a keyword
    (``help(adrizzle.EngineConfig)`` documents each); ``engine.config`` is the result.

    >>> async with Engine.local(workers=2, cores=1) as engine:  # doctest: +SKIP
    ...     data = engine.parallelize(range(4000), partitions=4).cache()
    ...     per_job = await engine.run_jobs([data] * 100, sum, group_size=10)
    """

    def __init__(
        self,
        listen: str | None = None,
        token: str | None = None,
        *,
        config: EngineConfig | None = None,
        **settings: Any,
    ) -> None:
        if listen is not None:
            settings["listen"] = listen
        if token is not None:
            settings["token"] = token
        self.config = (config or EngineConfig()).replace(**settings)
        #: The driver's state and internal API (used by Dataset and Stream; not user API).
        self.session = DriverSession(self.config)
        self._status: StatusServer | None = None
        self.streams_made = itertools.count()  # names each stream's checkpoint subdirectory
        self._started = False
        self._closed = False

    @classmethod
    def local(
        cls,
        workers: int = 2,
        cores: int = 1,
        *,
        worker_args: list[str] | None = None,
        **settings: Any,
    ) -> Engine:
        """An engine on loopback with a fresh token and ``workers`` real worker processes.

        ``worker_args`` are extra ``adrizzle-worker`` flags for every local worker (for example
        ``["--shuffle-timeout", "5"]``); the other keyword arguments are ``EngineConfig``
        fields.
        """
        if workers < 1 or cores < 1:
            raise ValueError("a local cluster needs at least one worker with one core")
        settings.setdefault("listen", "127.0.0.1:0")
        settings.setdefault("token", auth.new_token())
        return cls(
            local_workers=workers,
            local_cores=cores,
            local_worker_args=tuple(worker_args or ()),
            **settings,
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> Engine:
        if self._started:
            return self
        self._started = True
        try:
            if self.config.status is not None:
                from adrizzle.status.server import StatusServer  # aiohttp only when asked

                self._status = StatusServer(self.statistics, self.config.status)
                await self._status.start()
            await self.session.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._status is not None:
                await self._status.stop()
        finally:
            await self.session.close()

    def _check_running(self) -> None:
        if not self._started or self._closed:
            raise AdrizzleError("the engine is not running: use 'async with' or await start()")

    async def __aenter__(self) -> Engine:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def address(self) -> str:
        """The driver's listen address, ``host:port`` (the actual port when 0 was asked)."""
        return self.session.address

    @property
    def token(self) -> str:
        """The cluster token workers must present (generated for ``Engine.local``)."""
        return self.session.token

    @property
    def status_url(self) -> str | None:
        """``http://host:port`` of the status server, or None when it is off."""
        return self._status.url if self._status is not None else None

    @property
    def workers(self) -> list[dict[str, Any]]:
        """Connected workers: id, address, cores, pid (and more), ordered by id."""
        return self.session.workers_info()

    async def wait_for_workers(self, n: int, timeout: float | None = 60.0) -> None:
        """Wait until ``n`` workers are connected (``NoWorkersError`` after ``timeout`` s)."""
        await self.session.wait_for_workers(n, timeout)

    # -- datasets (streams: EngineStreams) ------------------------------------------------

    def parallelize(self, data: Iterable[T], partitions: int | None = None) -> Dataset[T]:
        """A dataset of ``data`` split into contiguous partitions, held by the driver and
        shipped once to the slot each partition is pinned to."""
        return parallelize(self.session, data, partitions or self.session.default_partitions())

    def generate(self, func: Callable[[int], Iterable[T]], partitions: int) -> Dataset[T]:
        """A dataset whose partition ``p`` is ``func(p)``, computed on the slot (no shipping)."""
        return generate(self.session, func, partitions)

    # -- shared variables ------------------------------------------------------------------

    def broadcast(self, value: T) -> Broadcast[T]:
        """``value`` pickled once and shipped once to every worker (also to workers that join
        later), cached in its slots: use ``b.value`` inside any function. ``b.unpersist()``
        frees it on the workers (so does dropping every reference to ``b`` on the driver).

        >>> rates = engine.broadcast({"EUR": 1.08, "GBP": 1.27})  # doctest: +SKIP
        >>> usd = prices.map(lambda p: p.amount * rates.value[p.currency])  # doctest: +SKIP
        """
        return self.session.shared.broadcast(value)

    def accumulator(
        self,
        zero: T,
        combine: Callable[[T, T], T] = operator.add,
        *,
        name: str | None = None,
    ) -> Accumulator[T]:
        """A value tasks add to with ``acc.add(x)`` (folded with ``combine``: associative, with
        ``zero`` its identity) and the driver reads as ``acc.value``. Each successful task's
        updates count once: they come back with its job's results and are applied when the
        job is delivered, so ``acc.value`` is final when the call that ran the job returns; a
        task of an attempt dropped after a worker loss (map tasks re-run from lineage too) or
        of a failed job counts nothing, nor does a stream batch replayed after a roll-back.
        ``name``: listed under ``statistics()["accumulators"]``.

        >>> seen = engine.accumulator(0)  # doctest: +SKIP
        >>> await data.map(lambda x: seen.add(1) or x).count()  # doctest: +SKIP
        >>> seen.value  # doctest: +SKIP
        """
        if not callable(combine):
            raise TypeError(f"accumulator(combine=) needs a callable, got {type(combine).__name__}")
        return self.session.shared.accumulator(zero, combine, name)

    async def add_module(self, module_or_path: object) -> None:
        """Make the user's own code importable on every worker's slots, also on workers that
        join later: a module object (its top-level package is shipped when it is inside one),
        a module name, a ``.py`` file, a package directory or a ``.zip`` file. Functions from
        such modules are pickled by reference, so without this a worker that cannot import
        the module fails the group (``SerializationError``, reported by the slot after the
        launch). The archive is made once here and sent once per worker; slots import from
        it (a module already imported in a slot is not reloaded). ``Engine(py_files=[...])``
        ships files at start.

        >>> import my_pipeline_helpers  # doctest: +SKIP
        >>> await engine.add_module(my_pipeline_helpers)  # doctest: +SKIP
        """
        await self.session.add_code(module_or_path)

    # -- jobs ----------------------------------------------------------------------------

    async def run_jobs(
        self,
        datasets: Sequence[Dataset[Any]],
        funcs: Func | Sequence[Func],
        group_size: GroupSize = 1,
        *,
        pre_schedule: bool = True,
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> list[Any]:
        """Run one job per dataset (``func(iterator_of_partition)`` per partition) in groups of
        ``group_size`` micro-batches; return each job's list of per-partition values.

        If a job's user code raises, the other jobs still run to completion, then the first
        ``TaskError`` is raised (or, with ``return_exceptions=True``, stands in its place).
        ``group_size="auto"`` (or an ``AdaptiveGroupSize``) adapts the size per group to the
        measured coordination overhead (see ``statistics()["adaptive_groups"]``). Jobs with
        shuffles are pre-scheduled: reducers are placed with the map tasks and map outputs are
        pushed to them; ``pre_schedule=False`` runs them Spark's way (BSP).
        """
        programs = job_programs(self.session, datasets, funcs)
        self._check_running()
        run = await self.session.start_run(programs, group_size, pre_schedule)
        results, first_error = await collect(self.session, run, timeout)
        if first_error is not None and not return_exceptions:
            raise first_error
        return results

    async def iter_jobs(
        self,
        datasets: Sequence[Dataset[Any]],
        funcs: Func | Sequence[Func],
        group_size: GroupSize = 1,
        *,
        pre_schedule: bool = True,
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[JobResult]:
        """Like ``run_jobs`` but yields ``JobResult(index, values)`` as each micro-batch
        completes, in job order, without waiting for the rest of its group."""
        programs = job_programs(self.session, datasets, funcs)
        self._check_running()
        run = await self.session.start_run(programs, group_size, pre_schedule)
        async for result in results_of(self.session, run, timeout, return_exceptions):
            yield result

    # -- elasticity ----------------------------------------------------------------------

    async def add_workers(self, n: int, timeout: float | None = None) -> list[str]:
        """Start ``n`` more local workers (``Engine.local`` only) and wait until they joined.
        Runs in progress place groups on them from their next group on."""
        return await self.session.add_workers(n, timeout)

    async def remove_worker(self, worker_id: str, timeout: float = 30.0) -> None:
        """Drain ``worker_id`` and let it go: no new groups go to it, its groups in flight
        finish, then it is shut down (a local worker process is reaped)."""
        await self.session.remove_worker(worker_id, timeout)

    # -- monitoring ----------------------------------------------------------------------

    async def wait_settled(self, timeout: float = 10.0) -> bool:
        """Wait until every group launched so far is acknowledged; False after ``timeout`` s.

        A run returns as soon as its last result arrives (results flow per micro-batch), so
        the last groups' ``group_done`` frames may still be on their way: wait for them before
        reading frame counts from ``statistics()``.
        """
        return await self.session.wait_settled(timeout)

    def statistics(self) -> dict[str, Any]:
        """A plain-dict snapshot of driver state (the status server reads only this)."""
        return {
            "version": __version__,
            **self.session.statistics(),
            "accumulators": self.session.shared.named(),
        }


__all__ = ["Engine", "JobResult", "results_of"]
