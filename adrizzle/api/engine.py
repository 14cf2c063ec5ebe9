"""``Engine``: the driver as an asyncio application sees it.

One engine owns one listening socket, the connected workers, and the runs in progress; all of its
scheduling happens in callbacks and coroutines on the caller's event loop (no threads).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import itertools
import logging
import time
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from adrizzle.api.dataset import Dataset, split_evenly
from adrizzle.driver.adaptive import GroupSize, resolve_group_size
from adrizzle.driver.blocks import BlockRegistry
from adrizzle.driver.checkpoint import StateCheckpoints
from adrizzle.driver.cluster import Cluster, WorkerHandle
from adrizzle.driver.execution import RunExecution, StatefulRun, run_waves
from adrizzle.driver.local import LocalWorkers
from adrizzle.driver.metrics import DriverMetrics
from adrizzle.driver.scheduler import RunScheduler, interleave_slots, place_partitions
from adrizzle.errors import AdrizzleError, NoWorkersError, ReplayNeeded, StateOrderError, TaskError
from adrizzle.plan.program import (
    FunctionSource,
    JobProgram,
    ShippedSource,
    state_steps,
)
from adrizzle.wire import auth
from adrizzle.wire.address import is_loopback, parse_address
from adrizzle.wire.channel import FrameCounter
from adrizzle.wire.framing import FrameLimits
from adrizzle.wire.messages import (
    ClusterView,
    Draining,
    Heartbeat,
    Message,
    PeerLost,
    Shutdown,
)
from adrizzle.wire.tls import TlsConfig

if TYPE_CHECKING:
    import os
    from pathlib import Path

    from adrizzle.api.stream import Stream
    from adrizzle.driver.adaptive import GroupTiming
    from adrizzle.driver.scheduler import SlotRef
    from adrizzle.plan.state import StateUpdate
    from adrizzle.status.server import StatusServer

log = logging.getLogger("adrizzle.driver")

Func = Callable[[Any], Any]


@dataclasses.dataclass(frozen=True, slots=True)
class JobResult:
    """One finished micro-batch: its index in the call and its value per partition.

    With ``return_exceptions=True`` a failed job has ``values=None`` and ``error`` set.
    """

    index: int
    values: list[Any] | None
    error: TaskError | None = None


class Engine:
    """A driver. ``Engine.local(...)`` for an embedded cluster; ``Engine(listen=...)`` to serve.

    >>> async with Engine.local(workers=2, cores=1) as engine:  # doctest: +SKIP
    ...     data = engine.parallelize(range(4000), partitions=4).cache()
    ...     per_job = await engine.run_jobs([data] * 100, sum, group_size=10)
    """

    def __init__(
        self,
        listen: str = "127.0.0.1:7077",
        token: str | None = None,
        *,
        token_file: str | None = None,
        window: int = 2,
        max_frame_bytes: int = 1 << 30,
        handshake_timeout: float = 5.0,
        worker_timeout: float = 30.0,
        result_linger: float = 0.0002,
        status: str | None = None,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 5.0,
        stall_timeout: float | None = 60.0,
        no_workers_timeout: float = 30.0,
        max_connections_per_address: int = 64,
        tls_ca_file: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        checkpoint_interval: float = 0.0,
    ) -> None:
        host, port = parse_address(listen, 7077)
        # TLS (both ports, mutual certificates): see adrizzle.wire.tls and SECURITY.md.
        self._tls = TlsConfig.from_options(tls_ca_file, tls_cert, tls_key)
        resolved = auth.resolve_token(token, token_file)
        if resolved is None:
            if not is_loopback(host):
                raise auth.TokenError(
                    f"refusing to listen on {host} without a token: anyone who can reach it "
                    f"could run code on the workers. Set {auth.TOKEN_ENV} or pass token=/"
                    "token_file=."
                )
            resolved = auth.new_token()
        self.token = resolved
        self.window = window
        self.worker_timeout = worker_timeout
        # A slot packs the micro-batches that finish within this many seconds of the first
        # unsent one into one result frame: each result waits at most this long, and a group of
        # many tiny batches costs a few frames instead of one per batch.
        self.result_linger = result_linger
        # A run with groups in flight but no frame for this long re-runs them (a frame was
        # lost while its connection stayed up). Must exceed the longest single task.
        self.stall_timeout = stall_timeout
        # A run that lost every worker waits this long for one to join before failing.
        self.no_workers_timeout = no_workers_timeout
        # Stream state is checkpointed at group boundaries, at most once per this many seconds
        # (0: every group), in driver memory or, with ``checkpoint_dir``, in files there.
        if checkpoint_interval < 0:
            raise ValueError(f"checkpoint_interval must be >= 0, got {checkpoint_interval}")
        self.checkpoint_interval = checkpoint_interval
        self._checkpoints = StateCheckpoints(checkpoint_dir)
        self._streams_made = itertools.count()  # names each stream's checkpoint subdirectory
        self._host, self._port = host, port
        self._next_node = itertools.count()
        self._group_ids = itertools.count()
        self._blocks = BlockRegistry()
        self._routes: dict[int, RunExecution] = {}
        self._runs: set[RunExecution] = set()
        self._metrics = DriverMetrics()
        self._counter = FrameCounter()
        self._cluster = Cluster(
            host=host,
            port=port,
            token=resolved,
            limits=FrameLimits(max_meta=1 << 20, max_payload=max_frame_bytes),
            counter=self._counter,
            on_message=self._on_message,
            on_joined=self._on_joined,
            on_lost=self._on_lost,
            handshake_timeout=handshake_timeout,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            max_connections_per_address=max_connections_per_address,
            tls=self._tls.server_context() if self._tls is not None else None,
        )
        self._status_address = status
        self._status: StatusServer | None = None
        self._local: LocalWorkers | None = None
        self._local_spec: tuple[int, int] | None = None
        self._local_args: list[str] = []
        self._started = False
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def local(
        cls,
        workers: int = 2,
        cores: int = 1,
        *,
        worker_args: list[str] | None = None,
        **kwargs: Any,
    ) -> Engine:
        """An engine on loopback with a fresh token and ``workers`` real worker processes.

        ``worker_args`` are extra ``adrizzle-worker`` flags for every local worker (for example
        ``["--shuffle-timeout", "5"]``); the other keyword arguments go to ``Engine(...)``.
        """
        if workers < 1 or cores < 1:
            raise ValueError("a local cluster needs at least one worker with one core")
        kwargs.setdefault("listen", "127.0.0.1:0")
        kwargs.setdefault("token", auth.new_token())
        engine = cls(**kwargs)
        engine._local_spec = (workers, cores)
        engine._local_args = list(worker_args or [])
        return engine

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> Engine:
        if self._started:
            return self
        self._started = True
        await self._cluster.start()
        if self._status_address is not None:
            from adrizzle.status.server import StatusServer

            self._status = StatusServer(self.statistics, self._status_address)
            try:
                await self._status.start()
            except BaseException:
                await self.close()
                raise
        if self._local_spec is not None:
            n, cores = self._local_spec
            self._local = LocalWorkers(driver_address=self.address, token=self.token, tls=self._tls)
            atexit.register(self._local.kill_all)
            try:
                self._local.spawn(n, cores, self._local_args)
                await self.wait_for_workers(n, timeout=self.worker_timeout)
            except BaseException:
                await self.close()
                raise
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for run in list(self._runs):
            run._fail(AdrizzleError("the engine was closed"))
        if self._checkpoints.writing:  # let the last groups' checkpoints reach the disk
            await self.wait_settled(timeout=2.0)
        await asyncio.to_thread(self._checkpoints.close)
        try:
            if self._status is not None:
                await self._status.stop()
            await self._cluster.close()
        finally:
            if self._local is not None:
                try:
                    await self._local.stop()
                finally:
                    self._local.kill_all()
                    atexit.unregister(self._local.kill_all)

    async def __aenter__(self) -> Engine:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def address(self) -> str:
        """The driver's listen address, ``host:port`` (the actual port when 0 was asked)."""
        return self._cluster.address

    @property
    def status_url(self) -> str | None:
        """``http://host:port`` of the status server, or None when it is off."""
        return self._status.url if self._status is not None else None

    @property
    def workers(self) -> list[dict[str, Any]]:
        """Connected workers: id, address, cores, pid (and more), ordered by id."""
        out = []
        for handle in sorted(self._cluster.workers.values(), key=lambda h: h.id):
            info = handle.info()
            info["local"] = self._local is not None and handle.id in self._local.processes
            out.append(info)
        return out

    async def wait_for_workers(self, n: int, timeout: float | None = 60.0) -> None:
        """Wait until ``n`` workers are connected (``NoWorkersError`` after ``timeout`` s)."""
        local = self._local

        def check() -> None:
            dead = local.check_alive() if local is not None else []
            if dead:
                raise NoWorkersError(f"local workers exited during start-up: {', '.join(dead)}")

        await self._cluster.wait_for_workers(n, timeout, check if local is not None else None)

    # -- datasets ------------------------------------------------------------------------

    def _new_node_id(self) -> int:
        return next(self._next_node)

    def _track_block_owner(self, dataset: Dataset) -> None:
        weakref.finalize(dataset, self._blocks.release, dataset.node_id)

    def _default_partitions(self) -> int:
        return max(2, sum(w.cores for w in self._cluster.workers.values()))

    def parallelize(self, data: Iterable[Any], partitions: int | None = None) -> Dataset:
        """A dataset of ``data`` split into contiguous partitions, held by the driver and
        shipped once to the slot each partition is pinned to."""
        n = partitions or self._default_partitions()
        if n < 1:
            raise ValueError(f"partitions must be >= 1, got {n}")
        source = ShippedSource(self._new_node_id())
        self._blocks.add_source(source.node_id, split_evenly(data, n))
        dataset = Dataset(self, partitions=n, source=source)
        self._track_block_owner(dataset)
        return dataset

    def generate(self, func: Callable[[int], Iterable[Any]], partitions: int) -> Dataset:
        """A dataset whose partition ``p`` is ``func(p)``, computed on the slot (no shipping)."""
        if not callable(func):
            raise TypeError("generate() needs a callable func(partition) -> iterable")
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        return Dataset(
            self, partitions=partitions, source=FunctionSource(self._new_node_id(), func)
        )

    def stream(
        self,
        source: Callable[[int, int], Iterable[Any]],
        partitions: int | None = None,
        *,
        batch_interval: float | None = None,
        start: float | None = None,
        batches: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> Stream:
        """A stream of micro-batches: batch ``b``'s partition ``p`` is ``source(b, p)``, read on
        the slot that owns ``p`` (deterministic and replayable, like a log read from an offset).

        With ``batch_interval`` T, batch ``b`` covers wall-clock time ``[start + bT,
        start + (b+1)T)`` and is read once that interval is over (``start``: epoch seconds,
        default the first run's start). ``batches``: the source's length (default unbounded);
        when a bounded source ends, every open window closes. State (``update_state``,
        windows) is checkpointed at group boundaries in driver memory, or in files in
        ``checkpoint_dir`` (default: the engine's); after a worker loss it is restored and the
        batches since the checkpoint are replayed. See ``adrizzle.api.stream``.
        """
        from adrizzle.api.stream import Stream

        return Stream.from_source(
            self,
            source,
            partitions or self._default_partitions(),
            batch_interval=batch_interval,
            start=start,
            batches=batches,
            checkpoint_dir=self._stream_checkpoint_dir(checkpoint_dir),
        )

    def stream_from(
        self,
        items: AsyncIterable[Any],
        partitions: int | None = None,
        *,
        batch_interval: float = 0.05,
        max_batch: int = 100_000,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> Stream:
        """A stream of the items of an async iterator (live input): every ``batch_interval``
        seconds (or ``max_batch`` items) what arrived becomes one micro-batch, shipped to the
        slots split into ``partitions``. Ends when the iterator does. A stateful stream keeps
        each batch's items on the driver until the state's checkpoint covers it (for replay
        after a loss); ``checkpoint_dir`` as for ``stream``."""
        from adrizzle.api.stream import Stream

        return Stream.from_async(
            self,
            items,
            partitions or self._default_partitions(),
            batch_interval=batch_interval,
            max_batch=max_batch,
            checkpoint_dir=self._stream_checkpoint_dir(checkpoint_dir),
        )

    def _stream_checkpoint_dir(
        self, checkpoint_dir: str | os.PathLike[str] | None
    ) -> str | os.PathLike[str] | None:
        """A stream's own directory, or ``stream-N`` (N: the streams made before it) under
        the engine's: a directory holds one stream's checkpoints, so a driver that builds the
        same streams again resumes each from its own."""
        n = next(self._streams_made)
        if checkpoint_dir is not None or self._checkpoints.default_dir is None:
            return checkpoint_dir
        return self._checkpoints.default_dir / f"stream-{n}"

    # -- jobs ----------------------------------------------------------------------------

    async def run_jobs(
        self,
        datasets: Sequence[Dataset],
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
        measured coordination overhead (DESIGN.md section 6; see ``statistics()``).
        Jobs with shuffles are pre-scheduled: reducers are placed with the map tasks and map
        outputs are pushed to them; ``pre_schedule=False`` runs them Spark's way (BSP).
        """
        results: list[Any] = []
        first_error: TaskError | None = None
        async for job in self.iter_jobs(
            datasets,
            funcs,
            group_size,
            pre_schedule=pre_schedule,
            return_exceptions=True,
            timeout=timeout,
        ):
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
        datasets: Sequence[Dataset],
        funcs: Func | Sequence[Func],
        group_size: GroupSize = 1,
        *,
        pre_schedule: bool = True,
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[JobResult]:
        """Like ``run_jobs`` but yields ``JobResult(index, values)`` as each micro-batch
        completes, in job order, without waiting for the rest of its group."""
        run = await self._start_run(datasets, funcs, group_size, pre_schedule)
        async for result in self._results(run, timeout, return_exceptions):
            yield result

    async def _results(
        self, run: RunExecution, timeout: float | None, return_exceptions: bool
    ) -> AsyncIterator[JobResult]:
        try:
            async for outcome in run.outcomes(timeout):
                if outcome.error is not None and not return_exceptions:
                    raise outcome.error
                yield JobResult(outcome.index, outcome.values, outcome.error)
        finally:
            self._runs.discard(run)
            run.close()

    async def _start_run(
        self,
        datasets: Sequence[Dataset],
        funcs: Func | Sequence[Func],
        group_size: GroupSize,
        pre_schedule: bool,
        checkpoint_dir: Path | None = None,
        start_small: bool = False,
        state_names: dict[int, str] | None = None,
    ) -> RunExecution:
        programs = self._programs(datasets, funcs)
        if not self._started or self._closed:
            raise AdrizzleError("the engine is not running: use 'async with' or await start()")
        group_size, controller = resolve_group_size(group_size)
        if not self._cluster.workers:
            await self.wait_for_workers(1, timeout=self.worker_timeout)
        slots = self._running_slots()
        stateful = None
        steps = state_steps(programs[0]) if programs else {}
        if steps:
            stateful = StatefulRun(
                {sid: parts for sid, (parts, _step) in steps.items()},
                self._checkpoints,
                checkpoint_dir,
                interval=self.checkpoint_interval,
                names={sid: name for sid, name in (state_names or {}).items() if sid in steps},
            )
            while not self._checkpoints.live_on(stateful.expected, slots):
                stateful.restore = await self._plan_restore(steps, slots)
                now = self._running_slots()
                if now == slots:
                    break
                # A worker came or went while we waited: place on the workers there are now
                # (a run placed on a worker already lost would never hear of the loss).
                slots, stateful.restore = now, None
                self._checkpoints.invalidate(stateful.expected)  # that restore is not sent
        stages = programs[0].stages if programs else ()
        partitions = stages[-1].partitions if stages else 0
        scheduler = RunScheduler(
            n_jobs=len(programs),
            partitions=partitions,
            group_size=group_size,
            window=self.window,
            shares=(
                place_partitions(partitions, slots, [s.partitions for s in stages])
                if partitions
                else []
            ),
            group_ids=self._group_ids,
            waves=len(run_waves(programs[0], pre_schedule)) if programs else 1,
            slots=slots,
            next_group_size=controller.next_size if controller is not None else None,
        )
        if start_small:  # after a loss: groups of 1 first, then double back to the size
            scheduler.start_small()
        observe_group = None
        if controller is not None:
            metrics = self._metrics

            def observe_group(timing: GroupTiming) -> None:
                metrics.group_observed(controller.observe(timing))

        run = RunExecution(
            scheduler=scheduler,
            programs=programs,
            slots=slots,
            workers=self._cluster.workers,
            blocks=self._blocks,
            routes=self._routes,
            metrics=self._metrics,
            max_buffered=max(4 * group_size * self.window, 64),
            linger_us=int(self.result_linger * 1e6),
            pre_schedule=pre_schedule,
            stage_partitions=[s.partitions for s in stages],
            no_workers_timeout=self.no_workers_timeout,
            stall_timeout=self.stall_timeout,
            observe_group=observe_group,
            stateful=stateful,
        )
        self._runs.add(run)
        try:
            run.start()
        except BaseException:
            self._runs.discard(run)
            run.close()
            raise
        return run

    def _running_slots(self) -> list[SlotRef]:
        handles = sorted(
            (h for h in self._cluster.workers.values() if h.state == "running"),
            key=lambda h: h.id,
        )
        return interleave_slots((h.id, h.cores) for h in handles)

    async def _plan_restore(
        self, steps: dict[int, tuple[int, StateUpdate]], slots: list[SlotRef]
    ) -> dict[tuple[str, int], bytes]:
        """The state to ship with a stateful run's first group, whose partitions' live state
        is not where the run places them (after a loss, or when workers joined or left).

        It must be the state as of the batch before the run's first: the last checkpoint. If
        that is older, ``ReplayNeeded`` says from which batch the stream must run again."""
        expected = {sid: parts for sid, (parts, _step) in steps.items()}
        (run_first,) = {step.run_first for _parts, step in steps.values()}

        def resume_points() -> set[int]:
            committed = self._checkpoints.committed_batch(expected)
            return {
                steps[sid][1].first_batch if batch is None else batch + 1
                for sid, batch in committed.items()
            }

        def tail_in_flight() -> bool:  # groups of an earlier run of these states, unacked
            return any(
                run._stateful is not None and not run._stateful.expected.keys() - expected
                for run in set(self._routes.values())
            )

        points = resume_points()
        deadline = time.monotonic() + (self.stall_timeout or 60.0)
        while points != {run_first} and tail_in_flight() and time.monotonic() < deadline:
            await asyncio.sleep(0.001)  # their acks commit the checkpoint this run needs
            points = resume_points()
        if len(points) != 1:
            raise StateOrderError(
                f"cannot restore stream state: its states' checkpoints are at different "
                f"micro-batches (would resume at {sorted(points)})"
            )
        (start,) = points
        if start > run_first:
            raise StateOrderError(
                f"stream state is checkpointed at micro-batch {start - 1} but the stream's "
                f"output stopped at {run_first - 1} (a run was stopped while groups were in "
                "flight): the state is ahead of the output and cannot be moved"
            )
        if start < run_first:
            raise ReplayNeeded(
                start,
                f"stream state is checkpointed at micro-batch {start - 1}: micro-batches "
                f"{start}..{run_first - 1} must run again before {run_first}",
            )
        return self._checkpoints.restore_payloads(expected, slots, start - 1)

    def _programs(
        self, datasets: Sequence[Dataset], funcs: Func | Sequence[Func]
    ) -> list[JobProgram]:
        datasets = list(datasets)
        if callable(funcs):
            func_list: list[Func] = [funcs] * len(datasets)
        else:
            func_list = list(funcs)
            if len(func_list) != len(datasets):
                raise ValueError(f"{len(datasets)} datasets but {len(func_list)} functions")
            for f in func_list:
                if not callable(f):
                    raise TypeError(f"job functions must be callable, got {type(f).__name__}")
        shape = None
        programs: list[JobProgram] = []
        cache: dict[tuple[int, int], JobProgram] = {}
        for i, (ds, f) in enumerate(zip(datasets, func_list, strict=True)):
            if not isinstance(ds, Dataset):
                raise TypeError(f"job {i}: expected a Dataset, got {type(ds).__name__}")
            if ds.engine is not self:
                raise ValueError(f"job {i}: the dataset belongs to another engine")
            key = (id(ds), id(f))
            program = cache.get(key)
            if program is None:
                program = cache[key] = ds.plan(f)
                s = program.shape()
                if shape is None:
                    shape = s
                elif s != shape:
                    raise ValueError(
                        f"jobs of one call must share their stage structure: job 0 is {shape}, "
                        f"job {i} is {s}"
                    )
            programs.append(program)
        return programs

    # -- cluster callbacks ---------------------------------------------------------------

    def _on_message(self, worker: WorkerHandle, msg: Message, payload: bytes) -> None:
        if type(msg) is Heartbeat:
            return
        if type(msg) is Draining:
            self._start_drain(worker)
            return
        if type(msg) is PeerLost:
            for active in list(self._runs):
                active.on_link_lost(worker.id, msg.peer)
            return
        run = self._routes.get(msg.group)  # type: ignore[attr-defined]
        if run is not None:
            run.on_message(worker, msg, payload)

    # -- elasticity ----------------------------------------------------------------------

    async def add_workers(self, n: int, timeout: float | None = None) -> list[str]:
        """Start ``n`` more local workers (``Engine.local`` only) and wait until they joined.
        Runs in progress place groups on them from their next group on."""
        if self._local is None or self._local_spec is None:
            raise AdrizzleError("add_workers() needs an Engine.local(...) cluster")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        names = self._local.spawn(n, self._local_spec[1], self._local_args)
        local = self._local

        def check() -> None:
            dead = [d for d in local.check_alive() if d.split(" ")[0] in names]
            if dead:
                raise NoWorkersError(f"new local workers exited during start-up: {dead}")

        deadline = time.monotonic() + (timeout or self.worker_timeout)
        while not all(name in self._cluster.workers for name in names):
            check()
            if time.monotonic() > deadline:
                raise NoWorkersError(f"workers {names} did not join within the timeout")
            await asyncio.sleep(0.02)
        return names

    async def remove_worker(self, worker_id: str, timeout: float = 30.0) -> None:
        """Drain ``worker_id`` and let it go: no new groups go to it, its groups in flight
        finish, then it is shut down (a local worker process is reaped)."""
        handle = self._cluster.workers.get(worker_id)
        if handle is None:
            raise ValueError(f"no connected worker {worker_id!r}")
        self._start_drain(handle)
        deadline = time.monotonic() + timeout
        while worker_id in self._cluster.workers:
            if time.monotonic() > deadline:
                handle.channel.abort(TimeoutError(f"worker {worker_id} did not drain in time"))
                break
            await asyncio.sleep(0.01)
        if self._local is not None:
            await self._local.reap(worker_id, timeout=5.0)

    def _start_drain(self, worker: WorkerHandle) -> None:
        if worker.state != "running":
            return
        worker.state = "draining"
        log.info("worker %s is draining", worker.id)
        for run in list(self._runs):
            run.place_on_live_workers()
        task = asyncio.ensure_future(self._finish_drain(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_drain(self, worker: WorkerHandle) -> None:
        # Polled: groups are acknowledged on the loop, a few ms apart at most.
        while worker.channel.is_open:
            if not any(run.uses_worker(worker.id) for run in self._runs):
                worker.channel.send(Shutdown())
                return
            await asyncio.sleep(0.005)

    def _on_joined(self, worker: WorkerHandle) -> None:
        self._blocks.add_worker(worker.id)
        self._broadcast_cluster_view()
        for run in list(self._runs):
            run.on_worker_joined(worker)

    def _on_lost(self, worker: WorkerHandle) -> None:
        self._blocks.forget_worker(worker.id)
        self._checkpoints.forget_worker(worker.id)
        self._broadcast_cluster_view()
        # Runs the caller finished iterating still route their last groups until acked: they
        # must hear of the loss too, or those acks are awaited forever.
        for run in {*self._runs, *self._routes.values()}:
            run.on_worker_lost(worker)

    def _broadcast_cluster_view(self) -> None:
        """Every worker learns every worker's data address (for shuffle pushes)."""
        handles = sorted(self._cluster.workers.values(), key=lambda h: h.id)
        view = ClusterView(
            workers=[h.id for h in handles],
            data_addresses=[h.data_address or "" for h in handles],
        )
        for handle in handles:
            if handle.channel.is_open:
                handle.channel.send(view)

    # -- monitoring ----------------------------------------------------------------------

    async def wait_settled(self, timeout: float = 10.0) -> bool:
        """Wait until every group launched so far is acknowledged; False after ``timeout`` s.

        A run returns as soon as its last result arrives (results flow per micro-batch), so
        the last groups' ``group_done`` frames may still be on their way: wait for them before
        reading frame counts from ``statistics()``.
        """
        deadline = time.monotonic() + timeout
        while True:
            if not self._routes:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.001)

    def statistics(self) -> dict[str, Any]:
        """A plain-dict snapshot of driver state (the status server reads only this)."""
        from adrizzle import __version__

        frames = self._counter.snapshot()
        stats = self._metrics.snapshot()
        stats.update(
            {
                "version": __version__,
                "time": time.time(),
                "address": self.address,
                # Launched and not yet acknowledged (an aborted attempt is no longer routed).
                "groups_in_flight": len(self._routes),
                "window": self.window,
                "workers": self.workers,
                "workers_joined": self._cluster.joined_total,
                "workers_lost": self._cluster.lost_total,
                "runs_active": len(self._runs),
                "frames_sent": frames["frames_out"],
                "frames_received": frames["frames_in"],
                "bytes_sent": frames["bytes_out"],
                "bytes_received": frames["bytes_in"],
                "blocks": self._blocks.statistics(),
                "checkpoints": self._checkpoints.statistics(),
                "refused_connections": dict(self._cluster.refused),
            }
        )
        return stats
