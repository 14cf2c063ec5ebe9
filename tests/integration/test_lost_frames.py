"""Frames lost while the connection stays up, and connections cut mid-stream.

A real TCP proxy sits between a real ``adrizzle-worker`` and the driver. It forwards bytes and
parses frames (the ``!II`` header and the orjson meta) so it can drop one chosen frame by
type, the way a buggy middlebox or a half-failed NIC would. The run must still produce the
exact answer (the driver's stall timeout re-runs what the lost frame held up), or fail with a
clear error, never hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator

import orjson
import pytest

import adrizzle
from adrizzle.driver.local import worker_command
from adrizzle.wire.framing import HEADER, HEADER_SIZE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

TOKEN = "lost-frames-test-token"
P, K = 4, 100
EXPECTED = [sum(range(p * K, (p + 1) * K)) for p in range(P)]


class FrameDroppingProxy:
    """Forwards one worker's control connection; drops the ``nth`` frame of type ``tag``
    flowing in direction ``to`` ("worker" or "driver")."""

    def __init__(self, driver_port: int, tag: str, to: str, nth: int = 1) -> None:
        self.driver_port = driver_port
        self.tag, self.to, self.nth = tag, to, nth
        self.seen = 0
        self.dropped: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, w_reader: asyncio.StreamReader, w_writer: asyncio.StreamWriter) -> None:
        d_reader, d_writer = await asyncio.open_connection("127.0.0.1", self.driver_port)
        await asyncio.gather(
            self._pump(w_reader, d_writer, "driver"),
            self._pump(d_reader, w_writer, "worker"),
            return_exceptions=True,
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to: str
    ) -> None:
        try:
            while True:
                header = await reader.readexactly(HEADER_SIZE)
                meta_len, payload_len = HEADER.unpack(header)
                body = await reader.readexactly(meta_len + payload_len)
                tag = orjson.loads(body[:meta_len]).get("t")
                if to == self.to and tag == self.tag:
                    self.seen += 1
                    if self.seen == self.nth:
                        self.dropped.append(tag)
                        continue
                writer.write(header + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@contextlib.asynccontextmanager
async def cluster_with_proxied_worker(
    tag: str, to: str, nth: int = 1
) -> AsyncIterator[tuple[adrizzle.Engine, FrameDroppingProxy]]:
    """A driver with two real workers: one direct, one behind the dropping proxy."""
    engine = adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN, stall_timeout=1.5)
    procs: list[subprocess.Popen[bytes]] = []
    async with engine:
        port = int(engine.address.rsplit(":", 1)[1])
        proxy = FrameDroppingProxy(port, tag, to, nth)
        await proxy.start()
        env = {**os.environ, "ADRIZZLE_AUTH_TOKEN": TOKEN}
        try:
            for name, target in (("direct", port), ("proxied", proxy.port)):
                procs.append(
                    subprocess.Popen(  # noqa: ASYNC220 - fork+exec only, no waiting
                        [*worker_command(), f"tcp://127.0.0.1:{target}", "--name", name],
                        env=env,
                        stdin=subprocess.DEVNULL,
                    )
                )
            await engine.wait_for_workers(2, timeout=30)
            yield engine, proxy
        finally:
            await proxy.close()
            for proc in procs:
                proc.terminate()
    for proc in procs:  # the engine's shutdown frame (or SIGTERM) ends them; reap
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("tag", "to"),
    [("launch_group", "worker"), ("group_done", "driver"), ("batch_result", "driver")],
)
async def test_a_lost_frame_is_recovered_by_the_stall_timeout(tag: str, to: str) -> None:
    async with cluster_with_proxied_worker(tag, to, nth=3) as (engine, proxy):
        data = engine.parallelize(range(P * K), partitions=P)
        results = await engine.run_jobs([data] * 30, sum, group_size=3, timeout=60)
        assert results == [EXPECTED] * 30
        assert proxy.dropped == [tag]
        if tag != "group_done":  # a lost ack with all results in only retires the group
            assert engine.statistics()["recoveries"] >= 1
        # The cluster is healthy afterwards: both workers still serve at full speed.
        assert await engine.run_jobs([data] * 10, sum, group_size=5, timeout=30) == [EXPECTED] * 10
        assert len(engine.workers) == 2
