"""YSB as the original builds it: a producer process publishes to a broker, the stream counts
views per campaign window into Redis from the workers, and ``--check`` compares Redis with the
producer's own counts (issue 16)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

YSB = Path(__file__).resolve().parents[2] / "examples" / "ysb.py"


def run_ysb(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, str(YSB), "--seconds", "5", "--rate", "2000", "--window", "1",
         "--partitions", "2", "--check", "--json", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


@pytest.mark.parametrize("sink", ["redis", "driver"])
def test_ysb_from_redis_streams_is_exact(redis_url: str, sink: str) -> None:
    summary = run_ysb("--source", "redis", "--redis", redis_url, "--sink", sink)
    assert summary["events"] == 10_000
    assert summary["windows_checked"] >= 3  # 1 s windows over 5 s, the last one still open
    assert (summary["mismatches"], summary["missing"], summary["duplicates"]) == (0, 0, 0)
    assert summary["sink_rows"] >= summary["windows_checked"]


def test_ysb_from_kafka_into_redis_is_exact(redis_url: str, kafka_bootstrap: str) -> None:
    summary = run_ysb("--source", "kafka", "--kafka", kafka_bootstrap, "--redis", redis_url)
    assert summary["events"] == 10_000
    assert summary["windows_checked"] >= 3
    assert (summary["mismatches"], summary["missing"], summary["duplicates"]) == (0, 0, 0)
