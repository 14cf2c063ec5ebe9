"""The benchmarks' harness (scripts/adrizzle_bench/harness.py): the one percentile definition,
timing, memory, the driver's warnings and the results files every sub-command writes."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adrizzle_bench import harness


def test_percentiles_and_summary() -> None:
    samples = [float(x) for x in range(1, 101)]
    assert harness.percentile(samples, 50) == pytest.approx(50.5)
    assert harness.percentile(samples, 99) == pytest.approx(99.01)
    assert harness.percentile([3.0], 99) == 3.0
    s = harness.summarize(samples)
    assert s["mean"] == pytest.approx(50.5)
    assert s["n"] == 100
    with pytest.raises(ValueError, match="no samples"):
        harness.percentile([], 50)


def test_the_percentile_is_linear_between_closest_ranks_like_numpy() -> None:
    # numpy.percentile([1, 2, 3, 4], q) with its default method "linear":
    assert harness.percentile([4, 1, 3, 2], 25) == pytest.approx(1.75)
    assert harness.percentile([4, 1, 3, 2], 90) == pytest.approx(3.7)
    assert harness.percentile([4, 1, 3, 2], 0) == 1
    assert harness.percentile([4, 1, 3, 2], 100) == 4
    # ... so the p50 of the tables is the median of their "median of N" columns.
    for values in ([5.0, 1.0, 3.0], [5.0, 1.0, 3.0, 8.0], [2.0]):
        assert harness.percentile(values, 50) == statistics.median(values)
    assert harness.percentile_or_none([], 99) is None
    with pytest.raises(ValueError, match="q must be"):
        harness.percentile([1.0], 101)


def test_completion_gaps_add_up_to_the_wall_time() -> None:
    gaps = harness.completion_gaps(10.0, [10.5, 10.25, 11.0])
    assert gaps == pytest.approx([250.0, 250.0, 500.0])
    assert sum(gaps) == pytest.approx(1000.0)


def test_timed_measures_wall_and_this_process_cpu() -> None:
    with harness.timed() as t:
        time.sleep(0.05)  # wall time, almost no CPU
    assert t.wall >= 0.05
    assert t.cpu < 0.04
    # Spin until this process has used 30 ms of CPU (however long a busy machine makes that
    # take): timed() must see at least that, and no more CPU than wall time.
    start = time.process_time()
    with harness.timed() as busy:
        while time.process_time() - start < 0.03:
            pass
    assert busy.cpu >= 0.029
    assert busy.cpu <= busy.wall + 0.01


def test_cpu_seconds_counts_a_process_s_run_time_and_none_once_it_is_gone() -> None:
    before = harness.cpu_seconds(os.getpid())
    assert before is not None
    start = time.process_time()
    while time.process_time() - start < 0.03:  # 30 ms of CPU, however long that takes
        pass
    after = harness.cpu_seconds(os.getpid())
    assert after is not None
    assert after - before >= 0.025  # schedstat and process_time tick differently
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=60)
    assert harness.cpu_seconds(child.pid) is None  # reaped: no such process


# A parent process with one child of its own (the child ends when its parent's pipe closes).
PARENT = """
import subprocess, sys
child = subprocess.Popen(
    [sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
)
child.stdout.readline()
print(child.pid, flush=True)
sys.stdin.read()
"""


def test_rss_counts_a_process_and_its_children_and_growth_is_relative() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    child_pid = None
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())  # both interpreters are up and resident
        both = harness.rss_bytes(parent.pid)
        alone = harness.rss_bytes(parent.pid, children=False)
        theirs = harness.rss_bytes(child_pid)
        assert both is not None
        assert alone is not None
        assert theirs is not None
        assert alone > 1 << 20
        assert theirs > 1 << 20
        assert both == pytest.approx(alone + theirs, rel=0.05)
        workers: list[dict[str, int | None]] = [{"pid": parent.pid}, {"pid": None}]
        assert harness.workers_rss_bytes(workers) == pytest.approx(both, rel=0.05)
    finally:
        if child_pid is not None:  # first: while its parent lives, its pid cannot be recycled
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, signal.SIGKILL)
        parent.kill()
        parent.wait(timeout=10)
        for stream in (parent.stdin, parent.stdout):
            if stream is not None:
                stream.close()
    assert harness.rss_bytes(parent.pid) is None  # gone: no number, not a crash
    assert harness.workers_rss_bytes([{"pid": parent.pid}]) == 0
    assert harness.growth_percent(100, 110) == pytest.approx(10.0)
    assert harness.growth_percent(200, 150) == pytest.approx(-25.0)
    with pytest.raises(ValueError, match="must be > 0"):
        harness.growth_percent(0, 10)


def test_driver_warnings_are_collected_while_watched() -> None:
    seen: list[tuple[float, str]] = []
    log = logging.getLogger("adrizzle.driver.test")
    with harness.driver_warnings(seen):
        log.info("not a warning")
        log.warning("no progress for %.1f s", 10.0)
    log.warning("after the block")
    assert [msg for _t, msg in seen] == ["no progress for 10.0 s"]
    assert seen[0][0] == pytest.approx(time.time(), abs=5)


def test_results_keep_earlier_sections_in_order(tmp_path: Path) -> None:
    (tmp_path / "scaling.md").write_text("scaling table\n")
    (tmp_path / "single-stage.md").write_text("single-stage table\n")
    text = harness.write_results(tmp_path, {"peers": "peers table"}).read_text()
    assert text.index("## peers") < text.index("## single-stage") < text.index("## scaling")
    assert "scaling table" in text


def test_a_saved_section_has_the_machine_line_and_lands_in_results(tmp_path: Path) -> None:
    (tmp_path / "zeta.md").write_text("an unknown section sorts last\n")
    text = harness.save_section(tmp_path, "soak", ["### soak", "", "| a |"])
    assert text == (tmp_path / "soak.md").read_text()
    assert text.startswith(f"_{harness.machine()}_\n\n### soak\n")
    results = (tmp_path / "RESULTS.md").read_text()
    assert harness.PERCENTILE_NOTE in results
    assert "- machine:" in results
    assert results.index("## soak") < results.index("## zeta")
    assert "| a |" in results


def test_plots_are_written_or_reported_as_skipped(tmp_path: Path) -> None:
    assert harness.plot_links([]) == [harness.PLOTS_SKIPPED]
    assert harness.plot_links([tmp_path / "a-b.png"]) == ["![a-b](a-b.png)"]
    series = harness.Series("G=1", [0.0, 1.0, 2.0], [1.0, 5.0, 2.0], [1.0, 9.0, 2.0], mark=2)
    timeline = harness.plot_timeline(
        tmp_path / "t.png", [harness.Panel("p", [series])], xlabel="s", ylabel="ms", event="kill"
    )
    by_size = harness.plot_vs_group_size(
        tmp_path / "g.png", "title", {"adrizzle": {1: 1.0, 10: 0.2}}, [("Ray", "mode", 3.0)]
    )
    if harness.have_matplotlib():
        assert timeline is not None
        assert by_size is not None
        assert timeline.stat().st_size > 10_000
        assert by_size.stat().st_size > 10_000
    else:
        assert (timeline, by_size) == (None, None)
        assert not list(tmp_path.glob("*.png"))


def test_results_go_next_to_the_checkout_by_default() -> None:
    root = Path(__file__).resolve().parents[2]
    assert harness.default_results_dir() == root / "bench-results"
    assert harness.results_dir(object()) == root / "bench-results"
    assert harness.results_dir(type("A", (), {"results_dir": "/x"})()) == Path("/x")
