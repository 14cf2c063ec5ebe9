"""A slot's result link: its own authenticated connection to the driver (blocking, no loop).

Results, acknowledgement parts, checkpoints and failure notices of a slot reach the driver
without passing through the worker process: the worker's forwarding cost a process wake-up
and a decode/re-encode per group, about a third of the per-group cost at G=10
(docs/architecture.md, "Result links"). The slot dials when its worker tells it to
(``DriverLink``, over the private socketpair, once the worker is registered), proves the token
with the same handshake as the worker (``wire.connection``, role ``slot``), TLS included, and
from then on only writes: the driver sends nothing on a link.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

from adrizzle.errors import AdrizzleError
from adrizzle.wire import auth
from adrizzle.wire.connection import Connection, Received
from adrizzle.wire.messages import PROTOCOL_VERSION, Heartbeat, Hello
from adrizzle.wire.tls import TlsConfig

if TYPE_CHECKING:
    from adrizzle.wire.messages import DriverLink


class LinkError(Exception):
    """The result link could not be opened (the slot then sends through its worker)."""


def open_result_link(link: DriverLink) -> socket.socket:
    """Dial the driver, authenticate as slot ``link.slot`` of worker ``link.worker``; the
    connected blocking socket. Raises ``LinkError`` naming what failed, within about the
    handshake timeout."""
    timeout = max(link.handshake_timeout_ms, 1) / 1000
    deadline = time.monotonic() + timeout
    where = f"driver tcp://{link.host}:{link.port}"
    try:
        sock = socket.create_connection((link.host, link.port), timeout=timeout)
    except OSError as exc:
        raise LinkError(f"cannot connect to {where}: {exc}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if link.tls_ca_file:
            ctx = TlsConfig(link.tls_ca_file, link.tls_cert, link.tls_key).client_context()
            sock = ctx.wrap_socket(sock, server_hostname=link.host)
        _handshake(sock, link, deadline)
        sock.settimeout(None)
        return sock
    except LinkError:
        sock.close()
        raise
    except (OSError, AdrizzleError, ValueError) as exc:
        sock.close()
        raise LinkError(f"result link to {where}: {type(exc).__name__}: {exc}") from None


def _handshake(sock: socket.socket, link: DriverLink, deadline: float) -> None:
    hello = Hello(
        version=PROTOCOL_VERSION,
        role="slot",
        id=link.worker,
        nonce=auth.new_nonce(),
        pid=link.pid,
        slot=link.slot,
    )
    # After the proofs the driver either accepts the link with a heartbeat or refuses it with
    # an error frame (a link that names no connected worker): wait for one of the two.
    conn = Connection(client=True, token=link.token, hello=hello, accepts=(Heartbeat,))
    sock.sendall(conn.initiate())
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise LinkError("the driver did not complete the handshake in time")
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except TimeoutError:
            raise LinkError("the driver did not complete the handshake in time") from None
        if not data:
            raise LinkError("the driver closed the connection during the handshake")
        events = conn.receive_data(data)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
        if any(isinstance(e, Received) for e in events):
            return
