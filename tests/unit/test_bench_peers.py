"""``bench.py peers``' pure parts: peer skip logic, workload checks, targets and the report's
rows. No peer engine is needed (CI does not install the bench extra): lookups are injected.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from adrizzle_bench import harness
from adrizzle_bench import peer_engines as pe
from adrizzle_bench import peers as bench_peers


def test_a_missing_module_skips_with_the_install_hint() -> None:
    for engine in pe.ENGINES:
        reason = pe.missing_requirement(engine, has_module=lambda _m: False, find_java=lambda: None)
        assert reason is not None
        assert "not installed" in reason
        assert "[bench]" in reason


def test_pyspark_without_java_is_skipped_and_the_others_need_no_java() -> None:
    def has(_m: str) -> bool:
        return True

    reason = pe.missing_requirement("pyspark", has_module=has, find_java=lambda: None)
    assert reason is not None
    assert "Java" in reason
    assert pe.missing_requirement("pyspark", has_module=has, find_java=lambda: "/j") is None
    assert pe.missing_requirement("ray", has_module=has, find_java=lambda: None) is None
    assert pe.missing_requirement("dask", has_module=has, find_java=lambda: None) is None


def test_run_engine_reports_a_missing_peer_as_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pe, "_has_module", lambda _m: False)
    report = pe.run_engine("ray", batches=5, warmup=1)
    assert report["status"] == "skipped"
    assert "ray is not installed" in report["reason"]
    assert "workloads" not in report


def test_a_bare_directory_named_like_a_peer_is_not_an_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fake_peer_pkg_9").mkdir()  # like Ray's /tmp/ray session folder
    monkeypatch.syspath_prepend(str(tmp_path))
    assert not pe._has_module("fake_peer_pkg_9")
    (tmp_path / "fake_peer_pkg_9" / "__init__.py").write_text("")
    importlib.invalidate_caches()
    assert pe._has_module("fake_peer_pkg_9")


def test_unknown_engine_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        pe.missing_requirement("flink")


def test_workload_answers_are_checked() -> None:
    pe.check("single-stage", 0, pe.single_stage_expected())
    maps = [pe.map_combine(pe.partition_data(p)) for p in range(pe.PARTITIONS)]
    reduced = [pe.reduce_from_maps(r, *maps) for r in range(pe.REDUCERS)]
    pe.check("shuffle", 0, reduced)
    pe.check("running-sum", 3, [pe.batch_partition_sum(3, p) for p in range(pe.PARTITIONS)])
    with pytest.raises(AssertionError, match="wrong answer"):
        pe.check("single-stage", 0, [0, 0, 0, 0])
    with pytest.raises(AssertionError, match="wrong answer"):
        pe.check("shuffle", 0, reduced[:1])


def summary(mean: float) -> dict[str, float]:
    return {"mean": mean, "p50": mean, "p99": 2 * mean, "n": 10}


ADRIZZLE = {
    w: {
        "G=1": summary(1.0),
        "G=10": summary(0.2),
        "G=100": summary(0.1),
        "G=auto": None,
        bench_peers.ONE_BY_ONE: summary(1.5),
    }
    for w in pe.WORKLOADS
}
FLOOR = {1: 0.5, 10: 0.05, 100: 0.04}


def ray_report(seq: float, at_once: float) -> dict[str, object]:
    return {
        "engine": "ray",
        "status": "ok",
        "version": "9.9",
        "python": "3.13.0",
        "start_s": 1.0,
        "workloads": {
            w: {"one-after-another": summary(seq), "all-at-once": summary(at_once)}
            for w in pe.WORKLOADS
        },
    }


def test_targets_use_the_fastest_peer_in_the_right_mode() -> None:
    peers = [
        ray_report(seq=9.0, at_once=4.0),
        {"engine": "dask", "status": "skipped", "reason": "distributed is not installed"},
    ]
    targets = bench_peers.evaluate_targets(ADRIZZLE, FLOOR, peers)
    by_name = {t["target"]: t for t in targets}
    best = by_name["single-stage, G=100 vs fastest peer (best)"]
    assert best["ratio"] == pytest.approx(40.0)  # Ray all at once 4.0 / 0.1
    assert best["met"]
    seq = by_name["single-stage, G=1 vs fastest peer (one after another)"]
    assert seq["ratio"] == pytest.approx(9.0)
    assert seq["met"]
    floor1 = by_name["single-stage, G=1: adrizzle / hand-written floor"]
    assert floor1["ratio"] == pytest.approx(2.0)
    assert floor1["met"]
    floor10 = by_name["single-stage, G=10: adrizzle / hand-written floor"]
    assert floor10["ratio"] == pytest.approx(4.0)
    assert not floor10["met"]
    assert "40x" in bench_peers.headline(targets)
    cfg = {"batches": 10, "repeats": 1, "peer_batches": 5, "java": "openjdk 17"}
    text = "\n".join(bench_peers.render(cfg, ADRIZZLE, FLOOR, peers, targets, []))
    assert "| Ray 9.9 | all at once | 4.000 | 4.000 | 8.000 | 40.0 |" in text
    assert "| Dask distributed | skipped: distributed is not installed |" in text
    assert "Peer versions: Ray 9.9 (Python 3.13.0); Java: openjdk 17." in text


def test_skipped_peers_are_rows_not_failures_and_leave_targets_na(tmp_path: Path) -> None:
    peers = [
        {"engine": e, "status": "skipped", "reason": f"{e} is not installed"} for e in pe.ENGINES
    ]
    targets = bench_peers.evaluate_targets(ADRIZZLE, FLOOR, peers)
    assert [t["ratio"] for t in targets[:3]] == [None, None, None]
    cfg = {"batches": 10, "repeats": 1, "peer_batches": 5}
    lines = bench_peers.render(cfg, ADRIZZLE, FLOOR, peers, targets, [])
    text = "\n".join(lines)
    for label in bench_peers.PEER_LABELS.values():
        assert f"| {label} | skipped: " in text
    assert "failed" not in text
    assert "n/a (no peer ran)" in text
    assert "No peer ran" in bench_peers.headline(targets)
    assert "group size auto (n/a" in text
    assert "plots skipped" in text
    path = harness.write_results(tmp_path, {"peers": text})
    results = path.read_text()
    assert "## peers" in results
    assert "- machine:" in results
    assert "- date:" in results
