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
from typing import TYPE_CHECKING, Any, TypeVar, overload

from adrizzle.api.dataset import Dataset, job_programs, parallelize
from adrizzle.api.running import JobResult, results_of
from adrizzle.driver.config import EngineConfig
from adrizzle.driver.session import DriverSession
from adrizzle.errors import AdrizzleError, TaskError
from adrizzle.plan.program import FunctionSource
from adrizzle.version import __version__
from adrizzle.wire import auth

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence

    from adrizzle.api.stream import Stream
    from adrizzle.connectors.base import Source
    from adrizzle.driver.adaptive import GroupSize
    from adrizzle.plan.shared import Accumulator, Broadcast
    from adrizzle.status.server import StatusServer

Func = Callable[[Any], Any]
T = TypeVar("T")


class Engine:
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
        self._streams_made = itertools.count()  # names each stream's checkpoint subdirectory
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

    # -- datasets and streams --------------------------------------------------------------

    def parallelize(self, data: Iterable[T], partitions: int | None = None) -> Dataset[T]:
        """A dataset of ``data`` split into contiguous partitions, held by the driver and
        shipped once to the slot each partition is pinned to."""
        return parallelize(self.session, data, partitions or self.session.default_partitions())

    def generate(self, func: Callable[[int], Iterable[T]], partitions: int) -> Dataset[T]:
        """A dataset whose partition ``p`` is ``func(p)``, computed on the slot (no shipping)."""
        if not callable(func):
            raise TypeError("generate() needs a callable func(partition) -> iterable")
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        source = FunctionSource(self.session.new_node_id(), func)
        dataset: Dataset[T] = Dataset(self.session, partitions=partitions, source=source)
        return dataset

    @overload
    def stream(
        self,
        source: Callable[[int, int], Iterable[T]],
        partitions: int | None = None,
        *,
        batch_interval: float | None = None,
        start: float | None = None,
        batches: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> Stream[T]: ...

    @overload
    def stream(
        self,
        source: Source,
        partitions: int | None = None,
        *,
        batch_interval: float | None = None,
        start: float | None = None,
        batches: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> Stream[Any]: ...

    def stream(
        self,
        source: Callable[[int, int], Iterable[Any]] | Source,
        partitions: int | None = None,
        *,
        batch_interval: float | None = None,
        start: float | None = None,
        batches: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> Stream[Any]:
        """A stream of micro-batches read on the slots.

        ``source`` is a connector (``adrizzle.connectors``: Redis Streams, Kafka, files, or
        your own ``Source``): partitions come from it, batch ``b`` of partition ``p`` reads
        from where ``b - 1`` ended to the broker's end at read time (at most the source's
        ``max_records_per_batch``), and the range is kept in the stream's offset log so that a
        replay reads the same records; exactly once with a ``Sink`` (``stream.sink``), across
        worker loss and driver restart (same ``name`` and ``checkpoint_dir``). Or ``source``
        is a function: batch ``b``'s partition ``p`` is ``source(b, p)`` (deterministic and
        replayable, like a log read from an offset).

        ``name`` (default ``stream-N``, N: streams made before by this engine) keys the offset
        log, checkpoints and sinks' progress: with ``Engine(checkpoint_dir=D)`` they are kept
        under ``D/name``, so a restarted driver finds them.

        With ``batch_interval`` T, batch ``b`` covers wall-clock time ``[start + bT,
        start + (b+1)T)`` and is read once that interval is over (``start``: epoch seconds,
        default the first run's start). ``batches``: the source's length (default unbounded).
        State (``update_state``, windows) is checkpointed at group boundaries in driver memory,
        or in files in ``checkpoint_dir`` (default: the engine's); after a worker loss it is
        restored and the batches since are replayed. See ``adrizzle.api.stream``.
        """
        from adrizzle.api.stream import Stream

        name, directory = self._stream_place(name, checkpoint_dir)
        return Stream.from_source(
            self.session,
            source,
            partitions,
            batch_interval=batch_interval,
            start=start,
            batches=batches,
            checkpoint_dir=directory,
            name=name,
        )

    def stream_from(
        self,
        items: AsyncIterable[T],
        partitions: int | None = None,
        *,
        batch_interval: float = 0.05,
        max_batch: int = 100_000,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> Stream[T]:
        """A stream of the items of an async iterator (live input): every ``batch_interval``
        seconds (or ``max_batch`` items) what arrived becomes one micro-batch, shipped to the
        slots split into ``partitions``. Ends when the iterator does. A stateful stream keeps
        each batch's items on the driver until the state's checkpoint covers it (for replay
        after a loss); ``checkpoint_dir`` as for ``stream``."""
        from adrizzle.api.stream import Stream

        name, directory = self._stream_place(None, checkpoint_dir)
        return Stream.from_async(
            self.session,
            items,
            partitions or self.session.default_partitions(),
            batch_interval=batch_interval,
            max_batch=max_batch,
            checkpoint_dir=directory,
            name=name,
        )

    def _stream_place(
        self, name: str | None, checkpoint_dir: str | os.PathLike[str] | None
    ) -> tuple[str, str | os.PathLike[str] | None]:
        """A stream's name (``stream-N`` by default, N: the streams made before it) and its own
        directory: the one given, or ``name`` under the engine's, so a driver that builds the
        same streams again resumes each from its own."""
        n = next(self._streams_made)
        name = name or f"stream-{n}"
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"a stream name must be a plain file name, got {name!r}")
        default = self.session.checkpoints.default_dir
        if checkpoint_dir is not None or default is None:
            return name, checkpoint_dir
        return name, default / name

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
        results: list[Any] = []
        first_error: TaskError | None = None
        async for job in self.iter_jobs(
            datasets, funcs, group_size, pre_schedule=pre_schedule, return_exceptions=True,
            timeout=timeout,
        ):  # fmt: skip
            if job.error is not None:
                first_error = first_error or job.error
                results.append(job.error)
            else:
                results.append(job.values)
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
        if not self._started or self._closed:
            raise AdrizzleError("the engine is not running: use 'async with' or await start()")
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
