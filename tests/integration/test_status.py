"""The status server over real HTTP against a real local cluster: JSON, Prometheus, health,
dashboard files, and that polling it leaves scheduling alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import adrizzle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

P, K = 4, 1000
EXPECTED = [sum(range(p * K, (p + 1) * K)) for p in range(P)]
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)


@pytest.fixture
async def engine() -> AsyncIterator[adrizzle.Engine]:
    async with adrizzle.Engine.local(workers=2, cores=1, status="127.0.0.1:0") as eng:
        yield eng


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


def metrics_by_name(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    raise KeyError(f"no sample {name} {labels}")


async def test_status_url_is_off_by_default() -> None:
    async with adrizzle.Engine(listen="127.0.0.1:0") as engine:
        assert engine.status_url is None


async def test_api_status_reports_workers_batches_and_timings(
    engine: adrizzle.Engine, http: aiohttp.ClientSession
) -> None:
    assert engine.status_url is not None
    assert engine.status_url.startswith("http://127.0.0.1:")
    status, before = await get_json(http, f"{engine.status_url}/api/status")
    assert status == 200
    assert before["version"] == adrizzle.__version__
    assert before["micro_batches_completed"] == 0
    assert before["batch_latency_s"]["p50"] is None
    assert before["batch_latency_s"]["recent"] == []
    assert {w["id"] for w in before["workers"]} == {w["id"] for w in engine.workers}
    for w in before["workers"]:
        assert {"id", "address", "cores", "slots", "last_heartbeat", "tasks_done", "state"} <= set(
            w
        )
        assert w["state"] == "running"
        assert w["slots"] == 1

    data = engine.parallelize(range(P * K), partitions=P).cache()
    assert await engine.run_jobs([data] * 30, sum, group_size=5, timeout=30) == [EXPECTED] * 30
    await engine.wait_settled()
    _, after = await get_json(http, f"{engine.status_url}/api/status")

    assert after["micro_batches_completed"] == 30
    assert after["micro_batches_timed"] == 30
    assert after["jobs_failed"] == 0
    assert after["tasks_completed"] == 30 * P
    assert sum(w["tasks_done"] for w in after["workers"]) == 30 * P
    assert after["group_size"] == 5
    assert after["recent_group_sizes"] == [5] * 6
    assert after["groups_launched"] == after["groups_acked"] == 6
    assert after["groups_in_flight"] == 0
    assert after["uptime_s"] > before["uptime_s"]
    for key in ("batch_latency_s", "scheduling_delay_s", "processing_time_s"):
        series = after[key]
        assert len(series["recent"]) == 30
        assert all(v >= 0 for v in series["recent"])
        assert 0 <= series["p50"] <= series["p99"] <= series["max"]
    # Latency is scheduling delay plus processing time, batch by batch.
    for lat, delay, proc in zip(
        after["batch_latency_s"]["recent"],
        after["scheduling_delay_s"]["recent"],
        after["processing_time_s"]["recent"],
        strict=True,
    ):
        assert lat == pytest.approx(delay + proc)
    assert after["histograms"]["batch_latency_s"]["count"] == 30
    # Frames and bytes by type: one launch per worker per group.
    launches = after["frames_sent"]["launch_group"] - before["frames_sent"].get("launch_group", 0)
    assert launches == 6 * 2
    assert after["bytes_sent"]["launch_group"] > 0
    assert after["frames_received"]["group_done"] == 6 * 2
    assert after["failures"] == after["recoveries"] == 0
    assert after["loop_lag_s"] >= 0


async def test_metrics_parse_as_prometheus_text(
    engine: adrizzle.Engine, http: aiohttp.ClientSession
) -> None:
    data = engine.parallelize(range(P * K), partitions=P).cache()
    await engine.run_jobs([data] * 20, sum, group_size=4, timeout=30)
    await engine.wait_settled()
    async with http.get(f"{engine.status_url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    families = metrics_by_name(text)
    assert all(name.startswith("adrizzle_") for name in families)
    assert families["adrizzle_batch_latency_seconds"].type == "histogram"
    assert families["adrizzle_scheduling_delay_seconds"].type == "histogram"
    for counter in ("adrizzle_tasks", "adrizzle_groups_launched", "adrizzle_frames"):
        assert families[counter].type == "counter"
    for gauge in ("adrizzle_workers", "adrizzle_group_size"):
        assert families[gauge].type == "gauge"

    assert sample(families, "adrizzle_micro_batches_total", outcome="ok") == 20
    assert sample(families, "adrizzle_micro_batches_total", outcome="failed") == 0
    assert sample(families, "adrizzle_batch_latency_seconds_count") == 20
    assert sample(families, "adrizzle_batch_latency_seconds_bucket", le="+Inf") == 20
    assert sample(families, "adrizzle_scheduling_delay_seconds_count") == 20
    assert sample(families, "adrizzle_tasks_total") == 20 * P
    assert sample(families, "adrizzle_groups_launched_total") == 5
    assert sample(families, "adrizzle_groups_completed_total") == 5
    assert sample(families, "adrizzle_frames_total", direction="sent", type="launch_group") == 10
    assert sample(families, "adrizzle_workers", state="running") == 2
    assert sample(families, "adrizzle_group_size") == 4
    assert sample(families, "adrizzle_failures_total") == 0
    assert sample(families, "adrizzle_build_info", version=adrizzle.__version__) == 1
    # Buckets are cumulative.
    buckets = [
        s.value
        for s in families["adrizzle_batch_latency_seconds"].samples
        if s.name.endswith("_bucket")
    ]
    assert buckets == sorted(buckets)


async def test_health_follows_the_workers(http: aiohttp.ClientSession) -> None:
    async with adrizzle.Engine.local(workers=1, cores=1, status="127.0.0.1:0") as engine:
        url = f"{engine.status_url}/health"
        status, body = await get_json(http, url)
        assert (status, body["status"], body["workers"]) == (200, "ok", 1)

        [worker] = engine.workers
        await engine.remove_worker(worker["id"])
        status, body = await get_json(http, url)
        assert status == 503
        assert body["status"] == "unhealthy"
        assert body["reason"] == "no worker connected"

        await engine.add_workers(1)
        status, body = await get_json(http, url)
        assert (status, body["status"]) == (200, "ok")


async def test_health_without_any_worker(http: aiohttp.ClientSession) -> None:
    async with adrizzle.Engine(listen="127.0.0.1:0", status="127.0.0.1:0") as engine:
        status, body = await get_json(http, f"{engine.status_url}/health")
    assert status == 503
    assert body["reason"] == "no worker connected"


async def test_dashboard_page_and_its_files_are_served(
    engine: adrizzle.Engine, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{engine.status_url}/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    scripts = ["/static/uPlot.iife.min.js", "/static/dashboard.js"]
    for path in [*scripts, "/static/uPlot.min.css", "/static/dashboard.css"]:
        assert path in page
        async with http.get(f"{engine.status_url}{path}") as resp:
            assert resp.status == 200, path
            assert len(await resp.read()) > 100
    async with http.get(f"{engine.status_url}/static/../server.py") as resp:
        assert resp.status in (403, 404)


async def test_polling_the_status_server_leaves_scheduling_alone(
    engine: adrizzle.Engine, http: aiohttp.ClientSession
) -> None:
    """Polled all through a run (and between every few micro-batches, on the same loop), the
    engine still sends one launch and gets one ack per worker per group, and every result."""
    data = engine.parallelize(range(P * K), partitions=P).cache()
    await engine.run_jobs([data] * 2, sum, timeout=30)  # ships the data, loads the function
    await engine.wait_settled()
    before = engine.statistics()
    polls = 0
    stop = asyncio.Event()

    async def poll_forever() -> None:
        nonlocal polls
        while not stop.is_set():
            for path in ("/api/status", "/metrics", "/health", "/"):
                async with http.get(f"{engine.status_url}{path}") as resp:
                    assert resp.status == 200
                    await resp.read()
                polls += 1

    poller = asyncio.ensure_future(poll_forever())
    try:
        seen = []
        async for job in engine.iter_jobs([data] * 200, sum, group_size=10, timeout=30):
            assert job.values == EXPECTED
            seen.append(job.index)
            if job.index % 20 == 0:  # a poll between micro-batches, interleaved for sure
                status, stats = await get_json(http, f"{engine.status_url}/api/status")
                assert status == 200
                assert stats["micro_batches_completed"] >= job.index + 1
        assert seen == list(range(200))
        await engine.wait_settled()
    finally:
        stop.set()
        await asyncio.wait_for(poller, 10)
    after = engine.statistics()
    assert polls > 0

    def delta(kind: str, name: str) -> int:
        return int(after[kind].get(name, 0) - before[kind].get(name, 0))

    assert delta("frames_sent", "launch_group") == 20 * 2
    assert delta("frames_received", "group_done") == 20 * 2
    assert after["groups_launched"] - before["groups_launched"] == 20
    assert after["recent_group_sizes"][-20:] == [10] * 20
    assert after["recoveries"] == after["failures"] == 0
    assert after["micro_batches_timed"] - before["micro_batches_timed"] == 200
