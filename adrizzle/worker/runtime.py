"""The worker process: one authenticated control connection to the driver, and its slots.

A ``launch_group`` frame is split into one ``run_tasks`` frame per slot (payload bytes forwarded
unopened); each slot's per-batch results are forwarded to the driver as they arrive; when every
slot has finished the group, the worker sends the group's single ``group_done``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
from typing import TYPE_CHECKING

from adrizzle.errors import AuthenticationError, ProtocolError, RemoteProtocolError
from adrizzle.wire import auth
from adrizzle.wire.channel import Channel, ConnectionClosed
from adrizzle.wire.connection import Connection
from adrizzle.wire.framing import FrameLimits
from adrizzle.wire.messages import (
    PROTOCOL_VERSION,
    BatchResult,
    GroupDone,
    Heartbeat,
    Hello,
    LaunchGroup,
    Message,
    RunTasks,
    Shutdown,
    SlotDone,
)
from adrizzle.worker.slots import Slot, SlotPool

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("adrizzle.worker")

DRIVER_MESSAGES = (LaunchGroup, Shutdown, Heartbeat)


class WorkerStartError(Exception):
    """The worker could not join the cluster (connect or authenticate)."""


@dataclasses.dataclass(slots=True)
class _GroupTally:
    slots_left: int
    tasks: int = 0
    failed: int = 0
    busy_us: int = 0


class WorkerRuntime:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        token: str,
        cores: int,
        name: str,
        connect_timeout: float = 10.0,
        handshake_timeout: float = 10.0,
        max_frame_bytes: int = 1 << 30,
    ) -> None:
        self.host, self.port = host, port
        self.token = token
        self.cores = cores
        self.name = name
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.limits = FrameLimits(max_meta=1 << 24, max_payload=max_frame_bytes)
        self.pool = SlotPool(self._on_slot_message, self._on_slot_lost)
        self.channel: Channel | None = None
        self._groups: dict[int, _GroupTally] = {}
        self._stop: asyncio.Future[str] | None = None
        self.exit_code = 0

    @property
    def driver_url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, f"received {signal.Signals(sig).name}")
        try:
            await self.pool.start(self.cores)
            self.channel = await self._connect()
            log.info(
                "connected to driver %s as %s with %d cores (pid %d)",
                self.driver_url,
                self.name,
                self.cores,
                os.getpid(),
            )
            reason = await self._stop
        except WorkerStartError as exc:
            log.error("%s", exc)
            self.exit_code = 1
            reason = "could not join the cluster"
        finally:
            if self.channel is not None:
                self.channel.close()
            await self.pool.close()
        log.info("worker %s exiting: %s", self.name, reason)
        return self.exit_code

    def _request_stop(self, reason: str, code: int = 0) -> None:
        if self._stop is not None and not self._stop.done():
            if code:
                self.exit_code = code
            self._stop.set_result(reason)

    async def _connect(self) -> Channel:
        loop = asyncio.get_running_loop()
        hello = Hello(
            version=PROTOCOL_VERSION,
            role="worker",
            id=self.name,
            nonce=auth.new_nonce(),
            cores=self.cores,
            pid=os.getpid(),
        )
        conn = Connection(
            client=True,
            token=self.token,
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
                        on_closed=self._on_driver_closed,
                        handshake_timeout=self.handshake_timeout,
                        name=self.name,
                    ),
                    self.host,
                    self.port,
                ),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else "timed out"
            raise WorkerStartError(
                f"cannot connect to driver {self.driver_url}: {detail}"
            ) from None
        try:
            await channel.authenticated
        except AuthenticationError as exc:
            msg = f"authentication with driver {self.driver_url} failed: {exc}"
            raise WorkerStartError(msg) from None
        except ProtocolError as exc:
            raise WorkerStartError(f"driver {self.driver_url} refused us: {exc}") from None
        return channel

    # -- driver -> worker ----------------------------------------------------------------

    def _on_driver_message(self, channel: Channel, msg: Message, payload: bytes) -> None:
        if type(msg) is LaunchGroup:
            self._launch(msg, payload)
        elif type(msg) is Shutdown:
            self._request_stop("the driver asked us to shut down")

    def _launch(self, msg: LaunchGroup, payload: bytes) -> None:
        n = len(msg.slot_ids)
        if len(msg.slot_parts) != n or len(msg.slot_data) != n:
            raise RemoteProtocolError("launch_group: slot lists differ in length")
        if msg.program_len + sum(msg.slot_data) != len(payload):
            raise RemoteProtocolError("launch_group: payload length does not match its parts")
        if any(not 0 <= s < len(self.pool.slots) for s in msg.slot_ids):
            raise RemoteProtocolError(f"launch_group: slot ids {msg.slot_ids} out of range")
        self._groups[msg.group] = _GroupTally(n)
        view = memoryview(payload)
        program = view[: msg.program_len]
        offset = msg.program_len
        for slot_id, parts, data_len in zip(
            msg.slot_ids, msg.slot_parts, msg.slot_data, strict=True
        ):
            run = RunTasks(
                group=msg.group,
                first_job=msg.first_job,
                last_job=msg.last_job,
                parts=parts,
                program_len=msg.program_len,
                release=msg.release,
                linger_us=msg.linger_us,
            )
            data = view[offset : offset + data_len]
            offset += data_len
            body = payload if n == 1 else b"".join((program, data))
            self.pool.slots[slot_id].channel.send(run, body)

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
            return
        if type(msg) is BatchResult:
            channel.send(msg, payload)
        elif type(msg) is SlotDone:
            tally = self._groups.get(msg.group)
            if tally is None:
                return
            tally.slots_left -= 1
            tally.tasks += msg.tasks
            tally.failed += msg.failed
            tally.busy_us += msg.busy_us
            if tally.slots_left == 0:
                del self._groups[msg.group]
                channel.send(GroupDone(msg.group, tally.tasks, tally.failed, tally.busy_us))

    def _on_slot_lost(self, slot: Slot) -> None:
        code = slot.process.poll()
        log.error("slot %d (pid %d) died (exit code %s)", slot.index, slot.process.pid, code)
        self._request_stop(f"slot {slot.index} died", code=1)


def slot_pids(runtime: WorkerRuntime) -> Sequence[int]:
    return [s.process.pid for s in runtime.pool.slots]
