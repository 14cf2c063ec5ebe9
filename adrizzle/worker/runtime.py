"""The worker process: one authenticated control connection to the driver, and its slots.

A ``launch_group`` frame is split into one ``run_tasks`` frame per slot (payload bytes forwarded
unopened); each slot's per-batch results are forwarded to the driver as they arrive; when every
slot has finished the group, the worker sends the group's single ``group_done``.

Shuffle blocks from a slot's map tasks are routed here: to another local slot, or over the data
port to the reducer's worker (``PeerLinks``), with no driver round trip. In BSP mode they are
held here until a reducer's worker fetches them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from adrizzle.errors import AuthenticationError, ProtocolError, RemoteProtocolError
from adrizzle.wire import auth
from adrizzle.wire.acks import AckTally
from adrizzle.wire.channel import Channel, ConnectionClosed
from adrizzle.wire.checks import check_launch, check_map_outputs
from adrizzle.wire.connection import Connection
from adrizzle.wire.liveness import SilenceWatch
from adrizzle.wire.messages import (
    PROTOCOL_VERSION,
    BatchResult,
    CancelGroups,
    ClusterView,
    Draining,
    DriverLink,
    DropShared,
    FetchBlocks,
    GroupFailed,
    Heartbeat,
    Hello,
    LaunchGroup,
    MapOutputReady,
    MapOutputs,
    Message,
    OffsetsLogged,
    PeerLost,
    PutShared,
    RunTasks,
    Shutdown,
    SinkFailed,
    SlotDone,
    SlotNotice,
    StateCheckpoint,
)
from adrizzle.worker.peers import PeerLinks
from adrizzle.worker.retry import retrying
from adrizzle.worker.slot_pool import Slot, SlotPool, SlotStartError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

    from adrizzle.worker.config import WorkerConfig


log = logging.getLogger("adrizzle.worker")
T = TypeVar("T")

DRIVER = "driver"  # the one peer the worker's SilenceWatch follows
FORWARDED = frozenset({BatchResult, GroupFailed, StateCheckpoint, SinkFailed})  # slot -> driver
DRIVER_MESSAGES = (
    LaunchGroup,
    ClusterView,
    CancelGroups,
    Shutdown,
    Heartbeat,
    OffsetsLogged,
    PutShared,  # broadcast values and user code for every slot (adrizzle.driver.shared)
    DropShared,
)


def local_address_towards(host: str, port: int) -> str:
    """The local IP this host uses to reach ``host`` (no packet is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, port or 7077))
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class WorkerStartError(Exception):
    """The worker could not join the cluster (start its slots, connect or authenticate)."""


class DriverUnreachable(WorkerStartError):
    """The driver did not accept the connection (``--connect-retry`` retries this only)."""


class _StoppedDuringStart(Exception):
    """A stop was requested before the worker joined; the message is the reason."""


class WorkerRuntime:
    """One worker: its control connection, data links, slots and the groups in progress."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.name = config.name
        self.limits = config.limits
        self._draining = False
        self._silence = SilenceWatch(config.heartbeat_interval)
        self.pool = SlotPool(self._on_slot_message, self._on_slot_lost)
        self.peers = PeerLinks(
            config, on_message=self._on_data_message, on_link_lost=self._on_link_lost
        )
        # BSP mode: map outputs kept here until fetched, by (job, shuffle stage, reducer worker).
        # Keyed by (group, job, shuffle stage, reducer worker).
        self._held: dict[tuple[int, int, int, str], list[tuple[MapOutputReady, bytes]]] = {}
        self.channel: Channel | None = None
        # The slots' ``slot_done`` parts of a group, summed into the worker's one
        # ``group_done`` (a slot running a group alone acknowledges over its result link).
        self._acks = AckTally()
        self._stop: asyncio.Future[str] | None = None
        self.exit_code = 0

    @property
    def driver_url(self) -> str:
        return self.config.driver_url

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, self._drain)
        loop.add_signal_handler(signal.SIGINT, self._request_stop, "received SIGINT")
        try:
            await self._starting(
                self.pool.start(
                    self.config.cores,
                    timeout=self.config.start_timeout,
                    shuffle_timeout=self.config.shuffle_timeout,
                    max_block_bytes=self.config.max_frame_bytes,
                )
            )
            towards_driver = local_address_towards(self.config.host, self.config.port)
            host, port = self.config.data_listen or (towards_driver, 0)
            await self.peers.start(host, port, advertise_host=towards_driver)
            await self._starting(
                retrying(self._connect, self.config.connect_retry, (DriverUnreachable,))
            )
            log.info(
                "connected to driver %s as %s with %d cores (pid %d)",
                self.driver_url,
                self.name,
                self.config.cores,
                os.getpid(),
            )
            heartbeats = asyncio.ensure_future(self._heartbeat_loop())
            try:
                reason = await self._stop
            finally:
                heartbeats.cancel()
        except (WorkerStartError, SlotStartError) as exc:
            log.error("%s", exc)
            self.exit_code = 1
            reason = "could not join the cluster"
        except _StoppedDuringStart as stopped:
            reason = str(stopped)
        finally:
            if self.channel is not None:
                self.channel.close()
            await self.peers.close()
            await self.pool.close()
        log.info("worker %s exiting: %s", self.name, reason)
        return self.exit_code

    async def _starting(self, step: Coroutine[Any, Any, T]) -> T:
        """Run one start-up step unless a stop (SIGTERM, SIGINT) comes first: a worker that
        is told to go while its slots start goes at once instead of finishing the start."""
        assert self._stop is not None
        task = asyncio.ensure_future(step)
        stop: asyncio.Future[Any] = self._stop
        try:
            await asyncio.wait((task, stop), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if task.cancelled():
            raise _StoppedDuringStart(self._stop.result())
        return task.result()

    async def _heartbeat_loop(self) -> None:
        """A heartbeat to the driver every interval; a driver silent for longer than the
        timeout is gone (stopped, or cut off without a FIN): stop instead of waiting forever.
        Silence counts only while this loop ran (``SilenceWatch``): a starved worker does not
        leave because it could not listen."""
        watch = self._silence
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            now = time.monotonic()
            watch.tick(now)
            silent = watch.silent_for(DRIVER, now)
            if silent > self.config.heartbeat_timeout:
                log.warning(
                    "no frame from the driver %s for %.1f s (heartbeat timeout %g s)",
                    self.driver_url,
                    silent,
                    self.config.heartbeat_timeout,
                )
                self._request_stop("the driver went silent", code=1)
                return
            channel = self.channel
            if channel is not None and channel.is_open:
                channel.send(Heartbeat())

    def _drain(self) -> None:
        """SIGTERM: tell the driver we are leaving and exit when it says so (it finishes our
        groups first); a second SIGTERM, no driver, or ``drain_timeout`` s: exit now."""
        channel = self.channel
        if self._draining or channel is None or not channel.is_open:
            self._request_stop("received SIGTERM")
            return
        self._draining = True
        log.info("received SIGTERM: draining (finishing groups in flight before exiting)")
        channel.send(Draining(reason="received SIGTERM"))
        asyncio.get_running_loop().call_later(
            self.config.drain_timeout, self._request_stop, "drain timed out"
        )

    def _request_stop(self, reason: str, code: int = 0) -> None:
        if self._stop is not None and not self._stop.done():
            if code:
                self.exit_code = code
            self._stop.set_result(reason)

    async def _connect(self) -> Channel:
        """Dial and authenticate; ``self.channel`` is set the moment authentication succeeds."""
        loop = asyncio.get_running_loop()
        hello = Hello(
            version=PROTOCOL_VERSION,
            role="worker",
            id=self.name,
            nonce=auth.new_nonce(),
            cores=self.config.cores,
            pid=os.getpid(),
            data_address=self.config.data_advertise or self.peers.address,
        )
        conn = Connection(
            client=True,
            token=self.config.token,
            hello=hello,
            accepts=DRIVER_MESSAGES,
            limits=self.limits,
        )
        try:
            _transport, channel = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Channel(
                        conn,
                        on_message=self._on_driver_message,
                        on_authenticated=self._on_driver_authenticated,
                        on_closed=self._on_driver_closed,
                        handshake_timeout=self.config.handshake_timeout,
                        name=self.name,
                    ),
                    self.config.host,
                    self.config.port,
                    ssl=self.config.tls.client_context() if self.config.tls else None,
                    ssl_handshake_timeout=self.config.handshake_timeout
                    if self.config.tls
                    else None,
                ),
                self.config.connect_timeout,
            )
        except ssl.SSLError as exc:
            raise WorkerStartError(
                f"TLS handshake with driver {self.driver_url} failed: {exc}"
            ) from None
        except (OSError, TimeoutError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timed out"
            raise DriverUnreachable(
                f"cannot connect to driver {self.driver_url}: {detail}"
            ) from None
        try:
            await channel.authenticated
        except AuthenticationError as exc:
            msg = f"authentication with driver {self.driver_url} failed: {exc}"
            raise WorkerStartError(msg) from None
        except ProtocolError as exc:
            hint = ""
            if self.config.tls is None and isinstance(exc, ConnectionClosed) and exc.by_peer:
                hint = " (if the driver requires TLS, pass --tls-ca-file, --tls-cert, --tls-key)"
            raise WorkerStartError(f"driver {self.driver_url} refused us: {exc}{hint}") from None
        return channel

    # -- driver -> worker ----------------------------------------------------------------

    def _on_driver_authenticated(self, channel: Channel, hello: Hello) -> None:
        # Called from the channel's data_received before the first message of the open
        # connection is dispatched: the driver launches a group as soon as it has
        # authenticated us (its launch_group may share a read with its proof), so the runtime
        # must know its channel here, not when run() resumes after _connect() (loop
        # iterations later), or the slots' answers to that launch find no channel.
        self.channel = channel
        self._silence.heard(DRIVER, time.monotonic())
        if self.config.result_links:
            self._offer_result_links()

    def _offer_result_links(self) -> None:
        """Offer each slot a result link to the driver (``DriverLink``): a slot dials when a
        group can use it (``slot_results.takes_link``), and that group's results and
        acknowledgement then skip this process."""
        tls = self.config.tls
        for slot in self.pool.slots:
            link = DriverLink(
                host=self.config.host,
                port=self.config.port,
                token=self.config.token,
                worker=self.name,
                pid=os.getpid(),
                slot=slot.index,
                handshake_timeout_ms=int(self.config.handshake_timeout * 1000),
                tls_ca_file=tls.ca_file if tls else "",
                tls_cert=tls.cert if tls else "",
                tls_key=tls.key if tls else "",
            )
            slot.channel.send(link)

    def _on_driver_message(self, channel: Channel, msg: Message, payload: bytes) -> None:
        self._silence.heard(DRIVER, time.monotonic())
        if type(msg) is LaunchGroup:
            self._launch(msg, payload)
        elif type(msg) is ClusterView:
            if len(msg.workers) != len(msg.data_addresses):
                raise RemoteProtocolError("cluster_view: lists differ in length")
            self.peers.addresses = dict(zip(msg.workers, msg.data_addresses, strict=True))
        elif type(msg) is CancelGroups:
            self._cancel(msg)
        elif type(msg) is OffsetsLogged:
            for slot in self.pool.slots:  # the slots with staged sink outputs commit them
                slot.channel.send(msg)
        elif type(msg) is PutShared or type(msg) is DropShared:
            for slot in self.pool.slots:  # every slot keeps them, payload unopened
                slot.channel.send(msg, payload)
        elif type(msg) is Shutdown:
            self._request_stop("the driver asked us to shut down")

    def _cancel(self, msg: CancelGroups) -> None:
        """Forget these groups (a worker was lost; they are re-run as new groups)."""
        cancelled = set(msg.groups)
        self._acks.forget(cancelled)
        for key in [k for k in self._held if k[0] in cancelled]:
            del self._held[key]
        for slot in self.pool.slots:
            slot.channel.send(msg)

    def _launch(self, msg: LaunchGroup, payload: bytes) -> None:
        n = len(msg.slot_ids)
        state = check_launch(msg, len(payload), len(self.pool.slots))
        view = memoryview(payload)
        program = view[: msg.program_len]
        offset = msg.program_len
        for slot_id, data_len, state_len in zip(msg.slot_ids, msg.slot_data, state, strict=True):
            run = RunTasks(
                group=msg.group,
                first_job=msg.first_job,
                last_job=msg.last_job,
                stages=msg.stages,
                placement_workers=msg.placement_workers,
                placement_slots=msg.placement_slots,
                worker=self.name,
                slot=slot_id,
                program_len=msg.program_len,
                release=msg.release,
                linger_us=msg.linger_us,
                hold=msg.hold,
                state_len=state_len,
                checkpoint=msg.checkpoint,
                slots=n,
            )
            data = view[offset : offset + data_len + state_len]
            offset += data_len + state_len
            body = payload if n == 1 else b"".join((program, data))
            self.pool.slots[slot_id].channel.send(run, body)
        if msg.fetch:  # BSP: pull this wave's inputs from every map side
            fetch = FetchBlocks(msg.group, msg.first_job, msg.last_job, msg.fetch, self.name)
            for worker in sorted(set(msg.placement_workers)):
                if worker == self.name:
                    self._serve_fetch(fetch, self._deliver_local)
                else:
                    self.peers.send(worker, fetch, b"")

    # -- shuffle blocks ------------------------------------------------------------------

    def _route_block(self, msg: MapOutputReady | MapOutputs, payload: bytes) -> None:
        if type(msg) is MapOutputReady and msg.hold:
            key = (msg.group, msg.job, msg.shuffle, msg.worker)
            self._held.setdefault(key, []).append((msg, payload))
        elif msg.worker == self.name:
            self._deliver_local(msg, payload)
        else:
            self.peers.send(msg.worker, msg, payload)

    def _deliver_local(self, msg: MapOutputReady | MapOutputs, payload: bytes) -> None:
        if not 0 <= msg.slot < len(self.pool.slots):
            raise RemoteProtocolError(f"{msg.TAG} for slot {msg.slot}: no such slot")
        if type(msg) is MapOutputs:
            check_map_outputs(msg, len(payload))
        self.pool.slots[msg.slot].channel.send(msg, payload)

    def _serve_fetch(
        self, fetch: FetchBlocks, send: Callable[[MapOutputReady, bytes], None]
    ) -> None:
        # Walk what is held, not the requested range: its size is the peer's to choose.
        shuffles = set(fetch.shuffles)
        wanted = sorted(
            key
            for key in self._held
            if key[0] == fetch.group
            and fetch.first_job <= key[1] < fetch.last_job
            and key[2] in shuffles
            and key[3] == fetch.worker
        )
        for key in wanted:
            for msg, payload in self._held.pop(key):
                send(msgspec.structs.replace(msg, hold=0), payload)

    def _on_link_lost(self, peer: str, reason: str) -> None:
        log.info("data link to worker %s lost: %s", peer, reason)  # the driver decides
        channel = self.channel
        if channel is not None and channel.is_open:
            channel.send(PeerLost(peer=peer, reason=reason))

    def _on_data_message(self, channel: Channel, msg: Message, payload: bytes) -> None:
        if type(msg) is MapOutputReady or type(msg) is MapOutputs:
            if msg.worker != self.name:
                raise RemoteProtocolError(f"{msg.TAG} for {msg.worker} sent to {self.name}")
            self._deliver_local(msg, payload)
        elif type(msg) is FetchBlocks:
            self._serve_fetch(msg, channel.send)

    def _on_driver_closed(self, channel: Channel, exc: BaseException | None) -> None:
        if isinstance(exc, ConnectionClosed) and not exc.by_peer:
            return
        if channel.authenticated.done() and not channel.authenticated.exception():
            log.warning("lost the driver %s: %s", self.driver_url, exc)
            self._request_stop("the driver went away")

    # -- slot -> worker ------------------------------------------------------------------

    def _on_slot_message(self, slot: Slot, msg: Message, payload: bytes) -> None:
        channel = self.channel
        if channel is None or not channel.is_open:
            # Slots only get work over an open driver channel (see _on_driver_authenticated),
            # so this is the driver going away under a group: the worker is stopping.
            log.debug("driver connection closed: dropping %s from slot %d", msg.TAG, slot.index)
            return
        if type(msg) in FORWARDED:
            channel.send(msg, payload)
        elif type(msg) is MapOutputReady or type(msg) is MapOutputs:
            self._route_block(msg, payload)
        elif type(msg) is SlotNotice:
            log.warning("%s", msg.message)
        elif type(msg) is SlotDone:
            done = self._acks.add(msg)
            if done is not None:
                channel.send(done)

    def _on_slot_lost(self, slot: Slot) -> None:
        code = slot.process.poll()
        log.error("slot %d (pid %d) died (exit code %s)", slot.index, slot.process.pid, code)
        self._request_stop(f"slot {slot.index} died", code=1)


def slot_pids(runtime: WorkerRuntime) -> Sequence[int]:
    return [s.process.pid for s in runtime.pool.slots]
