"""The multi-host harness's delay proxy (adrizzle_bench.delay_proxy): the configured one-way
delay in both directions, bytes intact and in order, end of stream and resets passed on."""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from adrizzle_bench.delay_proxy import DelayProxy, parse_hostport

pytestmark = pytest.mark.timeout(30)


@contextlib.contextmanager
def upstream(serve: Callable[[socket.socket], None]) -> Iterator[tuple[str, int]]:
    """A loopback server running ``serve(connection)`` for each connection in a thread."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[:2]
    finally:
        stop.set()
        server.close()


@contextlib.contextmanager
def proxied(target: tuple[str, int], delay: float) -> Iterator[socket.socket]:
    proxy = DelayProxy([(("127.0.0.1", 0), target)], delay)
    (address,) = proxy.start()
    client = socket.create_connection(parse_hostport(address), timeout=10)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        yield client
    finally:
        client.close()
        proxy.close()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError(f"stream ended after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def test_each_direction_is_delayed_by_the_configured_one_way_delay() -> None:
    delay = 0.030
    seen: list[tuple[float, float]] = []  # server side: (received, replied)

    def stamp(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(8):
                received = time.monotonic()
                seen.append((received, time.monotonic()))
                conn.sendall(data)

    forward, back = [], []
    with upstream(stamp) as target, proxied(target, delay) as client:
        for i in range(6):
            sent = time.monotonic()
            client.sendall(i.to_bytes(8, "big"))
            assert recv_exactly(client, 8) == i.to_bytes(8, "big")
            done = time.monotonic()
            received, replied = seen[i]
            forward.append(received - sent)
            back.append(done - replied)
    for one_way in (forward, back):
        assert min(one_way) >= delay  # never early
        assert statistics.median(one_way) < delay + 0.010  # and not much late


def test_a_sub_millisecond_delay_holds_where_loop_timers_would_round_it_up() -> None:
    delay = 0.00025
    rtts = []

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)

    with upstream(echo) as target, proxied(target, delay) as client:
        for _ in range(50):
            t0 = time.perf_counter()
            client.sendall(b"x")
            recv_exactly(client, 1)
            rtts.append(time.perf_counter() - t0)
    assert min(rtts) >= 2 * delay
    assert statistics.median(rtts) < 2 * delay + 0.0008  # a 1 ms timer tick would exceed it


def test_bytes_pass_intact_in_order_both_ways_and_end_of_stream_follows_them() -> None:
    payload = random.Random(7).randbytes(3 << 20)

    def echo_until_eof(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(random.randrange(1, 70_000)):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)  # our end of stream, after everything echoed

    received = bytearray()
    with upstream(echo_until_eof) as target, proxied(target, 0.002) as client:

        def read_all() -> None:
            while chunk := client.recv(1 << 16):
                received.extend(chunk)

        reader = threading.Thread(target=read_all)
        reader.start()
        rng = random.Random(11)
        pos = 0
        while pos < len(payload):
            step = rng.randrange(1, 50_000)
            client.sendall(payload[pos : pos + step])
            pos += step
        client.shutdown(socket.SHUT_WR)
        reader.join(20)
        assert not reader.is_alive()
    assert bytes(received) == payload


def test_a_target_that_closes_closes_the_client_side_too() -> None:
    def hang_up(conn: socket.socket) -> None:
        conn.close()

    with upstream(hang_up) as target, proxied(target, 0.005) as client:
        client.settimeout(5)
        assert client.recv(1) == b""


def test_an_unreachable_target_closes_the_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
    with proxied(("127.0.0.1", port), 0.0) as client:  # nothing listens there any more
        client.settimeout(5)
        try:
            assert client.recv(1) == b""
        except ConnectionResetError:
            pass


def test_the_command_line_proxy_reports_its_port_and_exits_with_its_stdin() -> None:
    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)

    with upstream(echo) as (host, port):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "adrizzle_bench.delay_proxy",
                "--delay-ms",
                "20",
                "--route",
                f"127.0.0.1:0={host}:{port}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline())
            assert ready["event"] == "ready"
            with socket.create_connection(parse_hostport(ready["listening"][0]), 10) as client:
                t0 = time.monotonic()
                client.sendall(b"ping")
                assert recv_exactly(client, 4) == b"ping"
                assert time.monotonic() - t0 >= 0.040  # 20 ms each way
            assert proc.stdin is not None
            proc.stdin.close()
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
