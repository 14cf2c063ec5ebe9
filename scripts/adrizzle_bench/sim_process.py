"""A process of simulated workers: many ``SimWorker`` connections on one uvloop, steered over
stdin/stdout by ``adrizzle_bench.simworkers`` (one JSON object per line each way).

    ADRIZZLE_AUTH_TOKEN=... python -m adrizzle_bench.sim_process --driver HOST:PORT \\
        --first 0 --count 256 [--cores 1] [--task-cost-us 0] [--spin] [--results batch]

Workers are named ``PREFIX-NNNNN`` (``--first`` on), each dials from its own loopback address
(127.1.x.y, so the driver sees one host per worker and its per-address connection cap does
not apply) unless ``--no-bind``. The process opens one data port (accepting and closing: no
simulated worker pushes to it) and advertises it as every worker's data address.

Out: ``{"event": "ready", "workers": [...]}`` once every worker is authenticated (or
``{"event": "error", "reason": ...}`` and exit 1), ``{"event": "stats", ...}`` when asked,
``{"event": "exit", ...}`` last. In: ``{"cmd": "drop", "worker": NAME}`` (the connection is
aborted, as a crashed worker's), ``{"cmd": "stats"}``, ``{"cmd": "stop"}``. The process exits
on ``stop``, when stdin closes (its parent is gone), or when every worker is gone (the driver
shut them down or went silent for ``--heartbeat-timeout`` s).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import socket
import sys
import time
from typing import Any

import orjson
import uvloop

from adrizzle.errors import ProtocolError
from adrizzle.wire.address import parse_address
from adrizzle.wire.auth import TOKEN_ENV
from adrizzle_bench.sim_plans import Plans
from adrizzle_bench.sim_worker import RESULT_MODES, SimCounters, SimSettings, SimWorker

CONNECTING = 32  # handshakes in flight at once per process (the driver's backlog is 100)
ATTEMPTS = 5  # per worker: a refused or timed-out dial is retried (0.05 s doubling)


def bind_address(index: int) -> str:
    """The loopback address worker ``index`` dials from (127.1.0.1 on)."""
    return f"127.1.{index // 250}.{index % 250 + 1}"


def can_bind(address: str) -> bool:
    """Whether this host may dial from ``address`` (127.1/16 is local on Linux)."""
    try:
        with socket.socket() as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(orjson.dumps({"event": event, **fields}).decode() + "\n")
    sys.stdout.flush()


class SimProcess:
    def __init__(self, args: argparse.Namespace, settings: SimSettings) -> None:
        self.args = args
        self.settings = settings
        self.plans = Plans()
        self.counters = SimCounters()
        self.workers: dict[str, SimWorker] = {}
        self.alive: set[str] = set()
        self.silent_exits = 0
        self.done = asyncio.get_running_loop().create_future()

    def _gone(self, worker: SimWorker) -> None:
        self.alive.discard(worker.name)
        if not self.alive and not self.done.done():
            self.done.set_result("every simulated worker is gone")

    def stats(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self.counters),
            "workers": len(self.workers),
            "connected": len(self.alive),
            "silent_exits": self.silent_exits,
            "programs_unpickled": self.plans.unpickled,
            "shares_derived": self.plans.derived,
            "cpu_s": time.process_time(),
        }

    async def connect_all(self, bind: bool) -> None:
        a = self.args
        gate = asyncio.Semaphore(CONNECTING)

        async def one(index: int) -> None:
            name = f"{a.prefix}-{index:05d}"
            async with gate:
                for attempt in range(ATTEMPTS):
                    worker = SimWorker(
                        name,
                        self.settings,
                        self.plans,
                        self.counters,
                        bind=bind_address(index) if bind else None,
                        on_gone=self._gone,
                    )
                    try:
                        await asyncio.wait_for(worker.connect(), self.settings.handshake_timeout)
                        break
                    except (OSError, TimeoutError, ProtocolError):
                        if attempt == ATTEMPTS - 1:
                            raise
                        await asyncio.sleep(0.05 * 2**attempt)
            self.workers[name] = worker
            self.alive.add(name)

        await asyncio.gather(*(one(i) for i in range(a.first, a.first + a.count)))

    async def heartbeats(self) -> None:
        """A heartbeat from every worker each interval; a worker whose driver was silent for
        the timeout leaves (``SilenceWatch``'s deafness allowance is not modelled here)."""
        interval, timeout = self.args.heartbeat_interval, self.args.heartbeat_timeout
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for name in list(self.alive):
                worker = self.workers[name]
                if now - worker.heard > timeout:
                    self.silent_exits += 1
                    worker.close()
                else:
                    worker.heartbeat()

    async def commands(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                self._finish("stdin closed")
                return
            cmd = orjson.loads(line)
            if cmd.get("cmd") == "drop":
                worker = self.workers.get(cmd.get("worker", ""))
                if worker is not None:
                    worker.drop()
                emit("dropped", worker=cmd.get("worker"), found=worker is not None)
            elif cmd.get("cmd") == "stats":
                emit("stats", **self.stats())
            elif cmd.get("cmd") == "stop":
                self._finish("asked to stop")
                return

    def _finish(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_result(reason)


async def serve_data_port() -> asyncio.Server:
    """A real, listening data port (connections are closed at once: nothing is pushed)."""

    def closing() -> asyncio.Protocol:
        class Close(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                transport.close()

        return Close()

    return await asyncio.get_running_loop().create_server(closing, "127.0.0.1", 0)


async def run(args: argparse.Namespace) -> int:
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        emit("error", reason=f"${TOKEN_ENV} is not set")
        return 1
    host, port = parse_address(args.driver)
    data = await serve_data_port()
    data_port = data.sockets[0].getsockname()[1]
    settings = SimSettings(
        host=host,
        port=port,
        token=token,
        cores=args.cores,
        task_cost_us=args.task_cost_us,
        spin=args.spin,
        results=args.results,
        data_address=f"127.0.0.1:{data_port}",
    )
    proc = SimProcess(args, settings)
    commands = asyncio.ensure_future(proc.commands())
    beats: asyncio.Future[None] | None = None
    code = 0
    try:
        await proc.connect_all(not args.no_bind and can_bind(bind_address(args.first)))
        emit("ready", workers=sorted(proc.workers), pid=os.getpid())
        beats = asyncio.ensure_future(proc.heartbeats())
        reason = await proc.done
    except (OSError, TimeoutError, ProtocolError) as exc:
        emit("error", reason=f"{type(exc).__name__}: {exc}")
        code, reason = 1, "could not connect"
    finally:
        for task in (commands, beats):
            if task is not None:
                task.cancel()
        for worker in proc.workers.values():
            worker.close()
        data.close()
        await asyncio.sleep(0.05)  # let the closes and last frames leave
    emit("exit", reason=reason, **proc.stats())
    return code


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m adrizzle_bench.sim_process")
    p.add_argument("--driver", required=True, help="HOST:PORT of the driver's control port")
    p.add_argument("--first", type=int, default=0, help="index of this process's first worker")
    p.add_argument("--count", type=int, required=True, help="simulated workers to run")
    p.add_argument("--prefix", default="sim", help="worker names: PREFIX-NNNNN")
    p.add_argument("--cores", type=int, default=1, help="slots per simulated worker")
    p.add_argument("--task-cost-us", type=float, default=0.0, help="each task's cost, µs")
    p.add_argument("--spin", action="store_true", help="burn the CPU for the cost (not sleep)")
    p.add_argument("--results", choices=RESULT_MODES, default="slot")
    p.add_argument("--heartbeat-interval", type=float, default=1.0)
    p.add_argument("--heartbeat-timeout", type=float, default=30.0)
    p.add_argument("--no-bind", action="store_true", help="dial from the default address")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return uvloop.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
