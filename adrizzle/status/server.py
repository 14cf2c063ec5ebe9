"""The aiohttp status server on the driver loop. Read-only: it serves snapshots of
``Engine.statistics()`` and never changes engine state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from adrizzle.api.engine import Engine


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


class StatusServer:
    def __init__(self, engine: Engine, address: str) -> None:
        from adrizzle.api.engine import parse_address

        self._engine = engine
        self._host, self._port = parse_address(address, 8780)
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/api/status", self._status),
                web.get("/health", self._health),
            ]
        )

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        host = f"[{host}]" if ":" in host else host
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _status(self, request: web.Request) -> web.Response:
        return _json(self._engine.statistics())

    async def _health(self, request: web.Request) -> web.Response:
        stats = self._engine.statistics()
        if not stats["workers"]:
            return _json({"status": "unhealthy", "reason": "no worker connected"}, 503)
        return _json({"status": "ok", "workers": len(stats["workers"])})
