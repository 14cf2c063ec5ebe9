"""Simulated workers that speak the real protocol: hundreds of workers from a few processes.

``SimCluster`` starts a few OS processes (``adrizzle_bench.sim_process``), each running hundreds
of worker connections on uvloop (``adrizzle_bench.sim_worker``), all dialing one real, unchanged
driver (``adrizzle.Engine(listen=..., token=...)``, then ``engine.wait_for_workers(n)``). The
driver's CPU is then its own process's (``time.process_time``): the workers run elsewhere.

What is real, frame for frame:

- one TCP connection per worker from its own loopback address, the real handshake (the cluster
  token's HMAC, a ``Hello`` with role "worker", cores, pid and a data address);
- every driver frame decoded by the real codec (``Connection``/``Channel``/``decode_meta``), but
  ``cluster_view`` (counted only, see below); each ``launch_group`` checked as the runtime
  checks it, and each slot's tasks derived from its placement by
  ``adrizzle.worker.slot_tasks.tasks_for``, the slot's own code;
- per slot, ``batch_result`` frames (meta ``jobs, parts, failed``; payload the pickled flat
  list of each job's values for the slot's result partitions in turn) packed by
  ``slot_results.ResultSender``'s rule (``results="slot"``, the default: finished batches wait
  while the slot has ready work, and go when it runs out or once the first waited the launch's
  linger time; here, at the group's end or the linger time), or one per micro-batch
  (``results="batch"``: what a slot sends when each batch outlasts the linger time);
- one ``group_done`` per worker per group once all its slots finished, with the tasks, busy
  time and pushed map outputs (frames, bytes) a real worker would total;
- heartbeats every interval, and leaving after the driver's silence; ``cancel_groups`` drops
  what is left of those groups (no result, no ``group_done``); ``shutdown`` closes.

What is simulated, and how:

- **No user code runs.** The programs are unpickled (once per distinct blob per process) only
  to plan tasks; a result value is ``sim_plans.sim_value(job, partition)`` (a small int naming
  both), never the job's function, so a run's exact answer is
  ``sim_plans.expected_values(jobs, partitions)``. Shipped source blocks and stream state in a
  launch's payload are length-checked and dropped.
- **Task cost** is 0 (a group is answered at once), or a fixed ``task_cost_us`` per task on a
  virtual clock per slot (other machines' time: frames leave at the first loop tick after their
  due time, libuv's timers tick in milliseconds), or burnt for real (``spin``: the workers of
  a process then run one after another).
- **Slots are not processes.** There is no worker-to-slot socketpair hop and no ``run_tasks``
  frame; a slot is a queue on the worker's loop that runs its groups in launch order.
- **Shuffles are counted, not moved.** A map task "pushes" one empty block per reducer slot
  other than its own (all of them in BSP mode), as ``SlotProcess.run_map_task`` splits them:
  the frames and the bytes of that pickled empty block are counted and reported in
  ``group_done`` (``pushed_blocks``, ``pushed_bytes``), but nothing is sent between workers: a
  reducer does not wait for map outputs, the data port advertised in the hello accepts and
  closes, BSP fetches are not made and ``peer_lost`` never happens. The driver sees the same
  frames either way (pre-scheduled map outputs never pass through it).
- **Not modelled**: stream state and checkpoints (no ``state_checkpoint``), connector
  positions, sinks (``offsets_logged`` is ignored), ``group_failed``, draining, TLS, and the
  loop-deafness allowance of the real worker's silence watch. ``cluster_view`` frames (every
  worker's address, sent to every worker on every join) are counted without being decoded:
  nothing here dials a peer, and decoding them would cost the simulating processes O(workers)
  per join each.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson

import adrizzle
from adrizzle.wire.auth import TOKEN_ENV, new_token
from adrizzle_bench.sim_plans import expected_values, sim_value

__all__ = ["SimCluster", "SimStartError", "expected_values", "sim_value", "simulated_engine"]

PER_PROCESS = 256  # simulated workers per process (by default)
MAX_PROCESSES = 8
# Every join sends every worker a view of all workers: a thousand joins are ~500,000 frames,
# O(workers^3) bytes. Measured on 2 cores: past ~600 workers the driver, busy with them,
# reads heartbeats late and declares healthy workers lost at its default 5 s timeout.
BIG_CLUSTER = 256
BIG_CLUSTER_HEARTBEAT_TIMEOUT = 120.0


class SimStartError(RuntimeError):
    """A process of simulated workers could not join the driver."""


class _Proc:
    """One ``sim_process`` child and its stream of events."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.lock = asyncio.Lock()
        self.final: dict[str, Any] | None = None
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                await self.events.put({"event": "eof"})
                return
            event = orjson.loads(line)
            if event.get("event") == "exit":
                self.final = event
            await self.events.put(event)

    def send(self, cmd: dict[str, Any]) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.is_closing() and self.proc.returncode is None:
            with contextlib.suppress(ConnectionError):  # it exited on its own meanwhile
                stdin.write(orjson.dumps(cmd) + b"\n")

    async def request(self, cmd: dict[str, Any], answer: str, timeout: float) -> dict[str, Any]:
        async with self.lock:
            self.send(cmd)
            while True:
                event = await asyncio.wait_for(self.events.get(), timeout)
                if event["event"] == answer:
                    return event
                if event["event"] in ("eof", "exit"):
                    return self.final or {}


class SimCluster:
    """``workers`` simulated workers in ``processes`` processes dialing the driver at
    ``driver`` (``host:port``) with ``token``. ``async with`` starts them and waits until every
    one is authenticated; leaving the block always stops and reaps every process."""

    def __init__(
        self,
        driver: str,
        token: str,
        workers: int,
        *,
        processes: int | None = None,
        prefix: str = "sim",
        cores: int = 1,
        task_cost_us: float = 0.0,
        spin: bool = False,
        results: str = "slot",
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 30.0,
        ready_timeout: float = 180.0,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.driver = driver
        self.token = token
        self.workers = workers
        self.processes = processes or min(MAX_PROCESSES, max(1, math.ceil(workers / PER_PROCESS)))
        self.prefix = prefix
        self.flags = [
            "--cores",
            str(cores),
            "--task-cost-us",
            str(task_cost_us),
            "--results",
            results,
            "--heartbeat-interval",
            str(heartbeat_interval),
            "--heartbeat-timeout",
            str(heartbeat_timeout),
            *(["--spin"] if spin else []),
        ]
        self.ready_timeout = ready_timeout
        self.names: list[str] = []
        self._owner: dict[str, _Proc] = {}
        self._procs: list[_Proc] = []

    @property
    def pids(self) -> list[int]:
        return [p.proc.pid for p in self._procs]

    async def __aenter__(self) -> SimCluster:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        env = {**os.environ, TOKEN_ENV: self.token}
        share, extra = divmod(self.workers, self.processes)
        first = 0
        for i in range(self.processes):
            count = share + (1 if i < extra else 0)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "adrizzle_bench.sim_process",
                "--driver",
                self.driver,
                "--first",
                str(first),
                "--count",
                str(count),
                "--prefix",
                self.prefix,
                *self.flags,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            self._procs.append(_Proc(proc))
            first += count
        for p in self._procs:
            try:
                event = await asyncio.wait_for(p.events.get(), self.ready_timeout)
            except TimeoutError:
                raise SimStartError(
                    f"simulated workers (pid {p.proc.pid}) not ready within "
                    f"{self.ready_timeout:g} s"
                ) from None
            if event["event"] != "ready":
                raise SimStartError(f"simulated workers (pid {p.proc.pid}) failed: {event}")
            for name in event["workers"]:
                self._owner[name] = p
        self.names = sorted(self._owner)

    async def drop(self, worker: str) -> None:
        """Abort ``worker``'s connection, as if its machine died (nothing more is sent)."""
        event = await self._owner[worker].request({"cmd": "drop", "worker": worker}, "dropped", 10)
        if not event.get("found"):
            raise KeyError(f"no simulated worker {worker!r}")

    async def stats(self) -> dict[str, int]:
        """The processes' counters, summed (``sim_worker.SimCounters`` and more)."""
        total: dict[str, int] = {}
        for p in self._procs:
            event = await p.request({"cmd": "stats"}, "stats", 30)
            for key, value in event.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    total[key] = total.get(key, 0) + value
        return total

    async def wait_exit(self, index: int, timeout: float) -> int:
        """Wait until simulating process ``index`` exits by itself; its exit code.

        Wait through this (the event loop's child watcher) and never reap the process some
        other way (``psutil.Process.wait``, ``os.waitpid``): under uvloop a child reaped behind
        the loop's back is never reported as exited, so a later ``stop`` would wait forever.
        """
        return await asyncio.wait_for(self._procs[index].proc.wait(), timeout)

    async def stop(self, timeout: float = 10.0) -> dict[str, int]:
        """Stop every process (asked, then killed after ``timeout`` s) and reap it; the last
        counters, summed."""
        for p in self._procs:
            p.send({"cmd": "stop"})
        total: dict[str, int] = {}
        for p in self._procs:
            try:
                await asyncio.wait_for(p.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.kill()
                try:
                    await asyncio.wait_for(p.proc.wait(), timeout)
                except TimeoutError:
                    raise SimStartError(
                        f"simulated workers (pid {p.proc.pid}) not reaped {timeout:g} s after "
                        "SIGKILL (reaped behind the event loop's back?)"
                    ) from None
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(p.reader, 5)
            if p.proc.stdin is not None:
                p.proc.stdin.close()
            for key, value in (p.final or {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    total[key] = total.get(key, 0) + value
        self._procs.clear()
        return total


@contextlib.asynccontextmanager
async def simulated_engine(
    workers: int, *, join_timeout: float = 300.0, sim: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[tuple[adrizzle.Engine, SimCluster]]:
    """A real ``Engine`` on loopback (``settings``: ``EngineConfig`` fields) with ``workers``
    simulated workers joined (``sim``: ``SimCluster`` options). On leaving, the engine closes
    first (its ``shutdown`` frames let the workers go cleanly), then every process is reaped.
    Above ``BIG_CLUSTER`` workers both heartbeat timeouts default to
    ``BIG_CLUSTER_HEARTBEAT_TIMEOUT`` (see there)."""
    sim = dict(sim or {})
    if workers > BIG_CLUSTER:
        settings.setdefault("heartbeat_timeout", BIG_CLUSTER_HEARTBEAT_TIMEOUT)
        sim.setdefault("heartbeat_timeout", BIG_CLUSTER_HEARTBEAT_TIMEOUT)
    settings.setdefault("listen", "127.0.0.1:0")
    settings.setdefault("token", new_token())
    engine = adrizzle.Engine(**settings)
    cluster: SimCluster | None = None
    try:
        await engine.start()
        cluster = SimCluster(engine.address, engine.token, workers, **sim)
        await cluster.start()
        await engine.wait_for_workers(workers, timeout=join_timeout)
        yield engine, cluster
    finally:
        try:
            await engine.close()
        finally:
            if cluster is not None:
                await cluster.stop()
