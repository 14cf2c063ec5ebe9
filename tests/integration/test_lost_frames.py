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
import operator
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import cloudpickle
import orjson
import pytest

import adrizzle
from adrizzle.driver.local import worker_command
from adrizzle.wire.framing import HEADER, HEADER_SIZE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

# The stream tests' functions run on workers that cannot import this module: ship by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

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


class DataLinkCutter:
    """Forwards connections to a worker's data port; after ``after`` map outputs have passed
    on a connection it forwards half of the next frame and cuts both sides (once)."""

    def __init__(self, target_port: int, after: int) -> None:
        self.target_port, self.after = target_port, after
        self.cut = False
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        t_reader, t_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def back() -> None:  # target -> client: handshake replies
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                while data := await t_reader.read(65536):
                    c_writer.write(data)
                    await c_writer.drain()

        back_task = asyncio.ensure_future(back())
        passed = 0
        try:
            while True:
                header = await c_reader.readexactly(HEADER_SIZE)
                meta_len, payload_len = HEADER.unpack(header)
                body = await c_reader.readexactly(meta_len + payload_len)
                frame = header + body
                if orjson.loads(body[:meta_len]).get("t") in ("map_output_ready", "map_outputs"):
                    if passed == self.after and not self.cut:
                        self.cut = True
                        t_writer.write(frame[: len(frame) // 2])
                        await t_writer.drain()
                        break
                    passed += 1
                t_writer.write(frame)
                await t_writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            back_task.cancel()
            for w in (c_writer, t_writer):
                w.transport.abort()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_a_data_link_cut_mid_push_is_recovered() -> None:
    engine = adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN)
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "ADRIZZLE_AUTH_TOKEN": TOKEN}
    async with engine:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            data_port = s.getsockname()[1]
        cutter = DataLinkCutter(data_port, after=5)
        await cutter.start()
        try:
            for name, extra in (
                ("a", []),
                (
                    "b",
                    [
                        "--data-listen",
                        f"127.0.0.1:{data_port}",
                        "--data-advertise",
                        f"127.0.0.1:{cutter.port}",
                    ],
                ),
            ):
                procs.append(
                    subprocess.Popen(  # noqa: ASYNC220 - fork+exec only, no waiting
                        [*worker_command(), engine.address, "--name", name, *extra],
                        env=env,
                        stdin=subprocess.DEVNULL,
                    )
                )
            await engine.wait_for_workers(2, timeout=30)
            data = engine.parallelize(range(400), partitions=4).cache()
            counts = data.map(lambda x: (x % 5, 1)).reduce_by_key(lambda a, b: a + b, 2)
            results = await engine.run_jobs([counts] * 40, sorted, group_size=4, timeout=60)
            expected = [(k, 80) for k in range(5)]
            for per_partition in results:
                assert sorted(kv for part in per_partition for kv in part) == expected
            assert cutter.cut
            assert engine.statistics()["recoveries"] >= 1
        finally:
            await cutter.close()
            for proc in procs:
                proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- streams with state: a lost frame rolls the stream back to its checkpoint ----------------


def stream_ints(batch: int, partition: int) -> range:
    return range((batch * P + partition) * K, (batch * P + partition + 1) * K)


def keyed_by_mod(x: int) -> tuple[int, int]:
    return (x % 5, x)


def add_up(values: list[int], total: int | None) -> int:
    return (total or 0) + sum(values)


@pytest.mark.parametrize(
    ("tag", "to"), [("launch_group", "worker"), ("state_checkpoint", "driver")]
)
async def test_a_lost_frame_in_a_stateful_stream_keeps_totals_exact(tag: str, to: str) -> None:
    async with cluster_with_proxied_worker(tag, to, nth=4) as (engine, proxy):
        totals = (
            engine.stream(stream_ints, partitions=P)
            .map(keyed_by_mod)
            .update_state(add_up, combine=operator.add)
        )
        want: dict[int, int] = {}
        seen = []
        async for update in totals.run(40, group_size=2, timeout=60):
            for p in range(P):
                for x in stream_ints(update.batch, p):
                    want[x % 5] = want.get(x % 5, 0) + x
            assert dict(update.values) == want, f"batch {update.batch}"
            seen.append(update.batch)
        assert seen == list(range(40))
        assert proxy.dropped == [tag]
        if tag == "launch_group":  # the stall timeout rolled the stream back
            assert engine.statistics()["recoveries"] >= 1
        else:  # that group's checkpoint is incomplete, so not committed; the next one is
            assert engine.statistics()["checkpoints"]["commits"] >= 2


async def test_a_finished_run_stops_awaiting_the_ack_of_a_worker_lost_later() -> None:
    # The last group's group_done is lost, so the run (all results in) ends with that group
    # still routed, waiting for the ack. When that worker is then lost, the finished run must
    # hear of it too: else wait_settled, and a stateful stream's next run, wait forever.
    async with cluster_with_proxied_worker("group_done", "driver", nth=2) as (engine, proxy):
        data = engine.parallelize(range(P * K), partitions=P)
        assert await engine.run_jobs([data] * 10, sum, group_size=5, timeout=30) == [EXPECTED] * 10
        assert proxy.dropped == ["group_done"]
        assert not await engine.wait_settled(timeout=0.5)  # the lost ack is still awaited
        proxied = next(w for w in engine.workers if w["id"] == "proxied")
        os.kill(proxied["pid"], signal.SIGKILL)
        assert await engine.wait_settled(timeout=10)
        assert engine.statistics()["groups_in_flight"] == 0
