"""The driver's listening socket and the registry of connected workers.

Workers dial in, authenticate, and are registered under the id they announce. Messages from
registered workers go to ``on_message``; a worker whose connection closes is removed and reported
to ``on_lost`` at once. The port is a ``Listener``: peers that fail the handshake are dropped and
logged once per address, connections per address are capped, and TLS is optional.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adrizzle.errors import NoWorkersError, RemoteProtocolError
from adrizzle.wire import auth
from adrizzle.wire.channel import Channel, ConnectionClosed, FrameCounter
from adrizzle.wire.connection import Connection
from adrizzle.wire.listener import Listener
from adrizzle.wire.liveness import SilenceWatch
from adrizzle.wire.messages import (
    PROTOCOL_VERSION,
    BatchResult,
    Draining,
    GroupDone,
    GroupFailed,
    Heartbeat,
    Hello,
    Message,
    PeerLost,
    Shutdown,
    SinkFailed,
    StateCheckpoint,
)

if TYPE_CHECKING:
    import ssl

    from adrizzle.wire.framing import FrameLimits

log = logging.getLogger("adrizzle.driver")

WORKER_MESSAGES = (
    BatchResult,
    GroupDone,
    GroupFailed,
    Draining,
    PeerLost,
    Heartbeat,
    StateCheckpoint,
    SinkFailed,
)


@dataclasses.dataclass(slots=True)
class WorkerHandle:
    """A connected, authenticated worker."""

    id: str
    channel: Channel
    cores: int
    pid: int
    address: str
    data_address: str | None
    connected_at: float
    last_seen: float
    groups_done: int = 0
    tasks_done: int = 0
    state: str = "running"
    # Its slots' result links (docs/architecture.md, "Result links") and the frames they
    # brought.
    links: list[Channel] = dataclasses.field(default_factory=list)
    link_frames: int = 0

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "address": self.address,
            "cores": self.cores,
            "slots": self.cores,
            "pid": self.pid,
            "data_address": self.data_address,
            "tls": self.channel.tls_version,
            "state": self.state,
            "connected_at": self.connected_at,
            "last_heartbeat": self.last_seen,
            "groups_done": self.groups_done,
            "tasks_done": self.tasks_done,
            "result_links": len(self.links),
            "result_link_frames": self.link_frames,
        }


OnWorkerMessage = Callable[[WorkerHandle, Message, bytes], None]
OnWorker = Callable[[WorkerHandle], None]


class Cluster:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        token: str,
        limits: FrameLimits,
        counter: FrameCounter,
        on_message: OnWorkerMessage,
        on_joined: OnWorker,
        on_lost: OnWorker,
        handshake_timeout: float = 5.0,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 5.0,
        max_connections_per_address: int = 64,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._host = host
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self._heartbeats: asyncio.Task[None] | None = None
        self._silence = SilenceWatch(heartbeat_interval)
        self._port = port
        self._token = token
        self._limits = limits
        self._counter = counter
        self._on_message = on_message
        self._on_joined = on_joined
        self._on_lost = on_lost
        self._handshake_timeout = handshake_timeout
        self._listener = Listener(
            self._new_channel,
            name="driver control port",
            log=log,
            max_per_address=max_connections_per_address,
            tls=tls,
        )
        self.workers: dict[str, WorkerHandle] = {}
        self._changed = asyncio.Event()
        self.address = ""
        #: Refused or failed handshakes by peer host.
        self.refused = self._listener.refused
        self.lost_total = 0
        self.joined_total = 0

    async def start(self) -> None:
        self.address = await self._listener.start(self._host, self._port)
        self._heartbeats = asyncio.ensure_future(self._heartbeat_loop())

    async def _heartbeat_loop(self) -> None:
        """Every interval: a heartbeat to each worker; a worker silent for longer than the
        timeout (stopped, hung, or cut off without a FIN) is closed and so declared lost.
        Silence is counted only while this loop was running (``SilenceWatch``): a driver whose
        own loop was blocked or starved does not blame its workers for it."""
        watch = self._silence
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            now = time.monotonic()
            watch.tick(now)
            for worker, silent in watch.silent(self.heartbeat_timeout, now):
                handle = self.workers.get(str(worker))
                if handle is None:
                    watch.forget(worker)
                    continue
                handle.channel.abort(
                    TimeoutError(
                        f"no frame from worker {handle.id} for {silent:.1f} s "
                        f"(heartbeat timeout {self.heartbeat_timeout:g} s)"
                    )
                )
            for handle in list(self.workers.values()):
                if handle.channel.is_open:
                    handle.channel.send(Heartbeat())

    def deaf_statistics(self) -> dict[str, float]:
        """Time the driver's loop was not listening (blocked or starved), in seconds: the
        longest spell and the total (heartbeat silence does not count it against workers)."""
        return {"max": self._silence.deaf_max, "total": self._silence.deaf_total}

    def _new_channel(self) -> Channel:
        conn = Connection(
            client=False,
            token=self._token,
            hello=Hello(PROTOCOL_VERSION, "driver", "driver", auth.new_nonce()),
            accepts=WORKER_MESSAGES,
            limits=self._limits,
        )
        return Channel(
            conn,
            on_message=self._dispatch,
            on_authenticated=self._authenticated,
            on_closed=self._closed,
            handshake_timeout=self._handshake_timeout,
            counter=self._counter,
            name="driver",
        )

    def _authenticated(self, channel: Channel, hello: Hello) -> None:
        if hello.role == "slot":
            self._link(channel, hello)
            return
        reason = None
        if hello.role != "worker":
            reason = f"expected a worker, got role {hello.role!r}"
        elif hello.id in self.workers:
            reason = f"a worker named {hello.id!r} is already connected"
        if reason is not None:
            log.warning("refused %s from %s: %s", hello.id, channel.peer_address, reason)
            channel.conn.fail(reason)
            channel.abort(RemoteProtocolError(reason))
            return
        now = time.time()
        handle = WorkerHandle(
            id=hello.id,
            channel=channel,
            cores=max(1, hello.cores),
            pid=hello.pid,
            address=channel.peer_address,
            data_address=hello.data_address,
            connected_at=now,
            last_seen=now,
        )
        self.workers[hello.id] = handle
        self._silence.heard(hello.id, time.monotonic())
        self.joined_total += 1
        log.info("worker %s joined from %s with %d cores", hello.id, handle.address, handle.cores)
        self._changed.set()
        self._on_joined(handle)

    def _link(self, channel: Channel, hello: Hello) -> None:
        """A slot's result link: it belongs to the connected worker with that id and pid (the
        worker asks its slots to dial only once it is registered here)."""
        handle = self.workers.get(hello.id)
        if handle is None or handle.pid != hello.pid:
            reason = f"no worker {hello.id!r} with pid {hello.pid} to link slot {hello.slot} to"
            log.warning("refused a result link from %s: %s", channel.peer_address, reason)
            channel.conn.fail(reason)
            channel.abort(RemoteProtocolError(reason))
            return
        handle.links.append(channel)
        channel.send(Heartbeat())  # accepted: the slot waits for this before it uses the link

    def _dispatch(self, channel: Channel, msg: Message, payload: bytes) -> None:
        peer = channel.peer
        assert peer is not None
        handle = self.workers.get(peer.id)
        if handle is None or (handle.channel is not channel and channel not in handle.links):
            return  # a late frame from a connection we already dropped
        handle.last_seen = time.time()
        self._silence.heard(handle.id, time.monotonic())
        if channel is not handle.channel:
            handle.link_frames += 1
        self._on_message(handle, msg, payload)

    def _closed(self, channel: Channel, exc: BaseException | None) -> None:
        peer = channel.peer
        handle = self.workers.get(peer.id) if peer is not None else None
        if peer is None or handle is None:
            return  # never registered: the listener logged a failed handshake
        if channel in handle.links:
            # A slot's link closes when its slot or worker goes: the worker's control
            # connection says which (a slot that dies takes its worker down with it).
            handle.links.remove(channel)
            return
        if handle.channel is not channel:
            return
        for link in list(handle.links):  # its slots' results would no longer be taken
            link.abort(ConnectionClosed("the worker's control connection closed", by_peer=False))
        del self.workers[peer.id]
        self._silence.forget(peer.id)
        handle.state = "lost"
        self.lost_total += 1
        if not channel.closed_by_us or not isinstance(exc, ConnectionClosed):
            log.warning("worker %s lost: %s", peer.id, exc)
        self._changed.set()
        self._on_lost(handle)

    async def wait_for_workers(
        self, n: int, timeout: float | None, check: Callable[[], None] | None = None
    ) -> None:
        """Wait until ``n`` workers are connected; ``check`` may raise to stop waiting early."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.workers) < n:
            if check is not None:
                check()
            self._changed.clear()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise NoWorkersError(
                    f"only {len(self.workers)} of {n} workers connected to {self.address} "
                    f"within {timeout:g} s"
                )
            wait = 0.1 if check is not None else left
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except TimeoutError:
                pass

    async def close(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            self._heartbeats = None
        for handle in list(self.workers.values()):
            if handle.channel.is_open:
                handle.channel.send(Shutdown())
                handle.channel.flush()
        await self._listener.close()
