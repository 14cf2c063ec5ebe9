"""Prometheus exposition of one ``Engine.statistics()`` snapshot (``GET /metrics``).

Nothing is counted here: at each scrape a collector on a private registry reads one snapshot
and turns it into metric families, so the driver pays nothing between scrapes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["CONTENT_TYPE_LATEST", "metric_families", "render"]

Snapshot = dict[str, Any]

_COUNTERS = (
    # (name without the adrizzle_ prefix or _total suffix, help, statistics key)
    ("tasks", "Tasks finished on the workers (failed ones included).", "tasks_completed"),
    ("tasks_failed", "Tasks whose user code raised.", "tasks_failed"),
    ("groups_launched", "Groups of micro-batches launched.", "groups_launched"),
    ("groups_completed", "Groups acknowledged by every worker they ran on.", "groups_acked"),
    ("failures", "Runs failed (the error reached the caller).", "failures"),
    ("recoveries", "Recoveries: groups aborted and their jobs re-run.", "recoveries"),
    ("workers_joined", "Workers that joined.", "workers_joined"),
    ("workers_lost", "Workers lost (closed connection or heartbeat timeout).", "workers_lost"),
    ("shuffle_blocks_pushed", "Map output blocks pushed between workers.", "shuffle_blocks_pushed"),
    ("shuffle_bytes_pushed", "Map output bytes pushed worker to worker.", "shuffle_bytes_pushed"),
)

_CHECKPOINT_COUNTERS = (
    ("state_checkpoints", "Stream state checkpoints committed (one per group).", "commits"),
    ("state_restores", "Stream state restores (after a loss, or partitions moved).", "restores"),
    ("state_checkpoint_bytes", "Bytes of stream state checkpointed.", "bytes_committed"),
    ("state_checkpoint_files", "Checkpoint files written (checkpoint_dir).", "files_written"),
)

_HISTOGRAMS = (
    (
        "batch_latency_seconds",
        "Micro-batch latency: submission to delivery to the caller.",
        "batch_latency_s",
    ),
    (
        "scheduling_delay_seconds",
        "Micro-batch scheduling delay: submission to the launch of its group.",
        "scheduling_delay_s",
    ),
)


def metric_families(stats: Snapshot, extra: Snapshot | None = None) -> Iterator[Metric]:
    """The ``adrizzle_*`` metric families of one statistics snapshot.

    ``extra`` holds values the status server itself measures (``loop_lag_s``).
    """
    info = InfoMetricFamily("adrizzle_build", "adrizzle version.")
    info.add_metric([], {"version": str(stats["version"])})
    yield info
    yield GaugeMetricFamily(
        "adrizzle_uptime_seconds", "Seconds since the engine started.", value=stats["uptime_s"]
    )

    workers = GaugeMetricFamily("adrizzle_workers", "Connected workers by state.", labels=["state"])
    by_state: dict[str, int] = {"running": 0, "draining": 0}
    for w in stats["workers"]:
        by_state[w["state"]] = by_state.get(w["state"], 0) + 1
    for state, n in sorted(by_state.items()):
        workers.add_metric([state], n)
    yield workers
    yield GaugeMetricFamily(
        "adrizzle_slots",
        "Task slots of the connected workers.",
        value=sum(w["slots"] for w in stats["workers"]),
    )
    worker_tasks = CounterMetricFamily(
        "adrizzle_worker_tasks",
        "Tasks finished per connected worker (since it joined).",
        labels=["worker"],
    )
    for w in stats["workers"]:
        worker_tasks.add_metric([w["id"]], w["tasks_done"])
    yield worker_tasks

    size = stats["group_size"]
    yield GaugeMetricFamily(
        "adrizzle_group_size",
        "Micro-batches in the group launched last.",
        value=0 if size is None else size,
    )
    yield GaugeMetricFamily(
        "adrizzle_groups_in_flight",
        "Groups launched and not yet acknowledged.",
        value=stats["groups_in_flight"],
    )
    yield GaugeMetricFamily(
        "adrizzle_runs_active", "run_jobs/iter_jobs calls in progress.", value=stats["runs_active"]
    )

    batches = CounterMetricFamily(
        "adrizzle_micro_batches",
        "Micro-batches delivered to the caller, by outcome.",
        labels=["outcome"],
    )
    batches.add_metric(["ok"], stats["jobs_completed"])
    batches.add_metric(["failed"], stats["jobs_failed"])
    yield batches
    for name, doc, key in _COUNTERS:
        yield CounterMetricFamily(f"adrizzle_{name}", doc, value=stats[key])
    checkpoints = stats.get("checkpoints", {})
    for name, doc, key in _CHECKPOINT_COUNTERS:
        yield CounterMetricFamily(f"adrizzle_{name}", doc, value=checkpoints.get(key, 0))

    late = CounterMetricFamily(
        "adrizzle_late_values",
        "Values dropped by a stream's windows because their window had been emitted.",
        labels=["stream"],
    )
    for stream, n in sorted(stats.get("late_values", {}).items()):
        late.add_metric([stream], n)
    yield late

    frames = CounterMetricFamily(
        "adrizzle_frames", "Frames on driver connections.", labels=["direction", "type"]
    )
    nbytes = CounterMetricFamily(
        "adrizzle_frame_bytes",
        "Payload bytes on driver connections.",
        labels=["direction", "type"],
    )
    for direction, frame_key, bytes_key in (
        ("sent", "frames_sent", "bytes_sent"),
        ("received", "frames_received", "bytes_received"),
    ):
        for kind, n in sorted(stats[frame_key].items()):
            frames.add_metric([direction, kind], n)
        for kind, n in sorted(stats[bytes_key].items()):
            nbytes.add_metric([direction, kind], n)
    yield frames
    yield nbytes

    for name, doc, key in _HISTOGRAMS:
        hist = stats["histograms"][key]
        yield HistogramMetricFamily(
            f"adrizzle_{name}",
            doc,
            buckets=[(_le(bound), float(n)) for bound, n in hist["buckets"]],
            sum_value=hist["sum"],
        )

    if extra is not None and "loop_lag_s" in extra:
        yield GaugeMetricFamily(
            "adrizzle_driver_loop_lag_seconds",
            "Largest recent delay of the driver event loop in running a timer.",
            value=extra["loop_lag_s"],
        )


def _le(bound: float | str) -> str:
    return bound if isinstance(bound, str) else repr(float(bound))


class _SnapshotCollector:
    def __init__(self, read: Callable[[], tuple[Snapshot, Snapshot | None]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        stats, extra = self._read()
        yield from metric_families(stats, extra)


def registry_for(read: Callable[[], tuple[Snapshot, Snapshot | None]]) -> CollectorRegistry:
    """A private registry (not the process-global one) whose one collector calls ``read``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(read))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
