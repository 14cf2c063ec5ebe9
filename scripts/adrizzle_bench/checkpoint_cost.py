"""``bench.py checkpoint-cost``: what checkpointing stream state at every group costs.

    python scripts/bench.py checkpoint-cost [--repeats 5] [--quick] [--json]

A streaming running sum (4 partitions x 1000 ints per micro-batch, 16 keys, ``update_state``)
on 2 local workers, 1000 micro-batches after 100 of warm-up, for group sizes 1 and 10, with
``Engine(checkpoint_interval=0)`` (every group) and ``checkpoint_interval=3600`` (only each
run's first group), alternating, 5 times each (``--repeats``; ``--quick``: once, 200
micro-batches after 20). Prints the median ms per micro-batch (and the range) and the
checkpoints committed. Results: bench-results/checkpoint-cost.md, RESULTS.md.
"""

from __future__ import annotations

import argparse
import operator
import statistics
import time
from typing import Any

import adrizzle
from adrizzle_bench import harness

P, K = 4, 1000
DEFAULT_REPEATS = 5
INTERVALS = (0.0, 3600.0)


def ints(batch: int, partition: int) -> range:
    start = (batch * P + partition) * K
    return range(start, start + K)


def add(values: list[int], total: int | None) -> int:
    return (total or 0) + sum(values)


def key(x: int) -> tuple[int, int]:
    return (x % 16, x)


async def one(interval: float, group_size: int, batches: int, warmup: int) -> tuple[float, int]:
    """ms per micro-batch of ``batches`` after ``warmup``, and the checkpoints committed."""
    async with adrizzle.Engine.local(workers=2, cores=1, checkpoint_interval=interval) as e:
        totals = e.stream(ints, partitions=P).map(key).update_state(add, combine=operator.add)
        async for _ in totals.run(warmup, group_size=group_size):
            pass
        t = time.perf_counter()
        async for _ in totals.run(batches, group_size=group_size):
            pass
        ms = (time.perf_counter() - t) / batches * 1e3
        await e.wait_settled()
        return ms, e.statistics()["checkpoints"]["commits"]


async def bench_checkpoint_cost(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    repeats = 1 if quick else int(getattr(args, "repeats", None) or DEFAULT_REPEATS)
    batches, warmup = (200, 20) if quick else (1000, 100)
    rows: list[dict[str, Any]] = []
    lines = [
        f"### checkpoint-cost: streaming running sum, {P} partitions x {K} ints, 16 keys, "
        f"2 local workers, {batches} micro-batches after {warmup}, median of {repeats} "
        "(alternating)",
        "",
        "| group size | checkpoint_interval s | median ms / micro-batch (range) | commits |",
        "|---:|---:|---|---:|",
    ]
    for group_size in (1, 10):
        runs: dict[float, list[float]] = {interval: [] for interval in INTERVALS}
        commits: dict[float, int] = {}
        for _repeat in range(repeats):
            for interval in runs:  # alternating, so drift in the machine's load hits both
                ms, commits[interval] = await one(interval, group_size, batches, warmup)
                runs[interval].append(ms)
        for interval, ms_list in runs.items():
            row = {
                "group_size": group_size,
                "checkpoint_interval_s": interval,
                "ms_per_batch": statistics.median(ms_list),
                "min_ms": min(ms_list),
                "max_ms": max(ms_list),
                "commits": commits[interval],
            }
            rows.append(row)
            lines.append(
                f"| {group_size} | {interval:g} | {row['ms_per_batch']:.3f} "
                f"({row['min_ms']:.3f}-{row['max_ms']:.3f}) | {row['commits']} |"
            )
    harness.save_section(harness.results_dir(args), "checkpoint-cost", lines)
    return {"name": "checkpoint-cost", "rows": rows, "lines": lines}
