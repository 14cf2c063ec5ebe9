"""``bench.py scaling --simulated``'s report: its flags, the issue's targets judged from the rows,
and small runs labelled as validation runs (adrizzle_bench.scaling_sim, cli)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from adrizzle_bench import cli, harness, scaling_sim


def row(workers: int, size: int | str, cpu_us: float, ms: float) -> dict[str, Any]:
    return {
        "workers": workers,
        "workload": "single-stage",
        "group_size": size,
        "batches": 10,
        "exact": True,
        "ms_per_batch": ms,
        "cpu_us_per_batch": cpu_us,
        "cpu_us_per_worker_batch": cpu_us / workers,
        "sim_cpu_us_per_batch": 1.0,
        "frames_in_per_batch": 1.0,
        "mean_group": 1.0,
    }


def test_the_flags_parse_worker_counts_and_refuse_nonsense() -> None:
    args = cli.make_parser().parse_args(["scaling", "--simulated", "16,128", "--task-cost-us", "5"])
    assert (args.simulated, args.task_cost_us, args.sim_results) == ([16, 128], 5.0, None)
    for bad in ("16,x", "0", ""):
        with pytest.raises(SystemExit):
            cli.make_parser().parse_args(["scaling", "--simulated", bad])


def test_targets_are_judged_from_the_rows() -> None:
    table = [
        row(128, 1, 9000.0, 10.0),
        row(128, 100, 250.0, 0.4),  # 25x faster, 250 µs: both met
        row(1024, 100, 4096.0, 5.0),  # 4 µs per worker: not met
    ]
    text = "\n".join(scaling_sim.target_lines(table))
    assert "driver CPU 250 µs per micro-batch (target ≤ 300: met)" in text
    assert "25.0x faster per micro-batch than G=1 (target ≥ 20x: met)" in text
    assert "4.00 µs of driver CPU per worker per micro-batch (target ≤ 2: not met)" in text
    assert "128: 1.95, 1024: 4.00" in text


def test_a_run_without_the_big_counts_says_so() -> None:
    table = [row(16, 1, 800.0, 1.0), row(16, 100, 190.0, 0.3)]
    lines = scaling_sim.report(table, argparse.Namespace(), repeats=1)
    text = "\n".join(lines)
    assert "Validation run at small worker counts only" in text
    assert "- 128 workers: not measured in this run." in text
    assert "| 16 | single-stage | 100 | 10 | 0.300 | 190 | 11.88 |" in text
    assert "| 16 | 2,371 | 442 | 147 |" in text  # the seed's numbers beside ours


def test_the_scaling_figure_has_a_line_per_group_size(tmp_path: Any) -> None:
    if not harness.have_matplotlib():
        assert scaling_sim.plot([row(16, 1, 1.0, 1.0)], tmp_path / "x.png") is None
        return
    table = [row(w, g, 10.0 * w, 0.1 * w) for w in (16, 64) for g in scaling_sim.SIZES]
    path = scaling_sim.plot(table, tmp_path / "scaling-simulated.png")
    assert path is not None
    assert path.stat().st_size > 10_000
