"""asyncio shell around a sans-I/O ``Connection``: transport, coalesced writes, flow control.

The shell owns everything with a clock or a socket: ``TCP_NODELAY``, the handshake deadline,
write coalescing (all messages sent during one loop iteration leave in one ``writelines``) and
``pause_writing``/``resume_writing`` backpressure. Messages are dispatched to plain callbacks
straight from ``data_received``, so the hot path has no queue and no task switch.

A channel accepted by a listening port has a ``gate`` (``adrizzle.wire.listener``): it may
refuse the connection as soon as it is made, and with TLS the channel upgrades the plain TCP
connection first. One deadline covers the TLS handshake and the token handshake together.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from adrizzle.errors import ProtocolError, RemoteProtocolError
from adrizzle.wire.connection import Authenticated, Connection, State

log = logging.getLogger("adrizzle.wire")

if TYPE_CHECKING:
    import ssl

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


class Gate(Protocol):
    """A listening port's say over the channels it accepts."""

    #: Upgrade each accepted connection to TLS with this context before the token handshake.
    tls: ssl.SSLContext | None

    def admit(self, channel: Channel) -> str | None:
        """Called once the connection is made: None to go on, else why it is refused."""

    def release(self, channel: Channel, exc: BaseException | None) -> None:
        """Called once when the connection is gone, with the reason it closed."""


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
        self.peer_host: str = ""
        self.gate: Gate | None = None
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
        self._upgrade: asyncio.Task[None] | None = None
        self._upgrading = False
        self._lost = False

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = transport = cast("asyncio.Transport", transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer_host = str(peer[0])
            self.peer_address = f"{peer[0]}:{peer[1]}"
        if self.conn.state is State.OPEN:  # trusted channel: no handshake
            return
        gate = self.gate
        if gate is not None:
            refusal = gate.admit(self)
            if refusal is not None:
                if gate.tls is None:
                    self.conn.fail(refusal)  # the peer learns why (a TLS peer cannot read it)
                self._abort(RemoteProtocolError(refusal))
                return
        self._deadline = self._loop.call_later(self._handshake_timeout, self._handshake_expired)
        if gate is not None and gate.tls is not None:
            self._upgrading = True
            upgrade = self._start_tls(transport, gate.tls)
            if sys.version_info >= (3, 12) and asyncio.current_task(self._loop) is None:
                # Run start_tls() up to its first await right here: the TLS layer must be the
                # transport's protocol before the first byte is read, and uvloop starts reading
                # as soon as connection_made returns.
                self._upgrade = asyncio.Task(upgrade, loop=self._loop, eager_start=True)
            else:  # pragma: no cover - Python 3.11: a paused transport waits for start_tls()
                transport.pause_reading()
                self._upgrade = self._loop.create_task(upgrade)
            return
        transport.write(self.conn.initiate())

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
        if self._lost:  # a failed TLS upgrade may report the loss twice
            return
        self._lost = True
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
        if self.gate is not None:
            self.gate.release(self, err)
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
    def tls_version(self) -> str | None:
        """The TLS version of this connection (``"TLSv1.3"``), None for plain TCP."""
        transport = self._transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        return str(ssl_object.version()) if ssl_object is not None else None

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

    async def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        # The TLS layer talks to a stand-in until the handshake is done: what the peer sends
        # right behind it is held there, so the channel never sees bytes before its hello left.
        stand_in = _TlsHandshake()
        failure: BaseException | None = None
        transport: asyncio.Transport | None = None
        try:
            transport = await self._loop.start_tls(
                raw,
                stand_in,
                context,
                server_side=True,
                ssl_handshake_timeout=self._handshake_timeout,
            )
        except BaseException as exc:
            failure = exc
        self._upgrading = False
        if transport is None or stand_in.lost is not None:
            if self.close_reason is None:
                detail = str(failure or "") or type(failure).__name__
                if stand_in.lost is not None:
                    detail = "connection lost"
                self.close_reason = RemoteProtocolError(
                    f"TLS handshake with {self.peer_address or 'peer'} failed: {detail}"
                )
                self.closed_by_us = True
            (transport or raw).close()
            self.connection_lost(None)
            if isinstance(failure, asyncio.CancelledError):
                raise failure
            return
        transport.set_protocol(self)
        self._transport = transport
        if self.close_reason is not None or transport.is_closing():
            # Closed while the handshake ran (our deadline, or the peer): uvloop then returns
            # a dead transport that never reports the loss, so finish the close here.
            transport.close()
            self.connection_lost(None)
            return
        transport.write(self.conn.initiate())
        if stand_in.received:
            self.data_received(bytes(stand_in.received))

    def _handshake_expired(self) -> None:
        self._deadline = None
        if self.conn.state is State.HANDSHAKE:
            reason = (
                f"handshake with {self.peer_address or 'peer'} not completed within "
                f"{self._handshake_timeout:g} s"
            )
            if not self._upgrading:
                self.conn.fail(reason)  # tell a slow but honest peer why
            self._abort(RemoteProtocolError(reason))

    def _abort(self, exc: BaseException) -> None:
        if self.close_reason is None:
            self.close_reason = exc
        self.closed_by_us = True
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._upgrading:  # mid TLS handshake: no plain bytes may be written
            transport.close()
            return
        out = self.conn.data_to_send()  # the error frame telling the peer why, if any
        self._pending.clear()
        if out:
            transport.write(out)
        transport.close()


class _TlsHandshake(asyncio.Protocol):
    """Stands in for a channel while its connection is upgraded to TLS (see ``_start_tls``)."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)
