"""``bench.py recovery``'s core with real processes: a paced stateful stream on 3 local workers,
one SIGKILLed at a fixed batch, must deliver every batch once, in order, with exact results.
A few dozen 10 ms batches per run; no timing is asserted (the benchmark reports the times)."""

from __future__ import annotations

import pytest

import adrizzle
from adrizzle_bench import recovery as br

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def assert_exact_after_the_kill(trace: br.Trace) -> None:
    assert trace.problems == []
    assert trace.numbers == list(range(trace.batches))
    assert trace.kill_time is not None  # the victim was killed ...
    assert trace.detected_time is not None  # ... the driver saw it ...
    assert trace.recoveries >= 1  # ... and re-ran what it held
    row = br.summarize(trace)
    assert row["exact"]
    assert row["delivered"] == trace.batches


@pytest.mark.parametrize("group_size", [1, 10])
def test_running_sum_stays_exact_across_a_kill(group_size: int) -> None:
    trace = adrizzle.run(br.running_sum_run(60, 30, group_size, records=50))
    assert_exact_after_the_kill(trace)  # every total checked against the prefix sum


def test_ysb_window_counts_stay_exact_across_a_kill() -> None:
    trace = adrizzle.run(br.ysb_run(0.6, "auto", rate=2000, window=1.0))
    assert trace.batches == 60
    assert_exact_after_the_kill(trace)  # every window count checked against plain Python
