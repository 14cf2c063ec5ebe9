"""The dashboard in real headless Chromium against a local cluster running jobs continuously.

Chromium comes from Playwright's own download when there is one, else from the system
(Debian's ``chromium``; ``scripts/test`` installs it when missing), or ``$ADRIZZLE_CHROMIUM``.
The screenshot goes to the test's temporary directory, or with ``ADRIZZLE_UPDATE_SCREENSHOT=1``
to ``bench-results/dashboard.png`` (shown in the README), so a test run leaves the tree as it was.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import adrizzle

playwright_sync = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

README_SCREENSHOT = Path(__file__).resolve().parents[2] / "bench-results" / "dashboard.png"
P, K = 4, 1000


class JobsInBackground:
    """A local engine with its status server, on its own thread and event loop, running
    small runs of micro-batches back to back (varying the group size) until stopped."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.url = ""
        self.worker_ids: list[str] = []
        self.batches = 0
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="engine", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(60):
            raise TimeoutError("the local engine did not start within 60 s")
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the engine thread did not stop"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            adrizzle.run(self._main())
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with adrizzle.Engine.local(workers=2, cores=1, status="127.0.0.1:0") as engine:
            assert engine.status_url is not None
            self.url = engine.status_url
            self.worker_ids = [w["id"] for w in engine.workers]
            data = engine.parallelize(range(P * K), partitions=P).cache()
            self.ready.set()
            expected = [sum(range(p * K, (p + 1) * K)) for p in range(P)]
            for group_size in itertools.cycle([1, 5, 10]):
                if self._stop.is_set():
                    break
                results = await engine.run_jobs([data] * 20, sum, group_size, timeout=30)
                assert results == [expected] * 20
                self.batches += 20
                # A stream, not a busy loop: leave the two cores to Chromium as well.
                await asyncio.sleep(0.05)


def chromium_executable(default: str) -> str | None:
    """Playwright's own Chromium if downloaded, else a system one; None when there is none."""
    candidates = [
        os.environ.get("ADRIZZLE_CHROMIUM"),
        default,
        "/usr/lib/chromium/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        shutil.which("google-chrome"),
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture
def jobs() -> Iterator[JobsInBackground]:
    background = JobsInBackground()
    background.start()
    try:
        yield background
    finally:
        background.stop()


def test_dashboard_charts_and_workers_in_chromium(jobs: JobsInBackground, tmp_path: Path) -> None:
    screenshot = tmp_path / "dashboard.png"
    if os.environ.get("ADRIZZLE_UPDATE_SCREENSHOT") == "1":
        screenshot = README_SCREENSHOT
    with playwright_sync.sync_playwright() as pw:
        executable = chromium_executable(pw.chromium.executable_path)
        if executable is None:
            pytest.skip(
                "no Chromium found: `playwright install chromium` could not download one and "
                "no system chromium is installed (apt-get install chromium; scripts/test does)"
            )
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = pw.chromium.launch(executable_path=executable, args=args)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on(
                "console",
                lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None,
            )
            page.goto(jobs.url + "/", wait_until="load")

            # Every chart has several polls' worth of points (data arrives while we wait; ten
            # polls, five seconds, make a readable screenshot).
            page.wait_for_function(
                "() => [...document.querySelectorAll('.chart')]"
                ".every(c => Number(c.dataset.points) >= 10)",
                timeout=30_000,
            )
            assert page.locator(".chart canvas").count() == 4
            assert page.locator("#connection").inner_text() == "live"
            latencies = page.evaluate(
                "() => window.adrizzleDashboard.series.latP50.filter(v => v != null)"
            )
            assert latencies
            assert all(v > 0 for v in latencies)

            # The workers table lists the engine's workers, running, with tasks done.
            page.wait_for_function(
                "() => [...document.querySelectorAll('#workers tbody tr')]"
                ".every(r => Number(r.cells[5].textContent) > 0)",
                timeout=10_000,
            )
            rows = page.locator("#workers tbody tr")
            ids = [rows.nth(i).get_attribute("data-worker-id") for i in range(rows.count())]
            assert sorted(ids) == sorted(jobs.worker_ids)
            for i in range(rows.count()):
                assert rows.nth(i).locator("td").nth(4).inner_text() == "running"
            assert page.locator("#frames tbody tr", has_text="launch_group").count() == 1

            screenshot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            assert screenshot.stat().st_size > 10_000
            assert errors == []
        finally:
            browser.close()
    assert jobs.batches > 0
