"""asyncio shell around a sans-I/O ``Connection``: transport, coalesced writes, flow control.

The shell owns everything with a clock or a socket: ``TCP_NODELAY``, the handshake deadline,
write coalescing (all messages sent during one loop iteration leave in one ``writelines``) and
``pause_writing``/``resume_writing`` backpressure. Messages are dispatched to plain callbacks
straight from ``data_received``, so the hot path has no queue and no task switch.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from adrizzle.errors import ProtocolError, RemoteProtocolError
from adrizzle.wire.connection import Authenticated, Connection, State

log = logging.getLogger("adrizzle.wire")

if TYPE_CHECKING:
    from adrizzle.wire.messages import Hello, Message


class ConnectionClosed(ProtocolError):
    """The connection is closed; ``by_peer`` tells whether the other side broke it."""

    def __init__(self, message: str, *, by_peer: bool) -> None:
        super().__init__(message)
        self.by_peer = by_peer


class FrameCounter:
    """Frames and bytes by message type and direction (shared by many channels)."""

    __slots__ = ("bytes_in", "bytes_out", "frames_in", "frames_out")

    def __init__(self) -> None:
        self.frames_in: collections.Counter[str] = collections.Counter()
        self.frames_out: collections.Counter[str] = collections.Counter()
        self.bytes_in: collections.Counter[str] = collections.Counter()
        self.bytes_out: collections.Counter[str] = collections.Counter()

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {
            "frames_in": dict(self.frames_in),
            "frames_out": dict(self.frames_out),
            "bytes_in": dict(self.bytes_in),
            "bytes_out": dict(self.bytes_out),
        }


OnMessage = Callable[["Channel", "Message", bytes], None]
OnAuthenticated = Callable[["Channel", "Hello"], None]
OnClosed = Callable[["Channel", BaseException | None], None]


def _ignore_auth(channel: Channel, hello: Hello) -> None:
    return None


def _ignore_close(channel: Channel, exc: BaseException | None) -> None:
    return None


class Channel(asyncio.Protocol):
    def __init__(
        self,
        conn: Connection,
        *,
        on_message: OnMessage,
        on_authenticated: OnAuthenticated = _ignore_auth,
        on_closed: OnClosed = _ignore_close,
        handshake_timeout: float = 5.0,
        counter: FrameCounter | None = None,
        name: str = "",
    ) -> None:
        self.conn = conn
        self.name = name
        self.peer: Hello | None = None
        self.peer_address: str = ""
        self._on_message = on_message
        self._on_authenticated = on_authenticated
        self._on_closed = on_closed
        self._handshake_timeout = handshake_timeout
        self._counter = counter
        self._transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.authenticated: asyncio.Future[Hello] = self._loop.create_future()
        self.close_reason: BaseException | None = None
        self.closed_by_us = False

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = transport = cast("asyncio.Transport", transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer_address = f"{peer[0]}:{peer[1]}"
        if self.conn.state is State.OPEN:  # trusted channel: no handshake
            return
        transport.write(self.conn.initiate())
        self._deadline = self._loop.call_later(self._handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as exc:
            self._abort(exc)
            return
        if self.conn.state is State.HANDSHAKE or (events and type(events[0]) is Authenticated):
            out = self.conn.data_to_send()
            if out and self._transport is not None:
                self._transport.write(out)
        counter = self._counter
        for event in events:
            if type(event) is Authenticated:
                self._on_auth(event.peer)
                continue
            msg = event.message  # type: ignore[union-attr]
            if counter is not None:
                counter.frames_in[msg.TAG] += 1
                counter.bytes_in[msg.TAG] += len(event.payload)  # type: ignore[union-attr]
            try:
                self._on_message(self, msg, event.payload)  # type: ignore[union-attr]
            except ProtocolError as exc:
                self._abort(exc)
                return
            except Exception:
                # A bug in a handler, not this peer's fault: closing this connection would
                # turn it into a lost worker. Say so loudly and keep the connection.
                log.exception("%s: handling %s failed", self.name, msg.TAG)
            if self._transport is None or self._transport.is_closing():
                return

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._pending.clear()
        if self.close_reason is None:
            if self.closed_by_us:
                self.close_reason = ConnectionClosed("connection closed by us", by_peer=False)
            else:
                detail = f": {exc}" if exc else ""
                self.close_reason = ConnectionClosed(
                    f"connection closed by peer {self.peer_address}{detail}", by_peer=True
                )
        err = self.close_reason
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_exception(err)
        self._drain_waiters.clear()
        if not self.authenticated.done():
            self.authenticated.set_exception(err)
            self.authenticated.exception()  # mark retrieved: a failed handshake is not a leak
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_closed(self, err)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        for fut in self._drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self._drain_waiters.clear()

    # -- our side ------------------------------------------------------------------------

    def describe(self) -> str:
        """Connection state for diagnostics: protocol state, transport, close reason."""
        t = self._transport
        transport = "none" if t is None else ("closing" if t.is_closing() else "open")
        return f"{self.conn.state.value}/{transport}/{self.close_reason!r}"

    @property
    def is_open(self) -> bool:
        return (
            self._transport is not None
            and not self._transport.is_closing()
            and self.conn.state is State.OPEN
        )

    def send(self, msg: Message, payload: bytes | bytearray | memoryview = b"") -> None:
        """Queue one message; everything queued in this loop iteration leaves in one write."""
        if self._transport is None or self._transport.is_closing():
            raise self.close_reason or ConnectionClosed("connection is closed", by_peer=False)
        self._pending.append(self.conn.send(msg, payload))
        if self._counter is not None:
            self._counter.frames_out[msg.TAG] += 1
            self._counter.bytes_out[msg.TAG] += len(payload)
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def flush(self) -> None:
        """Write what is queued now instead of at the end of this loop iteration."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()

    def _flush(self) -> None:
        self._flush_handle = None
        if self._pending and self._transport is not None and not self._transport.is_closing():
            if len(self._pending) == 1:
                self._transport.write(self._pending[0])
            else:
                self._transport.writelines(self._pending)
        self._pending.clear()

    async def drain(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        if self.close_reason is not None:
            raise self.close_reason
        if not self._paused:
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        self._drain_waiters.append(fut)
        await fut

    def close(self) -> None:
        """Flush what is queued, then close (a clean close by us)."""
        self.closed_by_us = True
        if self._transport is not None and not self._transport.is_closing():
            self.flush()
            self._transport.close()

    def abort(self, reason: BaseException) -> None:
        """Close because of ``reason`` (already decided by us, e.g. a lost heartbeat)."""
        self._abort(reason)

    # -- internals -----------------------------------------------------------------------

    def _on_auth(self, hello: Hello) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.peer = hello
        if not self.authenticated.done():
            self.authenticated.set_result(hello)
        self._on_authenticated(self, hello)

    def _handshake_expired(self) -> None:
        self._deadline = None
        if self.conn.state is State.HANDSHAKE:
            self._abort(
                RemoteProtocolError(
                    f"handshake with {self.peer_address or 'peer'} not completed within "
                    f"{self._handshake_timeout:g} s"
                )
            )

    def _abort(self, exc: BaseException) -> None:
        if self.close_reason is None:
            self.close_reason = exc
        self.closed_by_us = True
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        out = self.conn.data_to_send()  # the error frame telling the peer why, if any
        self._pending.clear()
        if out:
            transport.write(out)
        transport.close()
