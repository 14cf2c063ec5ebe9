"""A listening port: per-address connection cap, TLS, and refusals logged once per address.

Both ports (the driver's control port and each worker's data port) accept connections through a
``Listener``. It sits outside the protocol: it sees a connection when it is made and when it is
gone, never its frames, so it costs nothing per message. What it enforces:

- at most ``max_per_address`` open connections from one host; the next is refused at once;
- with ``tls``, every connection is upgraded to TLS (the peer must present a certificate signed
  by the cluster CA) before the token handshake starts;
- a connection that fails the handshake (wrong token, bad frame, deadline passed, TLS failure,
  over the cap) is logged once per host with the reason; later ones from that host are only
  counted, so a flood cannot fill the log. The counts are bounded too.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from adrizzle.wire.channel import Channel, ConnectionClosed

if TYPE_CHECKING:
    import logging
    import ssl
    from collections.abc import Callable

#: Seconds ``close()`` waits for accepted connections to finish closing.
CLOSE_TIMEOUT = 2.0

#: Refusal counts kept for at most this many hosts; the rest are summed under ``"other"``.
MAX_REFUSED_HOSTS = 1024


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Listener:
    """Accepts connections for ``factory``'s channels on one port (see the module docstring)."""

    def __init__(
        self,
        factory: Callable[[], Channel],
        *,
        name: str,
        log: logging.Logger,
        max_per_address: int = 64,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if max_per_address < 1:
            raise ValueError(f"max_per_address must be at least 1, got {max_per_address}")
        self._factory = factory
        self.name = name
        self._log = log
        self.max_per_address = max_per_address
        self.tls = tls
        self._server: asyncio.Server | None = None
        self._open: dict[str, int] = {}
        self._admitted: set[Channel] = set()
        #: Accepted channels not yet closed (admitted or not).
        self.channels: set[Channel] = set()
        #: Refused or failed handshakes by peer host.
        self.refused: dict[str, int] = {}
        self.address = ""
        self._closing = False

    async def start(self, host: str, port: int) -> str:
        """Listen on ``host:port`` (port 0: any free port); return the bound ``host:port``."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, host, port)
        bound = self._server.sockets[0].getsockname()
        self.address = format_address(str(bound[0]), int(bound[1]))
        return self.address

    def _accept(self) -> Channel:
        channel = self._factory()
        channel.gate = self
        self.channels.add(channel)
        return channel

    # -- Gate ----------------------------------------------------------------------------

    def admit(self, channel: Channel) -> str | None:
        if self._closing:  # accepted while the port shuts down: close it, do not keep it
            return f"the {self.name} is shutting down"
        host = channel.peer_host
        count = self._open.get(host, 0)
        if count >= self.max_per_address:
            return (
                f"too many connections from {host}: the {self.name} takes at most "
                f"{self.max_per_address} per address"
            )
        self._open[host] = count + 1
        self._admitted.add(channel)
        return None

    def release(self, channel: Channel, exc: BaseException | None) -> None:
        self.channels.discard(channel)
        if channel in self._admitted:
            self._admitted.discard(channel)
            host = channel.peer_host
            left = self._open.get(host, 1) - 1
            if left > 0:
                self._open[host] = left
            else:
                self._open.pop(host, None)
        if self._closing:
            return  # shutting down: not a refusal worth a log line
        if channel.peer is None and exc is not None and not isinstance(exc, ConnectionClosed):
            self._refused(channel, exc)

    def _refused(self, channel: Channel, exc: BaseException) -> None:
        host = channel.peer_host or "?"
        if host not in self.refused and len(self.refused) >= MAX_REFUSED_HOSTS:
            host = "other"
        n = self.refused.get(host, 0) + 1
        self.refused[host] = n
        if n == 1:
            self._log.warning(
                "%s refused a connection from %s: %s (further refusals from this address are "
                "counted, not logged)",
                self.name,
                channel.peer_address or host,
                str(exc)[:300],
            )

    # -- shutdown ------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop accepting and close every accepted channel."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for channel in list(self.channels):
            channel.close()
        # Connections accepted just before (asyncio makes their transports in callbacks of
        # their own) get theirs now: ``admit`` refuses them, and any left are closed here.
        for _ in range(3):
            await asyncio.sleep(0)
        for channel in list(self.channels):
            channel.close()
        close_clients = getattr(self._server, "close_clients", None)  # asyncio, Python 3.13+
        if close_clients is not None:
            close_clients()  # transports whose protocol has not been told of them yet
        if self._server is not None:
            # Bounded: a peer that stops reading must not hold up shutdown.
            try:
                await asyncio.wait_for(self._server.wait_closed(), CLOSE_TIMEOUT)
            except TimeoutError:
                self._log.debug("%s: connections still closing after shutdown", self.name)
            self._server = None
