"""A fake driver for the simulated workers' tests: the real driver side of the handshake on
a loopback port, every frame a worker sends put on a queue, nothing else."""

from __future__ import annotations

import asyncio

from adrizzle.driver.cluster import WORKER_MESSAGES
from adrizzle.wire import auth
from adrizzle.wire.channel import Channel
from adrizzle.wire.connection import Connection
from adrizzle.wire.messages import PROTOCOL_VERSION, Heartbeat, Hello, Message

TOKEN = "sim-unit-token"


class FakeDriver:
    """A listening port speaking the driver's side of the handshake; frames go to a queue."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.frames: asyncio.Queue[tuple[Message, bytes]] = asyncio.Queue()
        self.hello: Hello | None = None
        self.channel: Channel | None = None  # the last worker that joined
        self.channels: list[Channel] = []
        self.closed = asyncio.Event()  # set when any connection closes

    def _channel(self) -> Channel:
        conn = Connection(
            client=False,
            token=self.token,
            hello=Hello(PROTOCOL_VERSION, "driver", "driver", auth.new_nonce()),
            accepts=WORKER_MESSAGES,
        )
        return Channel(
            conn,
            on_message=lambda _c, m, p: self.frames.put_nowait((m, p)),
            on_authenticated=self._joined,
            on_closed=lambda _c, _e: self.closed.set(),
        )

    def _joined(self, channel: Channel, hello: Hello) -> None:
        self.hello, self.channel = hello, channel
        self.channels.append(channel)

    async def next(self, timeout: float = 5.0) -> tuple[Message, bytes]:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def quiet(self, seconds: float) -> list[Message]:
        """Frames (heartbeats aside) arriving within ``seconds``."""
        got: list[Message] = []
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                msg = (await asyncio.wait_for(self.frames.get(), left))[0]
            except TimeoutError:
                break
            if not isinstance(msg, Heartbeat):
                got.append(msg)
        return got

    async def __aenter__(self) -> FakeDriver:
        self.server = await asyncio.get_running_loop().create_server(self._channel, "127.0.0.1", 0)
        self.host, self.port = self.server.sockets[0].getsockname()[:2]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for channel in self.channels:
            channel.close()
        self.server.close()
        await self.server.wait_closed()
