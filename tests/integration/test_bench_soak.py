"""``scripts/bench.py soak`` end to end, shortened: 18 s with 2 fresh engines and a worker
SIGKILLed every ~6 s, as a user (or the lead's tooling) runs it. Checks what it reports (exact,
no stall, every fresh engine run, kills recovered), what it writes, its exit status, and that
none of the processes it started (busy loops, workers, slots) outlives it. No timing or memory
threshold is asserted here: the verdict and the exit status must agree, whatever they are."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


def still_ours(pids: list[int]) -> list[int]:
    """The pids still running as a process of this environment (a recycled pid is not ours)."""
    alive = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE and sys.prefix in " ".join(proc.cmdline()):
                alive.append(pid)
        except psutil.NoSuchProcess:
            continue
    return alive


def test_a_short_soak_is_exact_without_stalls_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    argv = [sys.executable, str(BENCH), "soak", "--minutes", "0.3", "--engines", "2"]
    argv += ["--kill-every", "6", "--json", "--results-dir", str(tmp_path)]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so that a hung run's whole process group can be ended
    )
    try:
        out, err = proc.communicate(timeout=110)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("bench.py soak did not finish within 110 s")
    (s,) = json.loads(out.strip().splitlines()[-1])["results"]

    assert s["name"] == "soak"
    assert s["exact"], s["problem_list"]
    assert s["problems"] == 0
    assert s["stalls"] == 0, s["stall_reasons"]
    assert s["engines_run"] == 2
    assert s["runs"] == 6  # 3 checked run_jobs per fresh engine
    assert s["batches"] > 200  # the warm-up's and more: every one of them checked
    assert s["kills"] >= 1
    assert s["recoveries"] >= 1  # the stream engine noticed and re-ran
    assert s["fresh_engine_recoveries"] == 0
    assert s["busy_loops"] == (os.cpu_count() or 1) + 1
    for who in ("driver", "workers"):
        rss = s["rss"][who]
        assert rss["start_mib"] > 10
        assert rss["end_mib"] > 10
        assert rss["ok"] == (rss["growth_percent"] < 10)
    assert s["workers_measured"] == [3, 3]  # every killed worker was replaced
    times = [t for t, _driver, _workers in s["rss_timeline"]]
    assert len(times) == 12  # before the warm-up's kill, start, 9 samples across the run, end
    assert times == sorted(times)
    assert times[0] == pytest.approx(-s["warmup_s"], abs=0.1)
    assert times[1] == 0
    assert proc.returncode == (0 if s["passed"] else 1), err[-2000:]

    md = (tmp_path / "soak.md").read_text()
    assert "| engines run | stalls | worker kills | recoveries |" in md
    assert f"| 2/2 | 0 | {s['kills']} | {s['recoveries']} | 0 | {s['batches']} | yes |" in md
    assert ("Verdict: **pass**" if s["passed"] else "Verdict: **FAIL**") in md
    assert "## soak" in (tmp_path / "RESULTS.md").read_text()

    started = [*s["busy_pids"], *s["pids"]]
    assert len(s["pids"]) >= 6 + 2 * s["kills"]  # 3 workers + 3 slots, and each one added back
    deadline = time.monotonic() + 10
    while still_ours(started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert still_ours(started) == []
