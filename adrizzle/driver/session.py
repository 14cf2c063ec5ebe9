"""``DriverSession``: what one engine holds, and the internal API the public objects use.

``Engine`` (the façade in ``adrizzle.api.engine``), ``Dataset`` and ``Stream`` reach the driver
only through these methods and attributes (docs/architecture.md, "Layers"):

- shared: ``shared`` (broadcast values, user code, accumulators: ``SharedVariables``);
- datasets: ``new_node_id()``, ``add_source(node_id, partitions)``, ``release_with(owner,
  node_id)`` (drop a node's blocks on the slots and its checkpoints once ``owner`` is
  collected), ``default_partitions()``;
- runs: ``await start_run(programs, group_size, ...)`` -> ``RunExecution`` and
  ``run.outcomes(timeout)``; ``checkpoints`` (``StateCheckpoints``, stream state and resume);
- cluster: ``workers_info()``, ``await wait_for_workers(n)``, ``await add_workers(n)``, ``await
  remove_worker(id)``, ``local`` (the local worker processes of ``Engine.local``, or None);
- monitoring: ``statistics()``, ``await wait_settled()``.

All of it runs on the caller's event loop (no threads but the checkpoint file writer).
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import time
import weakref
from typing import TYPE_CHECKING, Any

from adrizzle.driver.adaptive import resolve_group_size
from adrizzle.driver.blocks import BlockRegistry
from adrizzle.driver.checkpoint import StateCheckpoints
from adrizzle.driver.cluster import Cluster, WorkerHandle
from adrizzle.driver.code import archive_of
from adrizzle.driver.execution import OffsetRun, RunExecution, StatefulRun
from adrizzle.driver.jobs import StatePolicy
from adrizzle.driver.launch import run_waves
from adrizzle.driver.local import LocalWorkers
from adrizzle.driver.metrics import DriverMetrics
from adrizzle.driver.offset_log import OffsetLog
from adrizzle.driver.placement import interleave_slots
from adrizzle.driver.restore import plan_restore
from adrizzle.driver.run_state import RunScheduler
from adrizzle.driver.shared import SharedVariables
from adrizzle.errors import AdrizzleError, NoWorkersError
from adrizzle.plan.program import state_steps
from adrizzle.wire import auth
from adrizzle.wire.address import is_loopback, parse_address
from adrizzle.wire.channel import FrameCounter
from adrizzle.wire.framing import FrameLimits
from adrizzle.wire.messages import ClusterView, Draining, Heartbeat, Message, PeerLost, Shutdown
from adrizzle.wire.tls import TlsConfig

if TYPE_CHECKING:
    from pathlib import Path

    from adrizzle.driver.adaptive import GroupSize
    from adrizzle.driver.config import EngineConfig
    from adrizzle.driver.placement import SlotRef
    from adrizzle.plan.program import JobProgram

log = logging.getLogger("adrizzle.driver")


class DriverSession:
    """The driver of one engine: its cluster, runs, blocks, checkpoints and metrics."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        host, port = parse_address(config.listen, 7077)
        self.tls = TlsConfig.from_options(config.tls_ca_file, config.tls_cert, config.tls_key)
        token = auth.resolve_token(config.token, config.token_file)
        if token is None:
            if not is_loopback(host):
                raise auth.TokenError(
                    f"refusing to listen on {host} without a token: anyone who can reach it "
                    f"could run code on the workers. Set {auth.TOKEN_ENV} or pass token=/"
                    "token_file=."
                )
            token = auth.new_token()
        self.token = token
        self.checkpoints = StateCheckpoints(config.checkpoint_dir)
        self.blocks = BlockRegistry()
        # Broadcast values, user code and accumulators (shipped to each worker once).
        self.shared = SharedVariables(self.new_node_id, lambda: list(self.cluster.workers.values()))
        self.metrics = DriverMetrics()
        self.frames = FrameCounter()
        self.runs: set[RunExecution] = set()
        # group -> the run it belongs to, while it is in flight (frames are routed by group)
        self.routes: dict[int, RunExecution] = {}
        self.local: LocalWorkers | None = None
        # Connector streams: their offset logs by stream name, and a signal per log that more
        # of it is durable (stream runs wait on it before delivering a batch).
        self.offset_logs: dict[str, OffsetLog] = {}
        self._logged: dict[str, asyncio.Event] = {}
        self._commits: dict[int, tuple[Any, dict[int, Any] | None]] = {}  # id(source) -> state
        self._node_ids = itertools.count()
        self._group_ids = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self.cluster = Cluster(
            host=host,
            port=port,
            token=token,
            limits=FrameLimits(max_meta=1 << 20, max_payload=config.max_frame_bytes),
            counter=self.frames,
            on_message=self._on_message,
            on_joined=self._on_joined,
            on_lost=self._on_lost,
            handshake_timeout=config.handshake_timeout,
            heartbeat_interval=config.heartbeat_interval,
            heartbeat_timeout=config.heartbeat_timeout,
            max_connections_per_address=config.max_connections_per_address,
            tls=self.tls.server_context() if self.tls is not None else None,
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, then start the local workers (if any) and wait until they joined."""
        for path in self.config.py_files:  # every worker gets them when it joins
            await self.add_code(path)
        await self.cluster.start()
        n = self.config.local_workers
        if n:
            self.local = LocalWorkers(driver_address=self.address, token=self.token, tls=self.tls)
            atexit.register(self.local.kill_all)
            self.local.spawn(n, self.config.local_cores, list(self.config.local_worker_args))
            await self.wait_for_workers(n, timeout=self.config.worker_timeout)

    async def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        for run in list(self.runs):
            run.fail(AdrizzleError("the engine was closed"))
        if self.checkpoints.writing:  # let the last groups' checkpoints reach the disk
            await self.wait_settled(timeout=2.0)
        await asyncio.to_thread(self.checkpoints.close)
        for offsets in self.offset_logs.values():
            await asyncio.to_thread(offsets.close)
        try:
            await self.cluster.close()
        finally:
            if self.local is not None:
                try:
                    await self.local.stop()
                finally:
                    self.local.kill_all()
                    atexit.unregister(self.local.kill_all)

    @property
    def address(self) -> str:
        return self.cluster.address

    # -- datasets ------------------------------------------------------------------------

    def new_node_id(self) -> int:
        return next(self._node_ids)

    def add_source(self, node_id: int, partitions: list[list[Any]]) -> None:
        """Partitions held here and shipped once to the slot each is pinned to."""
        self.blocks.add_source(node_id, partitions)

    def release_with(self, owner: object, node_id: int) -> None:
        """Once ``owner`` is collected, the slots drop ``node_id``'s blocks and state (told
        with a later launch) and the driver its source data and checkpoints."""
        weakref.finalize(owner, self.blocks.release, node_id)
        weakref.finalize(owner, self.checkpoints.release, node_id)

    async def add_code(self, module_or_path: object) -> str:
        """Ship a module, package or zip file to every worker's slots (``driver/code.py``);
        returns the archive's name."""
        name, archive = await asyncio.to_thread(archive_of, module_or_path)
        self.shared.add_files(name, archive)
        return name

    def default_partitions(self) -> int:
        return max(2, sum(w.cores for w in self.cluster.workers.values()))

    # -- runs ----------------------------------------------------------------------------

    async def start_run(
        self,
        programs: list[JobProgram],
        group_size: GroupSize,
        pre_schedule: bool = True,
        *,
        checkpoint_dir: Path | None = None,
        start_small: bool = False,
        state_names: dict[int, str] | None = None,
        offsets: OffsetRun | None = None,
        sources: int = 0,
    ) -> RunExecution:
        """Start running ``programs`` (one per job, one stage shape); iterate the returned
        run's ``outcomes()`` for the results. A run with stream state restores it first where
        its placement needs it (``ReplayNeeded`` when the state is older than the run)."""
        if self.closed or not self.cluster.address:
            raise AdrizzleError("the engine is not running: use 'async with' or await start()")
        size, controller = resolve_group_size(group_size)
        if not self.cluster.workers:
            await self.wait_for_workers(1, timeout=self.config.worker_timeout)
        slots = self.running_slots()
        stateful = None
        steps = state_steps(programs[0]) if programs else {}
        if steps:
            stateful = StatefulRun(
                {sid: parts for sid, (parts, _step) in steps.items()},
                self.checkpoints,
                checkpoint_dir,
                names={sid: name for sid, name in (state_names or {}).items() if sid in steps},
            )
            while not self.checkpoints.live_on(stateful.expected, slots):
                stateful.restore = await plan_restore(self, steps, slots)
                now = self.running_slots()
                if now == slots:
                    break
                # A worker came or went while we waited: place on the workers there are now
                # (a run placed on a worker already lost would never hear of the loss).
                slots, stateful.restore = now, None
                self.checkpoints.invalidate(stateful.expected)  # that restore is not sent
        stages = programs[0].stages if programs else ()
        scheduler = RunScheduler(
            n_jobs=len(programs),
            partitions=stages[-1].partitions if stages else 0,
            group_size=size,
            window=self.config.window,
            slots=slots,
            group_ids=self._group_ids,
            stage_partitions=tuple(s.partitions for s in stages),
            waves=len(run_waves(programs[0], pre_schedule)) if programs else 1,
            controller=controller,
            stateful=(
                StatePolicy(
                    self.config.checkpoint_interval,
                    stateful is not None and stateful.restore is not None,
                    checkpoints=stateful is not None,
                )
                if stateful is not None or offsets is not None
                else None
            ),
            sources=sources if offsets is not None else 0,
            max_buffered=max(4 * size * self.config.window, 64),
            no_workers_timeout=self.config.no_workers_timeout,
            start_small=start_small,
        )
        run = RunExecution(
            scheduler=scheduler,
            programs=programs,
            workers=self.cluster.workers,
            running_slots=self.running_slots,
            blocks=self.blocks,
            routes=self.routes,
            metrics=self.metrics,
            linger_us=int(self.config.result_linger * 1e6),
            pre_schedule=pre_schedule,
            stall_timeout=self.config.stall_timeout,
            stateful=stateful,
            offsets=offsets,
        )
        self.runs.add(run)
        try:
            run.start()
        except BaseException:
            self.runs.discard(run)
            run.close()
            raise
        return run

    # -- connector streams ---------------------------------------------------------------

    def offset_log(self, stream: str, directory: Path | None) -> OffsetLog:
        """The offset log of ``stream`` (made once; with ``directory``, kept in a file there
        and resumed from an earlier driver's)."""
        log_ = self.offset_logs.get(stream)
        if log_ is None:
            loop = asyncio.get_running_loop()

            def notify() -> None:  # from the log's writer thread, after an fsync
                try:
                    loop.call_soon_threadsafe(self._offsets_durable, stream)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    pass

            log_ = self.offset_logs[stream] = OffsetLog(stream, directory, notify)
            self._logged[stream] = asyncio.Event()
        return log_

    def _offsets_durable(self, stream: str) -> None:
        for run in {*self.runs, *self.routes.values()}:
            if run.offsets is not None and run.offsets.log.stream == stream:
                run.offsets_durable()
        self._logged[stream].set()

    async def wait_logged(self, stream: str, batch: int) -> None:
        """Until ``batch`` of ``stream`` is safe in its offset log (delivery waits for it)."""
        offsets = self.offset_logs[stream]
        event = self._logged[stream]
        while offsets.drain() < batch:
            event.clear()
            if offsets.drain() >= batch:
                return
            await event.wait()

    def commit_source(self, source: Any, ends: dict[int, Any]) -> None:
        """Tell ``source`` (off the loop) that records up to ``ends`` will never be replayed;
        advisory, so one commit runs at a time per source and a newer one replaces a waiting
        one. A failure is logged, not raised."""
        key = id(source)
        if key in self._commits:
            self._commits[key] = (source, ends)  # runs after the one in flight
            return
        self._commits[key] = (source, None)
        task = asyncio.ensure_future(self._commit_source(key, source, ends))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _commit_source(self, key: int, source: Any, ends: dict[int, Any]) -> None:
        pending: dict[int, Any] | None = ends
        while pending is not None:
            try:
                await asyncio.to_thread(_commit_all, source, pending)
            except Exception as exc:
                log.warning("cannot commit %s's positions: %s", source.name, exc)
            _source, pending = self._commits.get(key, (source, None))
            self._commits[key] = (source, None)
        del self._commits[key]

    def finished(self, run: RunExecution) -> None:
        """The caller is done with ``run`` (its groups in flight stay routed until acked)."""
        self.runs.discard(run)
        run.close()

    def running_slots(self) -> list[SlotRef]:
        """The slots of the workers that take new groups, interleaved across workers."""
        handles = sorted(
            (h for h in self.cluster.workers.values() if h.state == "running"),
            key=lambda h: h.id,
        )
        return interleave_slots((h.id, h.cores) for h in handles)

    # -- the cluster ---------------------------------------------------------------------

    def _on_message(self, worker: WorkerHandle, msg: Message, payload: bytes) -> None:
        if type(msg) is Heartbeat:
            return
        if type(msg) is Draining:
            self._start_drain(worker)
            return
        if type(msg) is PeerLost:
            for active in list(self.runs):
                active.on_link_lost(worker.id, msg.peer)
            return
        run = self.routes.get(msg.group)  # type: ignore[attr-defined]
        if run is not None:
            run.on_message(worker, msg, payload)

    def _on_joined(self, worker: WorkerHandle) -> None:
        self.shared.joined(worker)  # before any launch can reach it
        self.blocks.add_worker(worker.id)
        self._broadcast_cluster_view()
        for run in list(self.runs):
            run.on_placement_changed()

    def _on_lost(self, worker: WorkerHandle) -> None:
        self.blocks.forget_worker(worker.id)
        self.checkpoints.forget_worker(worker.id)
        self._broadcast_cluster_view()
        # Runs the caller finished iterating still route their last groups until acked: they
        # must hear of the loss too, or those acks are awaited forever.
        for run in {*self.runs, *self.routes.values()}:
            run.on_worker_lost(worker.id)

    def _broadcast_cluster_view(self) -> None:
        """Every worker learns every worker's data address (for shuffle pushes)."""
        handles = sorted(self.cluster.workers.values(), key=lambda h: h.id)
        view = ClusterView(
            workers=[h.id for h in handles],
            data_addresses=[h.data_address or "" for h in handles],
        )
        for handle in handles:
            if handle.channel.is_open:
                handle.channel.send(view)

    def workers_info(self) -> list[dict[str, Any]]:
        """Connected workers: id, address, cores, pid (and more), ordered by id."""
        out = []
        for handle in sorted(self.cluster.workers.values(), key=lambda h: h.id):
            info = handle.info()
            info["local"] = self.local is not None and handle.id in self.local.processes
            out.append(info)
        return out

    async def wait_for_workers(self, n: int, timeout: float | None = 60.0) -> None:
        """Wait until ``n`` workers are connected (``NoWorkersError`` after ``timeout`` s)."""
        local = self.local

        def check() -> None:
            dead = local.check_alive() if local is not None else []
            if dead:
                raise NoWorkersError(f"local workers exited during start-up: {', '.join(dead)}")

        await self.cluster.wait_for_workers(n, timeout, check if local is not None else None)

    async def add_workers(self, n: int, timeout: float | None = None) -> list[str]:
        """Start ``n`` more local workers and wait until they joined."""
        if self.local is None:
            raise AdrizzleError("add_workers() needs an Engine.local(...) cluster")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        local = self.local
        names = local.spawn(n, self.config.local_cores, list(self.config.local_worker_args))
        deadline = time.monotonic() + (timeout or self.config.worker_timeout)
        while not all(name in self.cluster.workers for name in names):
            dead = [d for d in local.check_alive() if d.split(" ")[0] in names]
            if dead:
                raise NoWorkersError(f"new local workers exited during start-up: {dead}")
            if time.monotonic() > deadline:
                raise NoWorkersError(f"workers {names} did not join within the timeout")
            await asyncio.sleep(0.02)
        return names

    async def remove_worker(self, worker_id: str, timeout: float = 30.0) -> None:
        """Drain ``worker_id``: no new groups go to it, its groups in flight finish, then it
        is shut down (a local worker process is reaped)."""
        handle = self.cluster.workers.get(worker_id)
        if handle is None:
            raise ValueError(f"no connected worker {worker_id!r}")
        self._start_drain(handle)
        deadline = time.monotonic() + timeout
        while worker_id in self.cluster.workers:
            if time.monotonic() > deadline:
                handle.channel.abort(TimeoutError(f"worker {worker_id} did not drain in time"))
                break
            await asyncio.sleep(0.01)
        if self.local is not None:
            await self.local.reap(worker_id, timeout=5.0)

    def _start_drain(self, worker: WorkerHandle) -> None:
        if worker.state != "running":
            return
        worker.state = "draining"
        log.info("worker %s is draining", worker.id)
        for run in list(self.runs):
            run.on_placement_changed()
        task = asyncio.ensure_future(self._finish_drain(worker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_drain(self, worker: WorkerHandle) -> None:
        # Polled: groups are acknowledged on the loop, a few ms apart at most.
        while worker.channel.is_open:
            if not any(run.uses_worker(worker.id) for run in self.runs):
                worker.channel.send(Shutdown())
                return
            await asyncio.sleep(0.005)

    # -- monitoring ----------------------------------------------------------------------

    async def wait_settled(self, timeout: float = 10.0) -> bool:
        """Wait until every group launched so far is acknowledged; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.routes:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.001)
        return True

    def statistics(self) -> dict[str, Any]:
        """A plain-dict snapshot of driver state (the status server reads only this)."""
        frames = self.frames.snapshot()
        stats = self.metrics.snapshot()
        stats.update(
            {
                "time": time.time(),
                "address": self.address,
                # Launched and not yet acknowledged (an aborted attempt is no longer routed).
                "groups_in_flight": len(self.routes),
                "window": self.config.window,
                "workers": self.workers_info(),
                "workers_joined": self.cluster.joined_total,
                "workers_lost": self.cluster.lost_total,
                "runs_active": len(self.runs),
                "frames_sent": frames["frames_out"],
                "frames_received": frames["frames_in"],
                "bytes_sent": frames["bytes_out"],
                "bytes_received": frames["bytes_in"],
                "blocks": self.blocks.statistics(),
                "shared": self.shared.statistics(),
                "late_values": self.shared.late_values(),
                "checkpoints": self.checkpoints.statistics(),
                "refused_connections": dict(self.cluster.refused),
                "driver_deaf_s": self.cluster.deaf_statistics(),
            }
        )
        return stats


def _commit_all(source: Any, ends: dict[int, Any]) -> None:
    for partition, end in ends.items():
        source.commit(partition, end)
