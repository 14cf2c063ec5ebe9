"""``bench.py scaling``: how the driver's cost grows with the number of workers and with G.

    python scripts/bench.py scaling [--repeats 3] [--quick] [--json]
    python scripts/bench.py scaling --simulated 16,128,512,1024   (adrizzle_bench.scaling_sim)
    python scripts/bench.py scaling --hosts 4 --rtt-ms 0,0.5,2     (adrizzle_bench.scaling_hosts)

For 1, 2, 4 and 8 local workers (1 core each; 2 partitions of 1000 ints per worker, cached) and
group sizes from 1 to 1000, 1000 single-stage micro-batches per run: ms per micro-batch, driver
CPU (``time.process_time`` of this process, which is the whole driver) per task and per group,
and frames the driver sends and receives per group. On a 2-core machine 4 and 8 workers
oversubscribe the cores, so their ms per micro-batch mostly measures that; driver CPU per task
is the number to read. Results: bench-results/scaling.md, scaling-*.png.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from typing import Any

import adrizzle
from adrizzle_bench import harness

WORKERS = (1, 2, 4, 8)
SIZES_FULL = (1, 3, 10, 30, 100, 300, 1000)
SIZES_QUICK = (1, 10, 100, 1000)
BATCHES = 1000
RECORDS = 1000


async def scaling_once(
    engine: adrizzle.Engine, data: adrizzle.Dataset, batches: int, group_size: int
) -> dict[str, float]:
    await engine.wait_settled()
    before = engine.statistics()
    with harness.timed() as t:
        results = await engine.run_jobs([data] * batches, sum, group_size=group_size, timeout=300)
    wall, cpu = t.wall, t.cpu
    await engine.wait_settled()
    after = engine.statistics()
    assert results == [results[0]] * batches
    groups = math.ceil(batches / group_size)
    frames = sum(
        after[kind].get(name, 0) - before[kind].get(name, 0)
        for kind in ("frames_sent", "frames_received")
        for name in after[kind]
        if name != "heartbeat"
    )
    return {
        "ms_per_batch": wall / batches * 1e3,
        "driver_cpu_us_per_task": cpu / (batches * data.partitions) * 1e6,
        "driver_cpu_us_per_group": cpu / groups * 1e6,
        "frames_per_group": frames / groups,
    }


async def bench_scaling(args: argparse.Namespace) -> dict[str, Any]:
    """Real local workers; with ``--simulated`` or ``--hosts`` the other two modes."""
    if getattr(args, "simulated", None):
        from adrizzle_bench.scaling_sim import bench_scaling_simulated

        return await bench_scaling_simulated(args)
    if getattr(args, "hosts", None):
        from adrizzle_bench.scaling_hosts import bench_scaling_hosts

        return await bench_scaling_hosts(args)
    return await bench_scaling_local(args)


async def bench_scaling_local(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    sizes = SIZES_QUICK if quick else SIZES_FULL
    repeats = 1 if quick else args.repeats
    batches = int(getattr(args, "scaling_batches", None) or BATCHES)
    workers_list = tuple(getattr(args, "scaling_workers", None) or WORKERS)
    records = int(getattr(args, "scaling_records", None) or RECORDS)
    results_dir = harness.results_dir(args)
    table: list[dict[str, float]] = []
    for workers in workers_list:
        partitions = 2 * workers
        runs: dict[int, list[dict[str, float]]] = {g: [] for g in sizes}
        async with adrizzle.Engine.local(workers=workers, cores=1) as engine:
            data = engine.parallelize(range(partitions * records), partitions).cache()
            await engine.run_jobs([data] * 20, sum, group_size=10)  # warm-up
            for _ in range(repeats):
                for g in sizes:  # interleaved, so drift hits every size alike
                    runs[g].append(await scaling_once(engine, data, batches, g))
        for g in sizes:
            med = {k: statistics.median(r[k] for r in runs[g]) for k in runs[g][0]}
            table.append({"workers": workers, "partitions": partitions, "group_size": g, **med})

    lines = [
        f"### scaling: {batches} single-stage micro-batches per run, 2 partitions x "
        f"{records} ints per worker, workers of 1 core, median of {repeats}",
        "",
        "| workers | tasks / batch | group size | ms / micro-batch | driver CPU µs / task "
        "| driver CPU µs / group | frames / group |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['workers']} | {r['partitions']} | {r['group_size']} | {r['ms_per_batch']:.3f} "
            f"| {r['driver_cpu_us_per_task']:.1f} | {r['driver_cpu_us_per_group']:.0f} "
            f"| {r['frames_per_group']:.1f} |"
        )
    g_lo, g_hi = sizes[0], sizes[-1]
    growth = []
    for w in workers_list:
        lo = next(r for r in table if r["workers"] == w and r["group_size"] == g_lo)
        hi = next(r for r in table if r["workers"] == w and r["group_size"] == g_hi)
        growth.append(
            f"{w} worker(s): {lo['driver_cpu_us_per_task']:.1f} -> "
            f"{hi['driver_cpu_us_per_task']:.1f} µs"
        )
    lines += [
        "",
        f"Driver CPU per task from G={g_lo} to G={g_hi}: " + "; ".join(growth) + ". "
        "Frames per group: one launch and one ack per worker, plus the result frames (a slot "
        "packs the micro-batches that finish within the linger time into one). The machine has "
        f"{os.cpu_count()} cores: more workers than cores share them.",
        "",
    ]
    by_workers = {
        f"{w} worker(s)": {
            int(r["group_size"]): r["driver_cpu_us_per_task"] for r in table if r["workers"] == w
        }
        for w in workers_list
    }
    ms_by_workers = {
        f"{w} worker(s)": {
            int(r["group_size"]): r["ms_per_batch"] for r in table if r["workers"] == w
        }
        for w in workers_list
    }
    plots = [
        harness.plot_vs_group_size(
            results_dir / "scaling-driver-cpu.png",
            "driver CPU per task vs group size",
            by_workers,
            ylabel="driver CPU µs per task",
        ),
        harness.plot_vs_group_size(
            results_dir / "scaling-ms.png",
            "ms per micro-batch vs group size (2 partitions per worker)",
            ms_by_workers,
        ),
    ]
    done = [p for p in plots if p is not None]
    lines += harness.plot_links(done)
    harness.save_section(results_dir, "scaling", lines)
    return {"name": "scaling", "rows": table, "plots": [str(p) for p in done], "lines": lines}
