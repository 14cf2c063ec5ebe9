"""A user-space TCP delay proxy: every byte forwarded after a fixed one-way delay, in order, in
both directions (what ``tc netem delay`` would do, where this kernel has no netem).

    python -m adrizzle_bench.delay_proxy --delay-ms 1 --route LISTEN_HOST:PORT=TARGET_HOST:PORT ...

Each ``--route`` listens on one address; every connection accepted there is joined to a new
connection to the target, and each direction runs as a reader thread (stamps each chunk it
receives with "now + delay") and a writer thread (sends the chunks in arrival order, each no
sooner than its stamp: ``time.sleep`` on a monotonic clock, the last 0.2 ms spun, so
sub-millisecond delays hold to within a thread wake-up, where an event loop's timers tick in
milliseconds).
End of stream is forwarded as a half-close after the data before it; a reset on either side
closes both. ``TCP_NODELAY`` on every socket: the proxy adds its delay and no Nagle wait.

The process prints ``{"event": "ready", "listening": [...]}`` once every route listens (port 0:
a free one), then runs until stdin closes or it is signalled. ``DelayProxy`` is the same in a
thread of the caller (the tests use it).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import socket
import sys
import threading
import time

CHUNK = 1 << 16
SPIN = 0.0002  # the last this many seconds of a wait are spun, not slept

Address = tuple[str, int]


def parse_hostport(text: str) -> Address:
    host, _sep, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _nodelay(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Direction:
    """One direction of one proxied connection: ``src`` -> (delay) -> ``dst``."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay: float, link: _Link) -> None:
        self.src, self.dst, self.delay, self.link = src, dst, delay, link
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.cond = threading.Condition()
        for target in (self._read, self._write):
            threading.Thread(target=target, daemon=True).start()

    def _read(self) -> None:
        try:
            while True:
                data = self.src.recv(CHUNK)
                due = time.monotonic() + self.delay
                with self.cond:
                    self.queue.append((due, data))  # b"": end of stream, after what came before
                    self.cond.notify()
                if not data:
                    return
        except OSError:
            self.link.close()

    def _write(self) -> None:
        try:
            while True:
                with self.cond:
                    while not self.queue:
                        self.cond.wait()
                    due = self.queue[0][0]
                wait = due - time.monotonic()
                if wait > SPIN:
                    time.sleep(wait - SPIN)  # a sleep overshoots by ~0.1 ms: spin the rest
                while (now := time.monotonic()) < due:
                    pass
                parts: list[bytes] = []
                eof = False
                with self.cond:  # everything already due leaves in one send, in order
                    while self.queue and self.queue[0][0] <= now:
                        data = self.queue.popleft()[1]
                        if not data:
                            eof = True
                            break
                        parts.append(data)
                if parts:
                    self.dst.sendall(b"".join(parts))
                if eof:
                    self.dst.shutdown(socket.SHUT_WR)
                    self.link.half_closed()
                    return
        except OSError:
            self.link.close()


class _Link:
    """A proxied connection: two sockets, two directions; closed once both ends finished."""

    def __init__(self, a: socket.socket, b: socket.socket, delay: float) -> None:
        self.sockets = (a, b)
        self._lock = threading.Lock()
        self._halves = 0
        self.closed = False
        self.directions = (_Direction(a, b, delay, self), _Direction(b, a, delay, self))

    def half_closed(self) -> None:
        with self._lock:
            self._halves += 1
            done = self._halves == 2
        if done:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv()
            with contextlib.suppress(OSError):
                sock.close()
        for direction in getattr(self, "directions", ()):  # a writer waiting ends too
            with direction.cond:
                direction.queue.append((0.0, b""))
                direction.cond.notify()


class DelayProxy:
    """Routes ``listen -> target`` with ``delay`` seconds each way; ``start()`` returns the
    bound addresses (``HOST:PORT``, in route order); ``close()`` stops listening and drops
    every proxied connection."""

    def __init__(self, routes: list[tuple[Address, Address]], delay: float) -> None:
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self.routes = routes
        self.delay = delay
        self._listeners: list[socket.socket] = []
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self.accepted = 0

    def start(self) -> list[str]:
        bound = []
        for listen, target in self.routes:
            server = socket.create_server(listen, backlog=128)
            self._listeners.append(server)
            host, port = server.getsockname()[:2]
            bound.append(f"{host}:{port}")
            threading.Thread(target=self._accept, args=(server, target), daemon=True).start()
        return bound

    def _accept(self, server: socket.socket, target: Address) -> None:
        while True:
            try:
                client, _peer = server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._join, args=(client, target), daemon=True).start()

    def _join(self, client: socket.socket, target: Address) -> None:
        try:
            upstream = socket.create_connection(target, timeout=10)
        except OSError:
            client.close()  # the client sees a close, as if the target refused
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            _nodelay(sock)
        with self._lock:
            self.accepted += 1
            self._links = [link for link in self._links if not link.closed]
            self._links.append(_Link(client, upstream, self.delay))

    def close(self) -> None:
        for server in self._listeners:
            with contextlib.suppress(OSError):
                server.close()
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m adrizzle_bench.delay_proxy")
    p.add_argument("--delay-ms", type=float, required=True, help="one-way delay, ms")
    p.add_argument(
        "--route",
        action="append",
        required=True,
        metavar="LISTEN=TARGET",
        help="HOST:PORT=HOST:PORT (repeatable)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    routes = []
    for route in args.route:
        listen, _sep, target = route.partition("=")
        routes.append((parse_hostport(listen), parse_hostport(target)))
    proxy = DelayProxy(routes, args.delay_ms / 1e3)
    try:
        listening = proxy.start()
    except OSError as exc:
        print(json.dumps({"event": "error", "reason": str(exc)}), flush=True)
        return 1
    print(json.dumps({"event": "ready", "listening": listening}), flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin (or is gone)
    except KeyboardInterrupt:
        pass
    finally:
        proxy.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
