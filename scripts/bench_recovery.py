"""scripts/bench.py recovery: kill a worker mid-stream, measure how fast latency recovers.

A running sum over a stream of micro-batches (batch b, partition p holds a distinct range of
ints) on 3 local workers, delivered through ``iter_jobs`` with a fixed group size. At a fixed
batch one worker is SIGKILLed. Per batch we record the time from the previous delivery
(processing time per micro-batch as the caller sees it), then report it before, during and
after the failure, the time from the kill to latency back within 2x of normal, and check the
final total against plain Python (no batch lost or counted twice).
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle

import adrizzle

# Imported by scripts/bench.py as a module the workers cannot import: ship by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

RESULTS = Path(__file__).resolve().parent.parent / "bench-results"


def batch_partition(b: int, partitions: int, records: int, p: int) -> range:
    start = (b * partitions + p) * records
    return range(start, start + records)


def expected_total(batches: int, partitions: int, records: int) -> int:
    n = batches * partitions * records
    return n * (n - 1) // 2


async def one_run(
    batches: int, kill_at: int, group_size: int, partitions: int, records: int
) -> dict[str, Any]:
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        jobs = [
            engine.generate(functools.partial(batch_partition, b, partitions, records), partitions)
            for b in range(batches)
        ]
        victim = engine.workers[1]
        total = 0
        gaps: list[float] = []
        kill_time = 0.0
        delivered_at: list[float] = []
        last = time.perf_counter()
        async for job in engine.iter_jobs(jobs, sum, group_size=group_size, timeout=120):
            now = time.perf_counter()
            assert job.values is not None
            total += sum(job.values)
            gaps.append((now - last) * 1e3)
            delivered_at.append(now)
            last = now
            if job.index == kill_at:
                os.kill(victim["pid"], signal.SIGKILL)
                kill_time = time.perf_counter()
        stats = engine.statistics()
    # A group delivers its batches together, so single gaps are bimodal for group size > 1:
    # use the mean over a sliding window of 20 batches as "ms per micro-batch" at each batch.
    w = 20
    rolling = [sum(gaps[i - w + 1 : i + 1]) / w for i in range(w - 1, len(gaps))]
    rolling = [rolling[0]] * (w - 1) + rolling
    before = rolling[2 * w : kill_at]
    normal = statistics.median(before)
    # Recovered: from the first batch after the kill from which the windowed latency stays
    # within 2x of normal.
    recovered_index = next(
        (i for i in range(kill_at + 1, len(rolling)) if max(rolling[i:]) <= 2 * normal),
        len(rolling) - 1,
    )
    return {
        "group_size": group_size,
        "normal_ms": normal,
        "p99_before_ms": sorted(before)[int(0.99 * (len(before) - 1))],
        "worst_ms": max(rolling[kill_at + 1 :]),
        "worst_gap_ms": max(gaps[kill_at + 1 :]),
        "median_after_ms": statistics.median(rolling[recovered_index:]),
        "recovery_s": max(0.0, delivered_at[recovered_index] - kill_time),
        "exact": total == expected_total(batches, partitions, records),
        "recoveries": stats["recoveries"],
        "gaps": rolling,
        "kill_at": kill_at,
    }


def plot(runs: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(9, 4))
    for r in runs:
        ax.plot(r["gaps"], label=f"group size {r['group_size']}", linewidth=0.8)
    ax.axvline(runs[0]["kill_at"], color="red", linestyle="--", label="worker killed")
    ax.set_yscale("log")
    ax.set_xlabel("micro-batch")
    ax.set_ylabel("ms per micro-batch (20-batch window)")
    ax.set_title("Running sum on 3 workers, one SIGKILLed mid-stream")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


async def bench_recovery(args: Any) -> dict[str, Any]:
    batches = 400 if args.quick else 1500
    kill_at = batches // 2
    runs = [await one_run(batches, kill_at, g, 4, 1000) for g in (1, 10)]
    png = RESULTS / "recovery.png"
    RESULTS.mkdir(exist_ok=True)
    plotted = plot(runs, png)
    lines = [
        f"### recovery: running sum, 4 partitions x 1000 ints per micro-batch, 3 local workers, "
        f"{batches} micro-batches, worker SIGKILLed after micro-batch {kill_at}",
        "",
        "| group size | normal ms / batch | p99 before | worst after kill | longest single "
        "gap ms | median after recovery | kill -> back within 2x (s) | recoveries "
        "| exact total |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['group_size']} | {r['normal_ms']:.3f} | {r['p99_before_ms']:.3f} "
            f"| {r['worst_ms']:.3f} | {r['worst_gap_ms']:.1f} | {r['median_after_ms']:.3f} "
            f"| {r['recovery_s']:.3f} "
            f"| {r['recoveries']} | {'yes' if r['exact'] else 'NO'} |"
        )
    lines += [
        "",
        "Target: back within 2x of normal latency within 2 s of the loss, no batch lost or "
        "counted twice. ms / batch is the mean over a sliding window of 20 micro-batches (a "
        "group delivers its batches together). After the kill 2 of 3 workers remain, so "
        "'normal' afterwards can be up to 1.5x slower than before.",
    ]
    if plotted:
        lines += ["", f"![per-batch latency around the failure]({png.name})"]
    else:
        lines += ["", "(matplotlib not installed: no plot; `pip install -e .[bench]`)"]
    for r in runs:
        del r["gaps"]
    return {"name": "recovery", "rows": runs, "lines": lines}


if __name__ == "__main__":  # pragma: no cover - run through scripts/bench.py
    import argparse

    print("\n".join(asyncio.run(bench_recovery(argparse.Namespace(quick=True)))["lines"]))
