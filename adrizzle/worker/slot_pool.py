"""The worker's slot processes: spawn, connect over socketpairs, forward frames, stop.

Each slot is ``python -m adrizzle.worker.slot_process FD`` holding one end of a socketpair; the
worker talks to it through a trusted ``Channel`` (no handshake: no other process can reach the
pair). A slot exits when its socket closes, so slots never outlive their worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from adrizzle.wire.auth import TOKEN_ENV
from adrizzle.wire.channel import Channel
from adrizzle.wire.connection import Connection
from adrizzle.wire.messages import (
    BatchResult,
    GroupFailed,
    MapOutputReady,
    MapOutputs,
    Message,
    Shutdown,
    SinkFailed,
    SlotDone,
    SlotNotice,
    SlotReady,
    StateCheckpoint,
)

SLOT_MESSAGES = (
    SlotReady,
    SlotNotice,
    BatchResult,
    SlotDone,
    MapOutputReady,
    MapOutputs,
    GroupFailed,
    StateCheckpoint,
    SinkFailed,
)


class SlotStartError(Exception):
    """The worker's slot processes could not be started."""


@dataclasses.dataclass(slots=True)
class Slot:
    index: int
    process: subprocess.Popen[bytes]
    channel: Channel
    ready: asyncio.Future[int]


OnSlotMessage = Callable[[Slot, Message, bytes], None]
OnSlotLost = Callable[[Slot], None]


class SlotPool:
    def __init__(self, on_message: OnSlotMessage, on_lost: OnSlotLost) -> None:
        self._on_message = on_message
        self._on_lost = on_lost
        self.slots: list[Slot] = []
        self._closing = False

    async def start(
        self,
        n: int,
        timeout: float = 60.0,
        shuffle_timeout: float = 60.0,
        max_block_bytes: int = 1 << 30,
    ) -> None:
        """Spawn ``n`` slots and wait until each has said it is ready (a group is only ever
        launched to ready slots: the worker dials the driver after this returns).

        Raises ``SlotStartError`` (one line naming the cause) when a slot exits or is not
        ready within ``timeout`` s; the slots spawned so far are then left for ``close``."""
        loop = asyncio.get_running_loop()
        # A fixed hash seed in every slot of the cluster: shuffle keys that fall back to hash()
        # (see adrizzle.plan.partitioning) then pick the same reducer in every process. The
        # cluster token stays out of the slots: they never dial anyone, and user code runs there.
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        env["PYTHONHASHSEED"] = "0"
        for index in range(n):
            ours, theirs = socket.socketpair()
            try:
                # Popen only forks and execs: it does not wait for the child, so it does not
                # block the loop for longer than a fork.
                proc = subprocess.Popen(  # noqa: ASYNC220
                    [
                        sys.executable,
                        "-m",
                        "adrizzle.worker.slot_process",
                        str(theirs.fileno()),
                        "--shuffle-timeout",
                        str(shuffle_timeout),
                        "--max-block-bytes",
                        str(max_block_bytes),
                    ],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    env=env,
                )
            except OSError as exc:
                ours.close()
                raise SlotStartError(f"cannot start slot {index}: {exc}") from None
            finally:
                theirs.close()
            ready: asyncio.Future[int] = loop.create_future()
            conn = Connection(
                client=True, token=None, hello=None, accepts=SLOT_MESSAGES, trusted=True
            )
            try:
                _transport, channel = await loop.create_connection(
                    lambda conn=conn, index=index, ready=ready: Channel(  # type: ignore[misc]
                        conn,
                        on_message=lambda _ch, m, p: self._dispatch(index, ready, m, p),
                        on_closed=lambda _ch, _exc: self._closed(index, ready),
                        name=f"slot-{index}",
                    ),
                    sock=ours,
                )
            except BaseException:
                proc.kill()
                proc.wait()
                ours.close()
                raise
            self.slots.append(Slot(index, proc, channel, ready))
        _done, late_slots = await asyncio.wait([s.ready for s in self.slots], timeout=timeout)
        for slot in self.slots:
            if slot.ready.done():
                slot.ready.result()  # a slot that exited during start-up: SlotStartError
        if late_slots:
            late = [s.index for s in self.slots if not s.ready.done()]
            raise SlotStartError(
                f"slot processes {late} did not start within {timeout:g} s "
                "(an overloaded host, or a Python environment that cannot import adrizzle)"
            )

    def _dispatch(
        self, index: int, ready: asyncio.Future[int], msg: Message, payload: bytes
    ) -> None:
        if type(msg) is SlotReady:
            if not ready.done():
                ready.set_result(msg.pid)
            return
        self._on_message(self.slots[index], msg, payload)

    def _closed(self, index: int, ready: asyncio.Future[int]) -> None:
        if not ready.done():
            code = self.slots[index].process.poll() if index < len(self.slots) else None
            ready.set_exception(
                SlotStartError(f"slot {index} exited during start-up (exit code {code})")
            )
        if not self._closing and index < len(self.slots):
            self._on_lost(self.slots[index])

    async def close(self, grace: float = 2.0) -> None:
        self._closing = True
        for slot in self.slots:
            if slot.channel.is_open:
                slot.channel.send(Shutdown())
            slot.channel.close()
        deadline = time.monotonic() + grace
        # Polling: a child's exit is not an awaitable event without a child watcher.
        while time.monotonic() < deadline and any(s.process.poll() is None for s in self.slots):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        self.kill()

    def kill(self) -> None:
        """Synchronous: SIGKILL slots still running and reap them all."""
        self._closing = True
        for slot in self.slots:
            if slot.process.poll() is None:
                slot.process.kill()
            try:
                slot.process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
