"""A worker answers its first group even when its start-up coroutine resumes late.

The race (issue 14): the driver launches a group as soon as it has authenticated a worker. The
worker's channel dispatches that ``launch_group`` straight from ``data_received`` and its slots
answer; the runtime used to learn its driver channel only when ``run()`` resumed after
``await self._connect()``, several loop iterations later (on Python 3.11 ``wait_for`` runs the
connect as a task of its own). Under CPU load the slots' answers arrived inside that window and
were dropped, so the driver saw no progress until ``stall_timeout``. Here the window is made
wide deterministically: ``_connect`` returns one second late.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import adrizzle
from adrizzle.wire import auth
from adrizzle.wire.address import parse_address
from adrizzle.worker.config import WorkerConfig
from adrizzle.worker.runtime import WorkerRuntime

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_results_of_a_launch_that_beats_the_connect_continuation_arrive(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = WorkerRuntime._connect

    async def late_connect(self: WorkerRuntime) -> object:
        channel = await original(self)
        await asyncio.sleep(1.0)  # run() resumes late: the driver's launch is already here
        return channel

    monkeypatch.setattr(WorkerRuntime, "_connect", late_connect)
    token = auth.new_token()
    caplog.set_level(logging.WARNING, logger="adrizzle")
    async with adrizzle.Engine(listen="127.0.0.1:0", token=token, stall_timeout=None) as engine:
        host, port = parse_address(engine.address)
        config = WorkerConfig(host=host, port=port, token=token, cores=1, name="late-0")
        runtime = WorkerRuntime(config)
        worker = asyncio.ensure_future(runtime.run())
        try:
            await engine.wait_for_workers(1, timeout=30)
            data = engine.parallelize(range(200), partitions=2).cache()
            # Launched while the worker's run() still sleeps in late_connect.
            results = await engine.run_jobs([data] * 20, sum, group_size=10, timeout=10)
            assert results == [[sum(range(100)), sum(range(100, 200))]] * 20
            assert await engine.wait_settled(timeout=10)
            stats = engine.statistics()
            assert stats["recoveries"] == 0
            assert stats["frames_received"]["group_done"] == 2
        finally:
            await engine.close()
            assert await asyncio.wait_for(worker, 15) == 0
    assert not [r for r in caplog.records if "no progress" in r.getMessage()]
