"""Driver metrics and their Prometheus exposition, as pure functions of recorded events."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adrizzle.driver.jobs import JobOutcome
from adrizzle.driver.metrics import RECENT, DriverMetrics, Histogram, percentile
from adrizzle.errors import TaskError
from adrizzle.status import prometheus


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    hist = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 1.0, 7.0):
        hist.observe(v)
    snap = hist.snapshot()
    # Prometheus' le: a value equal to a bound is counted in that bound's bucket.
    assert snap["buckets"] == [[0.1, 2], [1.0, 4], ["+Inf", 5]]
    assert snap["count"] == 5
    assert snap["sum"] == pytest.approx(8.65)


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([3.0], 0.99) == 3.0


def test_batch_timings_split_latency_into_delay_and_processing() -> None:
    metrics = DriverMetrics()
    now = time.perf_counter()
    error = TaskError(
        job=2, partition=0, worker="w", exc_type="E", message="m", remote_traceback=""
    )
    # Each outcome carries its group's launch time (jobs 0 and 1 from one group).
    metrics.jobs_completed(
        [
            JobOutcome(0, [1], None, now - 0.25),
            JobOutcome(1, [2], None, now - 0.25),
            JobOutcome(2, None, error, now - 0.5),
        ],
        submitted_at=now - 1.0,
    )
    snap = metrics.snapshot()
    assert (snap["jobs_completed"], snap["jobs_failed"]) == (2, 1)
    assert snap["micro_batches_completed"] == snap["micro_batches_timed"] == 3
    assert snap["scheduling_delay_s"]["recent"] == pytest.approx([0.75, 0.75, 0.5])
    lat, proc = snap["batch_latency_s"]["recent"], snap["processing_time_s"]["recent"]
    assert all(latency >= 1.0 for latency in lat)
    assert [a - b for a, b in zip(lat, proc, strict=True)] == pytest.approx([0.75, 0.75, 0.5])
    assert snap["scheduling_delay_s"]["p50"] == pytest.approx(0.75)
    assert snap["histograms"]["scheduling_delay_s"]["count"] == 3


def test_recent_values_are_bounded() -> None:
    metrics = DriverMetrics()
    now = time.perf_counter()
    for j in range(3 * RECENT):
        metrics.jobs_completed([JobOutcome(j, [], None, now)], submitted_at=now)
    snap = metrics.snapshot()
    assert len(snap["batch_latency_s"]["recent"]) == RECENT
    assert snap["micro_batches_timed"] == 3 * RECENT


def snapshot_like_the_engine(metrics: DriverMetrics) -> dict[str, Any]:
    stats = metrics.snapshot()
    stats.update(
        version="9.9.9",
        groups_in_flight=1,
        runs_active=1,
        workers_joined=2,
        workers_lost=1,
        workers=[
            {"id": "w0", "state": "running", "slots": 2, "tasks_done": 5},
            {"id": "w1", "state": "draining", "slots": 1, "tasks_done": 3},
        ],
        frames_sent={"launch_group": 4},
        frames_received={"group_done": 4, "batch_result": 9},
        bytes_sent={"launch_group": 1000},
        bytes_received={"group_done": 80, "batch_result": 900},
    )
    return stats


def test_prometheus_text_round_trips_through_the_parser() -> None:
    metrics = DriverMetrics()
    metrics.group_launched(3)
    metrics.worker_group_done(tasks=6, failed=1)
    now = time.perf_counter()
    metrics.jobs_completed([JobOutcome(j, [], None, now) for j in range(3)], now - 0.002)
    stats = snapshot_like_the_engine(metrics)
    stats["checkpoints"] = {"commits": 4, "restores": 1, "bytes_committed": 500}
    registry = prometheus.registry_for(lambda: (stats, {"loop_lag_s": 0.003}))
    text = prometheus.render(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("adrizzle_build_info", (("version", "9.9.9"),))] == 1
    assert samples[("adrizzle_workers", (("state", "running"),))] == 1
    assert samples[("adrizzle_workers", (("state", "draining"),))] == 1
    assert samples[("adrizzle_slots", ())] == 3
    assert samples[("adrizzle_worker_tasks_total", (("worker", "w1"),))] == 3
    assert samples[("adrizzle_group_size", ())] == 3
    assert samples[("adrizzle_tasks_total", ())] == 6
    assert samples[("adrizzle_tasks_failed_total", ())] == 1
    assert samples[("adrizzle_workers_lost_total", ())] == 1
    assert samples[("adrizzle_state_checkpoints_total", ())] == 4
    assert samples[("adrizzle_state_restores_total", ())] == 1
    assert samples[("adrizzle_state_checkpoint_bytes_total", ())] == 500
    assert samples[("adrizzle_state_checkpoint_files_total", ())] == 0
    key = ("adrizzle_frame_bytes_total", (("direction", "received"), ("type", "batch_result")))
    assert samples[key] == 900
    assert samples[("adrizzle_batch_latency_seconds_count", ())] == 3
    assert samples[("adrizzle_scheduling_delay_seconds_bucket", (("le", "0.0025"),))] == 3
    assert samples[("adrizzle_scheduling_delay_seconds_bucket", (("le", "0.001"),))] == 0
    assert samples[("adrizzle_driver_loop_lag_seconds", ())] == 0.003
