"""The worker's data port: authenticated worker-to-worker connections for shuffle blocks.

Each worker listens on a data port; a worker that has blocks for another dials it once
(lazily) and keeps the connection. Both directions authenticate with the same HMAC handshake
as the control connection before any frame with a payload is accepted. Frames sent while the
connection is being made are queued and written once it is open. The port is a ``Listener``
(connection cap per address, failed handshakes logged once per address, optional TLS).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from adrizzle.wire import auth
from adrizzle.wire.address import parse_address
from adrizzle.wire.channel import Channel
from adrizzle.wire.connection import Connection
from adrizzle.wire.listener import Listener, format_address
from adrizzle.wire.messages import (
    PROTOCOL_VERSION,
    FetchBlocks,
    Hello,
    MapOutputReady,
    MapOutputs,
    Message,
)

if TYPE_CHECKING:
    from adrizzle.worker.config import WorkerConfig

log = logging.getLogger("adrizzle.worker")

DATA_MESSAGES = (MapOutputReady, MapOutputs, FetchBlocks)
OnData = Callable[[Channel, Message, bytes], None]


class PeerLinks:
    """This worker's data port and its links to the other workers' data ports."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        on_message: OnData,
        on_link_lost: Callable[[str, str], None] | None = None,
    ) -> None:
        self._on_link_lost = on_link_lost
        self._closing = False
        self._name = config.name
        self._token = config.token
        self._limits = config.limits
        self._on_message = on_message
        self._handshake_timeout = config.handshake_timeout
        tls = config.tls
        self._client_tls = tls.client_context() if tls is not None else None
        self._listener = Listener(
            lambda: self._channel(False),
            name="data port",
            log=log,
            max_per_address=config.max_connections_per_address,
            tls=tls.server_context() if tls is not None else None,
        )
        self._links: dict[str, Channel] = {}
        self._pending: dict[str, list[tuple[Message, bytes]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.addresses: dict[str, str] = {}
        self.address = ""

    def _channel(self, client: bool) -> Channel:
        conn = Connection(
            client=client,
            token=self._token,
            hello=Hello(PROTOCOL_VERSION, "worker", self._name, auth.new_nonce()),
            accepts=DATA_MESSAGES,
            limits=self._limits,
        )
        return Channel(
            conn,
            on_message=self._on_message,
            on_closed=self._closed,
            handshake_timeout=self._handshake_timeout,
            name=f"{self._name}-data",
        )

    async def start(self, host: str, port: int, advertise_host: str | None = None) -> str:
        """Listen; return the address other workers are told to dial.

        Bound to a wildcard (``0.0.0.0``, ``::``), the port is advertised with
        ``advertise_host``: "0.0.0.0" would send every peer to itself.
        """
        bound = await self._listener.start(host, port)
        self.address = bound
        if advertise_host and host in ("0.0.0.0", "::", ""):
            self.address = format_address(advertise_host, int(bound.rpartition(":")[2]))
        return self.address

    def send(self, worker: str, msg: Message, payload: bytes) -> None:
        """Send to ``worker``'s data port, dialing it first if needed."""
        channel = self._links.get(worker)
        if channel is not None and channel.is_open:
            channel.send(msg, payload)
            return
        queue = self._pending.setdefault(worker, [])
        queue.append((msg, payload))
        if len(queue) == 1:
            task = asyncio.ensure_future(self._dial(worker))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _dial(self, worker: str) -> None:
        address = self.addresses.get(worker, "")
        try:
            if not address:
                raise OSError(f"no data address known for worker {worker}")
            host, port = parse_address(address)
            loop = asyncio.get_running_loop()
            _transport, channel = await asyncio.wait_for(
                loop.create_connection(
                    lambda: self._channel(True),
                    host,
                    port,
                    ssl=self._client_tls,
                    ssl_handshake_timeout=self._handshake_timeout if self._client_tls else None,
                ),
                self._handshake_timeout,
            )
            await asyncio.wait_for(channel.authenticated, self._handshake_timeout)
        except (OSError, TimeoutError, Exception) as exc:
            dropped = len(self._pending.pop(worker, []))
            log.warning(
                "cannot reach worker %s's data port %s: %s (%d block frames dropped; "
                "the driver re-runs the groups involved)",
                worker,
                address or "?",
                exc,
                dropped,
            )
            if self._on_link_lost is not None:
                self._on_link_lost(worker, f"cannot reach its data port: {exc}")
            return
        self._links[worker] = channel
        for msg, payload in self._pending.pop(worker, []):
            channel.send(msg, payload)

    def _closed(self, channel: Channel, exc: BaseException | None) -> None:
        peer = channel.peer.id if channel.peer is not None else None
        for worker, link in list(self._links.items()):
            if link is channel:
                del self._links[worker]
        # An authenticated link that breaks while we run may have eaten map outputs in
        # either direction: say so (the driver re-runs what involved that peer).
        if peer is not None and not self._closing and self._on_link_lost is not None:
            if not channel.closed_by_us:
                self._on_link_lost(peer, f"data link closed: {exc}")

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for channel in list(self._links.values()):
            channel.close()
        await self._listener.close()
