"""examples/ysb.py and examples/running_sum.py --stream as a user runs them (real subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_json(*argv: str) -> dict:
    out = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=100, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("group_size", ["1", "auto"])
def test_ysb_window_counts_match_plain_python(group_size: str) -> None:
    summary = run_json(
        str(EXAMPLES / "ysb.py"),
        "--seconds", "2", "--rate", "3000", "--window", "0.5",
        "--group-size", group_size, "--check", "--json",
    )  # fmt: skip
    assert summary["mismatches"] == 0
    # 2 s of 0.5 s windows (4 or 5 of them, by alignment) x up to 100 campaigns.
    assert summary["windows_checked"] >= 300
    assert summary["windows_complete"] >= 3
    assert summary["latency_p50_ms"] is not None
    assert summary["latency_p99_ms"] >= summary["latency_p50_ms"]
    assert summary["events"] == 6000
    assert summary["events_per_s"] > 0
    sizes = {int(k): v for k, v in summary["group_sizes"].items()}
    assert sum(k * v for k, v in sizes.items()) == summary["batches"] or group_size == "auto"
    if group_size == "1":
        assert sizes == {1: summary["batches"]}


@pytest.mark.parametrize("group_size", ["1", "auto"])
def test_running_sum_stream_total_is_exact(group_size: str) -> None:
    summary = run_json(
        str(EXAMPLES / "running_sum.py"), "40", group_size, "--stream", "--records", "100", "--json"
    )
    assert summary["final_sum"] == sum(range(40 * 4 * 100))
    assert summary["batches_completed"] == summary["batches"] == 40
    assert summary["mode"] == "stream"
    if group_size == "1":
        assert summary["group_sizes"] == {"1": 40}
