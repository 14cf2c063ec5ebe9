"""``bench.py peers`` end to end on adrizzle alone: real workers, the real floor, and each peer
run in a real child process under an interpreter that lacks it (an empty venv), so it is
reported as skipped. No timing is asserted; the numbers are the benchmark's business.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import venv
from pathlib import Path

import pytest

import adrizzle
from adrizzle_bench import peer_engines as pe
from adrizzle_bench import peers as bench_peers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter with the standard library only: no Dask, Ray or PySpark."""
    root = tmp_path_factory.mktemp("bare-venv")
    venv.create(root, with_pip=False, symlinks=True)
    python = root / "bin" / "python"
    assert python.exists()
    return str(python)


def test_each_missing_peer_is_skipped_by_its_child_process(bare_python: str) -> None:
    async def all_three() -> list[dict[str, object]]:
        return await asyncio.gather(
            *(bench_peers.run_peer(e, bare_python, 5, 1, timeout=60) for e in pe.ENGINES)
        )

    reports = adrizzle.run(all_three())
    for engine, report in zip(pe.ENGINES, reports, strict=True):
        assert report["engine"] == engine
        assert report["status"] == "skipped", report
        assert "is not installed" in str(report["reason"])


def test_a_peer_that_cannot_start_is_skipped_not_crashed(tmp_path: Path) -> None:
    report = adrizzle.run(bench_peers.run_peer("ray", str(tmp_path / "no-python"), 5, 1, 10))
    assert report["status"] == "skipped"
    assert "cannot run" in report["reason"]


def test_peers_quick_on_adrizzle_alone(bare_python: str, tmp_path: Path) -> None:
    args = argparse.Namespace(
        quick=True,
        batches=20,
        repeats=3,
        workers=2,
        peers=list(pe.ENGINES),
        peer_python=bare_python,
        results_dir=tmp_path,
    )
    result = adrizzle.run(bench_peers.bench_peers(args))

    for workload in pe.WORKLOADS:
        rows = result["adrizzle"][workload]
        for label in ("G=1", "G=10", "G=100", bench_peers.ONE_BY_ONE):
            assert rows[label]["n"] == 20, (workload, label)  # every micro-batch, once (quick)
            assert rows[label]["mean"] > 0
    assert set(result["floor"]) == {"1", "10", "100"}
    assert [p["status"] for p in result["peers"]] == ["skipped"] * 3
    assert [t["ratio"] for t in result["targets"][:3]] == [None, None, None]
    assert all(t["ratio"] is not None for t in result["targets"][3:])  # floor ratios

    text = (tmp_path / "RESULTS.md").read_text()
    assert "## peers" in text
    assert "| adrizzle | group size 100 |" in text
    for label in bench_peers.PEER_LABELS.values():
        assert f"| {label} | skipped: " in text
    assert (tmp_path / "peers.md").exists()
    pngs = sorted(p.name for p in tmp_path.glob("peers-*.png"))
    if importlib.util.find_spec("matplotlib") is not None:
        assert pngs == ["peers-running-sum.png", "peers-shuffle.png", "peers-single-stage.png"]
    else:
        assert pngs == []
        assert "plots skipped" in text
