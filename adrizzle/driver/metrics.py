"""Counters, histograms and recent samples of the driver, for ``Engine.statistics()``.

Updated from the scheduler shell once per group, per worker acknowledgement, or per delivered
micro-batch (a few appends and two bisects; never per task); read only through ``snapshot()``.

Per micro-batch, as Spark Streaming defines them:

- *scheduling delay*: from its submission (the start of the ``run_jobs``/``iter_jobs`` call
  that asked for it) to the launch of the group that ran it (its last launch, if recovery
  re-ran it). Batches queued behind a full window wait here.
- *processing time*: from that launch to its delivery to the caller.
- *latency* (Spark's "total delay"): submission to delivery, the two added.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from adrizzle.driver.adaptive import GroupDecision
    from adrizzle.driver.jobs import JobOutcome

RECENT = 100  # values listed per series
WINDOW = 1000  # micro-batches the percentiles are taken over

# Seconds. Upper bounds of the Prometheus histogram buckets (``le``), from 100 µs (a group
# of tiny batches) to a minute (a queue of many).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Histogram:
    """Cumulative bucket counts over every observation, in Prometheus' ``le`` convention."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times

    def snapshot(self) -> dict[str, Any]:
        """``buckets``: ``[upper bound, observations <= it]`` pairs, ending with ``"+Inf"``."""
        running, buckets = 0, []
        for bound, n in zip((*self.bounds, "+Inf"), self.counts, strict=True):
            running += n
            buckets.append([bound, running])
        return {"buckets": buckets, "count": running, "sum": self.sum}


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-quantile (0 < q <= 1) of sorted values, None when empty."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * q // 1))  # ceil(n * q)
    return ordered[int(rank) - 1]


def describe(samples: deque[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "p50": percentile(ordered, 0.5),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else None,
        "window": len(ordered),
        "recent": list(samples)[-RECENT:],
    }


class DriverMetrics:
    def __init__(self) -> None:
        self.started_at = time.time()
        self.groups_launched = 0
        self.groups_acked = 0
        self.jobs_done = 0
        self.jobs_failed = 0
        self.tasks_done = 0
        self.tasks_failed = 0
        self.failures = 0
        self.recoveries = 0
        self.group_sizes: deque[int] = deque(maxlen=RECENT)
        self.shuffle_blocks_pushed = 0
        self.shuffle_bytes_pushed = 0
        self.latency = Histogram()
        self.scheduling_delay = Histogram()
        self.recent_latency: deque[float] = deque(maxlen=WINDOW)
        self.recent_processing: deque[float] = deque(maxlen=WINDOW)
        # Adaptive group size: each observed group's size, overhead and the size chosen next.
        self.group_decisions: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self.adaptive_groups_per_size: dict[int, int] = {}

    def group_launched(self, size: int) -> None:
        self.groups_launched += 1
        self.group_sizes.append(size)

    def group_observed(self, decision: GroupDecision) -> None:
        self.group_decisions.append(
            {
                "group": decision.group,
                "size": decision.size,
                "wall_ms": round(decision.wall_s * 1e3, 3),
                "active_ms": round(decision.active_s * 1e3, 3),
                "coordination_ms": round(decision.coordination_s * 1e3, 3),
                "dispatch_ms": round(decision.dispatch_s * 1e3, 3),
                "overhead": round(decision.overhead, 4),
                "action": decision.action,
                "next_size": decision.next_size,
            }
        )
        sizes = self.adaptive_groups_per_size
        sizes[decision.size] = sizes.get(decision.size, 0) + 1

    def group_acked(self) -> None:
        self.groups_acked += 1

    def worker_group_done(self, tasks: int, failed: int) -> None:
        """One worker's acknowledgement of a group: its tasks' totals."""
        self.tasks_done += tasks
        self.tasks_failed += failed

    def shuffle_pushed(self, blocks: int, nbytes: int) -> None:
        self.shuffle_blocks_pushed += blocks
        self.shuffle_bytes_pushed += nbytes

    def jobs_completed(
        self, outcomes: Sequence[JobOutcome], submitted_at: float | None = None
    ) -> None:
        """Count delivered micro-batches; with their run's submission time (``perf_counter``)
        record their timings (each outcome carries its group's launch time).

        The batches of one call share their latency (delivered together, submitted together)
        and the batches of one group their scheduling delay: one observation each.
        """
        now = time.perf_counter()
        failed = 0
        if submitted_at is None:
            for o in outcomes:
                if o.error is not None:
                    failed += 1
        else:
            n = len(outcomes)
            latency = now - submitted_at
            hist = self.latency
            hist.counts[bisect_left(hist.bounds, latency)] += n
            hist.sum += latency * n
            add_latency, add_processing = self.recent_latency.append, self.recent_processing.append
            group_launch, same = submitted_at, 0
            for o in outcomes:
                if o.error is not None:
                    failed += 1
                launch = o.launched_at or submitted_at
                if launch != group_launch:  # a new group: observe the previous one's delay
                    if same:
                        self.scheduling_delay.observe(group_launch - submitted_at, same)
                    group_launch, same = launch, 0
                same += 1
                add_latency(latency)
                add_processing(now - launch)
            if same:
                self.scheduling_delay.observe(group_launch - submitted_at, same)
        self.jobs_done += len(outcomes) - failed
        self.jobs_failed += failed

    def snapshot(self) -> dict[str, Any]:
        latency_hist = self.latency.snapshot()
        latency = describe(self.recent_latency)
        processing = describe(self.recent_processing)
        delay = describe(
            deque(a - b for a, b in zip(self.recent_latency, self.recent_processing, strict=True))
        )
        return {
            "uptime_s": time.time() - self.started_at,
            "groups_launched": self.groups_launched,
            "groups_acked": self.groups_acked,
            "jobs_completed": self.jobs_done,
            "jobs_failed": self.jobs_failed,
            "micro_batches_completed": self.jobs_done + self.jobs_failed,
            # How many micro-batches were timed (the latency/delay/processing samples end
            # with the latest of them; a client aligns its polls on this count).
            "micro_batches_timed": latency_hist["count"],
            "tasks_completed": self.tasks_done,
            "tasks_failed": self.tasks_failed,
            "failures": self.failures,
            "recoveries": self.recoveries,
            "group_size": self.group_sizes[-1] if self.group_sizes else None,
            "recent_group_sizes": list(self.group_sizes),
            "shuffle_blocks_pushed": self.shuffle_blocks_pushed,
            "shuffle_bytes_pushed": self.shuffle_bytes_pushed,
            "batch_latency_s": latency,
            "scheduling_delay_s": delay,
            "processing_time_s": processing,
            "histograms": {
                "batch_latency_s": latency_hist,
                "scheduling_delay_s": self.scheduling_delay.snapshot(),
            },
            "adaptive_groups": list(self.group_decisions),
            "adaptive_groups_per_size": dict(sorted(self.adaptive_groups_per_size.items())),
        }
