"""Sans-I/O connection state: handshake, authentication, then typed messages.

``Connection.receive_data(bytes) -> [events]`` and ``Connection.send(message) -> bytes``; no
sockets, clocks or asyncio here. Bytes produced by the handshake are collected and handed out by
``data_to_send()``. A peer that breaks the protocol raises ``RemoteProtocolError`` (after queuing
an ``error`` frame that tells the peer why); misuse on our side raises ``LocalProtocolError``.

Before the peer has authenticated the decoder only accepts small frames with no payload, and only
``hello``/``auth``/``error`` messages, so nothing from an unauthenticated peer is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING

from adrizzle.errors import (
    AuthenticationError,
    LocalProtocolError,
    RemoteProtocolError,
    VersionMismatchError,
)
from adrizzle.wire import auth
from adrizzle.wire.framing import HANDSHAKE_LIMITS, FrameDecoder, FrameLimits, encode_frame
from adrizzle.wire.messages import (
    PROTOCOL_VERSION,
    Auth,
    Error,
    Hello,
    Message,
    decode_meta,
    encode_meta,
)

if TYPE_CHECKING:
    from collections.abc import Collection


#: The roles a hello may claim.
ROLES = frozenset({"driver", "worker", "slot"})  # slot: a result link (DriverLink)


class State(enum.Enum):
    HANDSHAKE = "handshake"  # hellos being exchanged / proofs pending
    OPEN = "open"  # authenticated both ways; any accepted message may flow
    CLOSED = "closed"


@dataclasses.dataclass(frozen=True, slots=True)
class Authenticated:
    """The peer proved it holds the token. ``peer`` is its (now trusted) hello."""

    peer: Hello


@dataclasses.dataclass(frozen=True, slots=True)
class Received:
    message: Message
    payload: bytes


Event = Authenticated | Received


class Connection:
    """One end of one connection.

    ``client`` is the side that dialed. ``accepts`` lists the message types this side takes from
    the peer once open; anything else is a remote protocol error. ``trusted=True`` skips the
    handshake (the worker-to-slot socketpair, which no other process can reach).
    """

    def __init__(
        self,
        *,
        client: bool,
        token: str | None,
        hello: Hello | None,
        accepts: Collection[type[Message]],
        limits: FrameLimits | None = None,
        trusted: bool = False,
    ) -> None:
        self.client = client
        self._token = token.encode() if token else b""
        self._hello = hello
        self._accepts = frozenset(accepts)
        self._limits = limits or FrameLimits()
        self._outbox: list[bytes] = []
        self.peer: Hello | None = None
        self._my_hello_meta = b""
        self._peer_hello_meta = b""
        self._sent_proof = False
        if trusted:
            self.state = State.OPEN
            self._decoder = FrameDecoder(self._limits)
        else:
            if hello is None or not self._token:
                raise LocalProtocolError("an untrusted connection needs a hello and a token")
            self.state = State.HANDSHAKE
            self._decoder = FrameDecoder(HANDSHAKE_LIMITS)

    # -- outgoing ------------------------------------------------------------------------

    def initiate(self) -> bytes:
        """Our hello frame: both sides send it as soon as the connection is made."""
        if self._hello is None or self._my_hello_meta:
            raise LocalProtocolError("initiate() is called once, on an untrusted connection")
        self._my_hello_meta = encode_meta(self._hello)
        return encode_frame(self._my_hello_meta)

    def send(self, msg: Message, payload: bytes | bytearray | memoryview = b"") -> bytes:
        if self.state is not State.OPEN:
            raise LocalProtocolError(f"cannot send {msg.TAG} in state {self.state.value}")
        return encode_frame(encode_meta(msg), payload)

    def data_to_send(self) -> bytes:
        out = b"".join(self._outbox)
        self._outbox.clear()
        return out

    # -- incoming ------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        if self.state is State.CLOSED:
            raise LocalProtocolError("receive_data() on a closed connection")
        try:
            if self.state is State.OPEN:
                return self._receive_open(self._decoder.feed(data))
            return self._receive_handshake(data)
        except RemoteProtocolError as exc:
            self._fail(str(exc))
            raise

    def fail(self, reason: str) -> None:
        """Close, queuing an ``error`` frame that tells the peer why (see ``data_to_send``)."""
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        if self.state is not State.CLOSED:
            try:
                self._outbox.append(encode_frame(encode_meta(Error(reason[:1000]))))
            finally:
                self.state = State.CLOSED

    def _receive_open(self, frames: list[tuple[bytes, bytes]]) -> list[Event]:
        events: list[Event] = []
        accepts = self._accepts
        for meta, payload in frames:
            msg = decode_meta(meta)
            if type(msg) not in accepts:
                if isinstance(msg, Error):
                    self.state = State.CLOSED
                    raise RemoteProtocolError(f"peer closed the connection: {msg.reason!r}")
                raise RemoteProtocolError(f"unexpected message {msg.TAG!r} from peer")
            events.append(Received(msg, payload))
        return events

    def _receive_handshake(self, data: bytes | bytearray | memoryview) -> list[Event]:
        # One frame at a time: the limits change the moment the peer has authenticated, and
        # frames behind the final proof (in the same read) must be parsed with the open limits.
        events: list[Event] = []
        while self.state is State.HANDSHAKE:
            frames = self._decoder.feed(data, max_frames=1)
            data = b""
            if not frames:
                return events
            meta, _payload = frames[0]  # payload is always empty: HANDSHAKE_LIMITS
            msg = decode_meta(meta)
            if isinstance(msg, Error):
                self.state = State.CLOSED
                raise RemoteProtocolError(f"peer refused the connection: {msg.reason!r}")
            if isinstance(msg, Hello):
                self._on_hello(msg, meta)
            elif isinstance(msg, Auth):
                events.append(self._on_auth(msg))
            else:
                raise RemoteProtocolError(f"{msg.TAG!r} received before authentication")
        events.extend(self._receive_open(self._decoder.feed(b"")))
        return events

    def _on_hello(self, hello: Hello, meta: bytes) -> None:
        if self._peer_hello_meta:
            raise RemoteProtocolError("second hello from peer")
        if not self._my_hello_meta:
            raise LocalProtocolError("initiate() must be called before receiving data")
        assert self._hello is not None
        if hello.version != PROTOCOL_VERSION:
            raise VersionMismatchError(
                f"protocol version mismatch: this {self._hello.role} speaks version "
                f"{PROTOCOL_VERSION}, the peer {hello.role[:100]!r} speaks version "
                f"{hello.version}"
            )
        if hello.role not in ROLES:  # checked here so that later messages may name it bare
            raise RemoteProtocolError(f"unknown role {hello.role[:100]!r} in hello")
        self.peer = hello
        self._peer_hello_meta = meta
        if self.client:
            self._send_proof()

    @staticmethod
    def _side(client: bool) -> str:
        return "client" if client else "server"

    def _transcript(self) -> bytes:
        if self.client:
            return auth.transcript(self._my_hello_meta, self._peer_hello_meta)
        return auth.transcript(self._peer_hello_meta, self._my_hello_meta)

    def _send_proof(self) -> None:
        mac = auth.proof(self._token, self._side(self.client), self._transcript())
        self._outbox.append(encode_frame(encode_meta(Auth(mac))))
        self._sent_proof = True

    def _on_auth(self, msg: Auth) -> Authenticated:
        if self.peer is None:
            raise RemoteProtocolError("auth received before hello")
        if self.client and not self._sent_proof:  # pragma: no cover - client proves on hello
            raise RemoteProtocolError("server proof before our own")
        # The peer's side is what *we* know it to be, never what its hello claims: a peer that
        # claims our own role must not be able to send our proof back to us.
        if not auth.verify(self._token, self._side(not self.client), self._transcript(), msg.mac):
            raise AuthenticationError(
                f"authentication failed: {self.peer.role} {self.peer.id[:100]!r} does not hold "
                "the token"
            )
        if not self.client:
            self._send_proof()
        self.state = State.OPEN
        self._decoder.limits = self._limits
        return Authenticated(self.peer)
