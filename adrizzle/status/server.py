"""The aiohttp status server on the driver loop. Read-only: it serves snapshots of
``Engine.statistics()`` and never changes engine state.

- ``GET /api/status``: the snapshot as JSON, plus ``loop_lag_s`` (measured here);
- ``GET /metrics``: the snapshot in Prometheus text format (``adrizzle_*``);
- ``GET /health``: 200 while the driver loop keeps time and a worker takes groups, else 503
  with the reason;
- ``GET /``: the live dashboard (``static/``), which polls ``/api/status``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from adrizzle.status import prometheus
from adrizzle.wire.address import parse_address

#: What the server reads: the engine's ``statistics`` (a fresh plain dict per call).
Snapshot = Callable[[], dict[str, Any]]

STATIC_DIR = Path(__file__).parent / "static"

# The lag watch: a timer every LAG_INTERVAL s; the loop is "unresponsive" when one of the
# last LAG_SAMPLES timers ran more than LAG_LIMIT s late (the scheduler is stuck in a call).
LAG_INTERVAL = 0.25
LAG_SAMPLES = 20
LAG_LIMIT = 1.0


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class StatusServer:
    """Serves ``snapshot()`` (the engine's ``statistics``): it reads driver state only through
    that callable and never changes it."""

    def __init__(self, snapshot: Snapshot, address: str) -> None:
        self._snapshot = snapshot
        self._host, self._port = parse_address(address, 8780)
        self._runner: web.AppRunner | None = None
        self._lag_watch: asyncio.Task[None] | None = None
        self._lags: deque[float] = deque(maxlen=LAG_SAMPLES)
        self._registry = prometheus.registry_for(self._read)
        self.url = ""
        self.app = web.Application()
        self.app.add_routes(
            [
                web.get("/", self._index),
                web.get("/api/status", self._status),
                web.get("/metrics", self._metrics),
                web.get("/health", self._health),
                web.static("/static", STATIC_DIR),
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
        self._lag_watch = asyncio.ensure_future(self._watch_lag())

    async def stop(self) -> None:
        if self._lag_watch is not None:
            self._lag_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_watch
            self._lag_watch = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _watch_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            self._lags.append(max(0.0, loop.time() - before - LAG_INTERVAL))

    @property
    def loop_lag_s(self) -> float:
        return max(self._lags, default=0.0)

    def _read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self._snapshot(), {"loop_lag_s": self.loop_lag_s}

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def _status(self, request: web.Request) -> web.Response:
        stats = self._snapshot()
        stats["loop_lag_s"] = self.loop_lag_s
        return _json(stats)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=prometheus.render(self._registry),
            headers={"Content-Type": prometheus.CONTENT_TYPE_LATEST},
        )

    async def _health(self, request: web.Request) -> web.Response:
        stats = self._snapshot()
        workers = stats["workers"]
        lag = self.loop_lag_s
        body: dict[str, Any] = {"workers": len(workers), "loop_lag_s": lag}
        running = [w["id"] for w in workers if w["state"] == "running"]
        if lag > LAG_LIMIT:
            reason = f"the driver loop ran a timer {lag:.2f} s late (limit {LAG_LIMIT:g} s)"
        elif not workers:
            reason = "no worker connected"
        elif not running:
            draining = ", ".join(w["id"] for w in workers)
            reason = f"no worker takes new groups: all are draining ({draining})"
        else:
            return _json({"status": "ok", **body})
        return _json({"status": "unhealthy", "reason": reason, **body}, 503)
