"""Hostile input against the two real listening ports: the driver's control port and a worker's
data port (real worker processes, real TCP).

Each attack category runs on its own connections; after each, the cluster must still run a
narrow and a shuffle job correctly, the workers must be the same processes, memory must stay
bounded, and the marker file that any of the pickles sent would create must not exist. The port
must close every hostile connection and never prove itself (send ``auth``) to a stranger.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import operator
import os
import pickle
import random
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import adrizzle
from adrizzle.driver.local import worker_command
from adrizzle.wire import auth
from adrizzle.wire.connection import Connection, State
from adrizzle.wire.framing import HEADER, encode_frame
from adrizzle.wire.messages import MESSAGE_TYPES, PROTOCOL_VERSION, Hello
from tests import hostile
from tests.conftest import wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

TOKEN = "hostile-input-test-token"
HANDSHAKE_TIMEOUT = 1.0  # seconds; the default is 5
CAP = 64  # connections per address (the data port's default; passed to the driver too)
RANDOM_FRAMES = 10_000  # random and mutated frames per port
RSS_GROWTH_LIMIT = 64 << 20  # bytes, per process, over the whole attack run
WORKER_NAMES = ["w0", "w1"]
BATCH_RESULT = hostile.meta_of("batch_result", hostile.sample_fields(MESSAGE_TYPES["batch_result"]))


@dataclasses.dataclass
class Cluster:
    """An engine on loopback with two real workers whose logs we keep."""

    engine: adrizzle.Engine
    procs: dict[str, subprocess.Popen[bytes]]
    logs: dict[str, Path]
    marker: Path
    baseline_rss: dict[str, int] = dataclasses.field(default_factory=dict)

    def pids(self) -> dict[str, int]:
        return {"driver": os.getpid(), **{n: p.pid for n, p in self.procs.items()}}

    def rss(self) -> dict[str, int]:
        return {name: psutil.Process(pid).memory_info().rss for name, pid in self.pids().items()}

    def data_address(self, worker: str) -> str:
        [info] = [w for w in self.engine.workers if w["id"] == worker]
        return str(info["data_address"])

    def worker_log(self, worker: str) -> str:
        return self.logs[worker].read_text()


@dataclasses.dataclass
class Port:
    name: str
    address: str
    cluster: Cluster
    log_lines: Callable[[], list[str]]  # warnings of the process that owns the port


def spawn_worker(driver: str, name: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ADRIZZLE_AUTH_TOKEN": TOKEN}
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [*worker_command(), f"tcp://{driver}", "--cores", "1", "--name", name,
             "--log-level", "warning", "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
             "--max-connections-per-address", str(CAP)],
            env=env, stdin=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    engine = adrizzle.Engine(
        listen="127.0.0.1:0",
        token=TOKEN,
        handshake_timeout=HANDSHAKE_TIMEOUT,
        max_connections_per_address=CAP,
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    async with engine:
        try:
            for name in WORKER_NAMES:
                logs[name] = tmp_path / f"{name}.log"
                procs[name] = spawn_worker(engine.address, name, logs[name])
            await engine.wait_for_workers(len(WORKER_NAMES), timeout=60)
            c = Cluster(engine, procs, logs, tmp_path / "pwned")
            await healthy(c)  # warm up: data-port links exist, memory has settled
            c.baseline_rss = c.rss()
            yield c
            await healthy(c)  # also after the last hypothesis example
        finally:
            slots = {
                child.pid
                for p in procs.values()
                if p.poll() is None
                for child in psutil.Process(p.pid).children()
            }
            await engine.close()
            for p in procs.values():
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            wait_gone(slots)


async def healthy(c: Cluster) -> None:
    """The cluster still works, with the same processes, bounded memory and no marker."""
    engine = c.engine
    assert not c.marker.exists(), "a pickle sent by an attacker was loaded"
    assert sorted(w["id"] for w in engine.workers) == WORKER_NAMES
    assert {w["id"]: w["pid"] for w in engine.workers} == {n: p.pid for n, p in c.procs.items()}
    data = engine.parallelize(range(100), partitions=4)
    assert (
        await engine.run_jobs([data] * 3, sum, group_size=3, timeout=30)
        == [[300, 925, 1550, 2175]] * 3
    )
    pairs = engine.parallelize([(i % 7, i) for i in range(200)], partitions=4)
    [reduced] = await engine.run_jobs([pairs.reduce_by_key(operator.add, 3)], list, timeout=30)
    expected = {k: sum(i for i in range(200) if i % 7 == k) for k in range(7)}
    assert dict(kv for part in reduced for kv in part) == expected
    for name, rss in c.rss().items():
        grown = rss - c.baseline_rss.get(name, rss)
        assert grown < RSS_GROWTH_LIMIT, f"{name} grew by {grown >> 20} MiB"
    assert not c.marker.exists()


def driver_port(c: Cluster, caplog: pytest.LogCaptureFixture) -> Port:
    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    return Port("driver control port", c.engine.address, c, lines)


def data_port(c: Cluster) -> Port:
    def lines() -> list[str]:
        return [line for line in c.worker_log("w0").splitlines() if "WARNING" in line]

    return Port("data port", c.data_address("w0"), c, lines)


# -- attack phases ------------------------------------------------------------------------------


async def refused(port: Port, streams: list[bytes], **kw: object) -> list[hostile.Reply]:
    replies = await hostile.attack_many(port.address, streams, **kw)  # type: ignore[arg-type]
    hostile.check_refused(replies)
    return replies


def reasons(replies: list[hostile.Reply]) -> str:
    return "\n".join(r for reply in replies for r in reply.errors())


def with_and_without_hello(frames: list[bytes]) -> list[bytes]:
    return [*frames, *(hostile.hello_frame() + f for f in frames)]


async def oversize_headers(port: Port) -> int:
    streams = with_and_without_hello(hostile.oversize_headers())
    replies = await refused(port, streams)
    assert "exceeds the cap of 4096 bytes" in reasons(replies)
    assert "exceeds the cap of 0 bytes" in reasons(replies)
    return len(streams)


async def truncated_frames(port: Port) -> int:
    frame = encode_frame(hostile.meta_of("launch_group", {"group": 1}), b"payload")
    cut = [*hostile.truncations(hostile.hello_frame()), *hostile.truncations(frame)]
    streams = with_and_without_hello(cut)
    await refused(port, streams)  # the EOF behind a partial frame closes it
    # Without EOF the port waits for the rest only until the handshake deadline.
    stalled = await refused(port, [hostile.hello_frame()[:n] for n in (1, 7, 8, 30)], eof=False)
    assert "not completed within 1 s" in reasons(stalled)
    return len(streams) + 4


async def invalid_json(port: Port) -> int:
    streams = with_and_without_hello([encode_frame(m) for m in hostile.invalid_json_metas()])
    assert "not valid JSON" in reasons(await refused(port, streams))
    return len(streams)


async def wrong_types(port: Port) -> int:
    streams = with_and_without_hello([encode_frame(m) for m in hostile.wrong_type_metas()])
    assert " must be " in reasons(await refused(port, streams))
    return len(streams)


async def unknown_types(port: Port) -> int:
    streams = with_and_without_hello([encode_frame(m) for m in hostile.unknown_type_metas()])
    assert "unknown message type" in reasons(await refused(port, streams))
    return len(streams)


async def out_of_order_and_pickles(port: Port) -> int:
    streams = hostile.out_of_order_streams(port.cluster.marker)
    text = reasons(await refused(port, streams))
    assert "received before authentication" in text
    assert "auth received before hello" in text
    assert "second hello" in text
    assert "protocol version mismatch" in text
    return len(streams)


async def wrong_token(port: Port) -> int:
    """Complete handshakes with a wrong token, or with a proof replayed from another
    connection; exploit frames queued right behind the proof."""
    host, p = hostile.split_address(port.address)
    attempts = 20
    for attempt in range(attempts):
        reader, writer = await asyncio.open_connection(host, p)
        try:
            header = await asyncio.wait_for(reader.readexactly(HEADER.size), 10)
            meta_len, _ = HEADER.unpack(header)
            server_hello = header + await asyncio.wait_for(reader.readexactly(meta_len), 10)
            mine = hostile.hello_meta(name=f"intruder-{attempt}")
            if attempt % 2:
                proof = hostile.proof_frame("not-the-token", mine, server_hello)
            else:  # the right token, but the transcript of another connection
                proof = hostile.proof_frame(TOKEN, mine, hostile.hello_frame("driver"))
            exploit = hostile.exploits(port.cluster.marker)[attempt % 4]
            writer.write(encode_frame(mine) + proof + encode_frame(BATCH_RESULT, exploit))
            data = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        reply = hostile.Reply(data, True, False)
        assert "auth" not in reply.tags()
        assert any("does not hold the token" in r for r in reply.errors()), reply.errors()
    return attempts * 3


async def random_frames(port: Port) -> int:
    rng = random.Random(f"{port.name}-{RANDOM_FRAMES}")
    streams = hostile.random_streams(rng, RANDOM_FRAMES)
    await refused(port, [s for s, _ in streams], concurrency=16)
    sent = sum(k for _, k in streams)
    assert sent >= RANDOM_FRAMES
    return sent


async def slow_loris(port: Port) -> int:
    """Clients sending a valid hello one byte a second: cut off by the handshake deadline."""
    host, p = hostile.split_address(port.address)
    frame = hostile.hello_frame()

    async def one() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, p)
        received = bytearray()

        async def read_all() -> None:
            try:
                while chunk := await reader.read(65536):
                    received.extend(chunk)
            except ConnectionResetError:
                pass

        sent = 0
        try:
            async with asyncio.timeout(30):
                async with asyncio.TaskGroup() as tg:
                    reading = tg.create_task(read_all())
                    for byte in frame:
                        if reading.done():
                            break
                        writer.write(bytes([byte]))
                        await writer.drain()
                        sent += 1
                        await asyncio.wait([reading], timeout=1.0)  # one byte a second
        except* (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            writer.close()
        return sent, bytes(received)

    results = await asyncio.gather(*(one() for _ in range(3)))
    for sent, received in results:
        assert sent < len(frame), "the slow client was allowed to finish its hello"
        reply = hostile.Reply(received, True, False)
        assert reply.tags()[:1] == ["hello"]
        assert "auth" not in reply.tags()
        assert any("not completed within 1 s" in r for r in reply.errors()), reply.errors()
    return 0


async def idle_connections(port: Port) -> int:
    """500 connections that send nothing: the cap refuses most at once, the deadline the rest."""
    host, p = hostile.split_address(port.address)
    conns = []
    for _ in range(10):  # 50 at a time, not to overflow the listen backlog
        conns += await asyncio.gather(*(asyncio.open_connection(host, p) for _ in range(50)))
    replies = []
    for reader, writer in conns:
        try:
            data = await asyncio.wait_for(reader.read(), 30)
        except ConnectionResetError:
            data = b""
        writer.close()
        replies.append(hostile.Reply(data, True, False))
    hostile.check_refused(replies)
    capped = sum("too many connections" in reasons([r]) for r in replies)
    timed_out = sum("not completed within 1 s" in reasons([r]) for r in replies)
    # Each was refused at once for the cap or closed at the deadline, and the cap held: at most
    # CAP waited at a time (on the control port the two workers' connections and their slots'
    # result links hold up to four places; on a data port the peer's link holds one or two).
    assert capped + timed_out == len(replies)
    assert CAP - 4 <= timed_out
    assert capped >= 1
    return 0


PHASES = [
    oversize_headers,
    truncated_frames,
    invalid_json,
    wrong_types,
    unknown_types,
    out_of_order_and_pickles,
    wrong_token,
    random_frames,
    slow_loris,
    idle_connections,
]


async def survive_everything(port: Port) -> None:
    frames = 0
    c = port.cluster
    for phase in PHASES:
        try:
            n = await phase(port)
            await healthy(c)
        except AssertionError as exc:
            raise AssertionError(f"{port.name}, {phase.__name__}: {exc}") from exc
        frames += n
        grown = {k: (v - c.baseline_rss[k]) >> 10 for k, v in c.rss().items()}
        print(f"{port.name}: {phase.__name__}: {n} frames; RSS growth KiB {grown}")
    assert frames > RANDOM_FRAMES
    # One log line for all those refusals from one address; counted, and the count is bounded.
    refusals = [line for line in port.log_lines() if "refused a connection from" in line]
    assert len(refusals) == 1, refusals
    assert port.name in refusals[0]


async def test_driver_control_port_survives_hostile_input(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="adrizzle")
    port = driver_port(cluster, caplog)
    await survive_everything(port)
    refused_by_host = cluster.engine.statistics()["refused_connections"]
    assert list(refused_by_host) == ["127.0.0.1"]
    assert refused_by_host["127.0.0.1"] > RANDOM_FRAMES // 3


@pytest.mark.asyncio(loop_factories=["uvloop"])  # the port is in a worker process: any loop
async def test_worker_data_port_survives_hostile_input(cluster: Cluster) -> None:
    await survive_everything(data_port(cluster))
    assert "refused a connection" not in cluster.worker_log("w1")  # only w0 was attacked


# -- hypothesis: structured frames from the protocol's own vocabulary ------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), (1 << 64) - 1)  # what JSON (orjson) carries
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
FIELD_NAMES = st.sampled_from(
    sorted({f for cls in hostile.MESSAGE_TYPES.values() for f in hostile.sample_fields(cls)})
)
METAS = st.builds(
    lambda tag, fields: hostile.meta_of(tag, fields),
    st.sampled_from([*hostile.MESSAGE_TYPES, "", "nope"]),
    st.dictionaries(FIELD_NAMES, JSON, max_size=6),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    meta = draw(METAS | st.binary(max_size=64))
    payload = draw(st.binary(max_size=32))
    frame = encode_frame(meta or b"{}", payload)
    if draw(st.booleans()):  # lie about the lengths
        meta_len = draw(st.integers(0, (1 << 32) - 1))
        payload_len = draw(st.integers(0, (1 << 32) - 1))
        frame = HEADER.pack(meta_len, payload_len) + frame[HEADER.size :]
    if draw(st.booleans()):
        frame = frame[: draw(st.integers(0, len(frame)))]
    return frame


HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


async def hypothesis_example(port: Port, hello_first: bool, stream: list[bytes]) -> None:
    data = (hostile.hello_frame() if hello_first else b"") + b"".join(stream)
    hostile.check_refused([await hostile.attack(port.address, data)])
    assert not port.cluster.marker.exists()


@HYPOTHESIS
@given(hello_first=st.booleans(), stream=st.lists(frames(), min_size=1, max_size=4))
async def test_driver_control_port_refuses_hypothesis_frames(
    cluster: Cluster, caplog: pytest.LogCaptureFixture, hello_first: bool, stream: list[bytes]
) -> None:
    await hypothesis_example(driver_port(cluster, caplog), hello_first, stream)
    assert len(cluster.engine.workers) == len(WORKER_NAMES)


@pytest.mark.asyncio(loop_factories=["uvloop"])
@HYPOTHESIS
@given(hello_first=st.booleans(), stream=st.lists(frames(), min_size=1, max_size=4))
async def test_worker_data_port_refuses_hypothesis_frames(
    cluster: Cluster, hello_first: bool, stream: list[bytes]
) -> None:
    await hypothesis_example(data_port(cluster), hello_first, stream)
    assert cluster.procs["w0"].poll() is None


def test_the_exploits_really_create_the_marker(tmp_path: Path) -> None:
    # Control for every "no marker" check above: loading any of these pickles creates it.
    marker = tmp_path / "control"
    for payload in hostile.exploits(marker):
        result = pickle.loads(payload)
        if hasattr(result, "close"):
            result.close()
        assert marker.exists()
        marker.unlink()


# -- a peer that holds the token but sends garbage (a bug, not an attack) ------------------------


async def authenticated(address: str, name: str, accepts: tuple[type, ...]) -> tuple[
    asyncio.StreamReader, asyncio.StreamWriter, Connection
]:  # fmt: skip
    """A connection that has passed the real handshake with the cluster token."""
    host, p = hostile.split_address(address)
    conn = Connection(
        client=True,
        token=TOKEN,
        hello=Hello(PROTOCOL_VERSION, "worker", name, auth.new_nonce(), cores=1),
        accepts=accepts,
    )
    reader, writer = await asyncio.open_connection(host, p)
    writer.write(conn.initiate())
    async with asyncio.timeout(10):
        while conn.state is not State.OPEN:
            conn.receive_data(await reader.read(65536))
            writer.write(conn.data_to_send())
    return reader, writer, conn


def garbage_after_authentication(marker: Path) -> list[bytes]:
    unknown_group = {**hostile.sample_fields(MESSAGE_TYPES["batch_result"]), "group": 10**12}
    launch = hostile.meta_of("launch_group", hostile.sample_fields(MESSAGE_TYPES["launch_group"]))
    never_launched = hostile.meta_of("batch_result", unknown_group)
    return [
        encode_frame(b"{not json"),
        encode_frame(hostile.meta_of("no_such_message", {})),
        encode_frame(hostile.meta_of("batch_result", {"group": "one"})),
        encode_frame(hostile.meta_of("heartbeat", {"extra": 1})),
        hostile.hello_frame(),  # handshake messages are over
        encode_frame(hostile.meta_of("auth", {"mac": "00"})),
        encode_frame(launch),  # a driver-to-worker message
        HEADER.pack((1 << 24) + 1, 0),  # over the open meta cap
        # Well-formed, for a group that was never launched: dropped, never unpickled.
        b"".join(encode_frame(never_launched, p) for p in hostile.exploits(marker)),
    ]


async def test_a_token_holder_sending_garbage_loses_only_its_own_connection(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="adrizzle")
    names = ("launch_group", "cluster_view", "shutdown", "heartbeat")
    accepts = tuple(MESSAGE_TYPES[t] for t in names)
    garbage = garbage_after_authentication(cluster.marker)
    for i, frame in enumerate(garbage):
        reader, writer, _conn = await authenticated(cluster.engine.address, f"buggy-{i}", accepts)
        try:
            writer.write(frame)
            if i < len(garbage) - 1:  # the driver closes the connection
                while await asyncio.wait_for(reader.read(65536), 10):
                    pass
            else:  # the driver ignores these: we hang up ourselves
                await asyncio.sleep(0.1)
        finally:
            writer.close()
        for _ in range(1000):  # the driver notices the hang-up at once; allow 10 s
            if len(cluster.engine.workers) == len(WORKER_NAMES):
                break
            await asyncio.sleep(0.01)
        await healthy(cluster)  # the real workers carry on; buggy-i is gone
    lost = [r.getMessage() for r in caplog.records if "lost:" in r.getMessage()]
    assert len(lost) == len(garbage)
    assert "is not valid JSON" in lost[0]
    assert "exceeds the cap of 1048576 bytes" in lost[7]
