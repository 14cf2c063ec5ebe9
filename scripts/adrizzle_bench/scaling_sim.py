"""``bench.py scaling --simulated``: the driver's cost per micro-batch against the number of
workers, with simulated workers (Drizzle's scaling figure).

    python scripts/bench.py scaling --simulated 16,128,512,1024 [--repeats 3] [--quick]
        [--task-cost-us 0] [--sim-results slot|batch]

For each worker count a real driver (this process) and that many simulated workers
(``adrizzle_bench.simworkers``: the real protocol, no user code; 1 slot each) in other
processes. The data is the seed's (issue 18): 2 partitions of 100 ints per worker, cached.
For G = 1, 10, 100 and auto, single-stage (``sum``) and shuffle (``(x % 64, x)`` pairs,
``reduce_by_key`` into 2 partitions per worker, pre-scheduled): driver CPU per micro-batch
(``time.process_time`` of this process only), the same per worker, wall ms per micro-batch and
the simulating processes' CPU per micro-batch; every run's results are checked exactly
(``simworkers.expected_values``). The simulating processes share the machine's cores with the
driver, so on a small machine wall time measures them too: read driver CPU.
Results: bench-results/scaling-simulated.md and scaling-simulated.png.
"""

from __future__ import annotations

import argparse
import operator
import statistics
from typing import Any

import adrizzle
from adrizzle_bench import harness
from adrizzle_bench.simworkers import expected_values, simulated_engine

WORKERS = (16, 128, 512, 1024)
SIZES: tuple[int | str, ...] = (1, 10, 100, "auto")
WORKLOADS = ("single-stage", "shuffle")
RECORDS = 100  # per partition, as the seed measured
KEYS = 64
BATCHES = {1: 60, 10: 200, 100: 600, "auto": 600}
BATCHES_QUICK = {1: 20, 10: 60, 100: 200, "auto": 200}
# The seed's numbers (issue 18): real workers on this machine, driver CPU µs per micro-batch.
SEED = {1: (338, 75, 33), 4: (910, 209, 53), 16: (2371, 442, 147), 32: (4145, 770, 258)}
TARGET_CPU_128_US = 300.0  # 128 workers, single-stage, G=100
TARGET_PER_WORKER_US = 2.0  # 1,024 workers, G=100
TARGET_SPEEDUP = 20.0  # G=100 vs G=1 per micro-batch at 128 workers


def keyed(x: int) -> tuple[int, int]:
    return (x % KEYS, x)


async def measure(
    engine: adrizzle.Engine, sim: Any, dataset: adrizzle.Dataset, batches: int, size: int | str
) -> dict[str, Any]:
    """One run of ``batches`` micro-batches at group size ``size``: its numbers."""
    await engine.wait_settled(timeout=60)
    before, sim_before = engine.statistics(), await sim.stats()
    with harness.timed() as t:
        results = await engine.run_jobs([dataset] * batches, len, group_size=size, timeout=900)
    await engine.wait_settled(timeout=60)
    after, sim_after = engine.statistics(), await sim.stats()
    frames_in = sum(
        n - before["frames_received"].get(k, 0)
        for k, n in after["frames_received"].items()
        if k != "heartbeat"
    )
    groups = after["groups_launched"] - before["groups_launched"]
    workers = len(engine.workers)
    return {
        "exact": results == expected_values(batches, dataset.partitions),
        "ms_per_batch": t.wall / batches * 1e3,
        "cpu_us_per_batch": t.cpu / batches * 1e6,
        "cpu_us_per_worker_batch": t.cpu / batches / workers * 1e6,
        "sim_cpu_us_per_batch": (sim_after["cpu_s"] - sim_before["cpu_s"]) / batches * 1e6,
        "frames_in_per_batch": frames_in / batches,
        "mean_group": batches / max(1, groups),
    }


async def bench_workers(
    workers: int, args: argparse.Namespace, batches: dict[int | str, int], repeats: int
) -> list[dict[str, Any]]:
    partitions = 2 * workers
    sim_options = {
        "task_cost_us": float(getattr(args, "task_cost_us", 0.0) or 0.0),
        "results": getattr(args, "sim_results", None) or "slot",
    }
    async with simulated_engine(workers, sim=sim_options) as (engine, sim):
        data = engine.parallelize(range(partitions * RECORDS), partitions).cache()
        datasets = {
            "single-stage": data,
            "shuffle": data.map(keyed).reduce_by_key(operator.add, partitions),
        }
        for ds in datasets.values():  # ships the blocks; warms every path
            await engine.run_jobs([ds] * 4, len, group_size=2, timeout=600)
        runs: dict[tuple[str, int | str], list[dict[str, Any]]] = {}
        for _ in range(repeats):
            for workload, ds in datasets.items():  # interleaved: drift hits every row alike
                for size in SIZES:
                    row = await measure(engine, sim, ds, batches[size], size)
                    runs.setdefault((workload, size), []).append(row)
    table = []
    for (workload, size), rows in runs.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "exact"}
        table.append(
            {
                "workers": workers,
                "workload": workload,
                "group_size": size,
                "batches": batches[size],
                "exact": all(r["exact"] for r in rows),
                **med,
            }
        )
    return table


def _row(table: list[dict[str, Any]], workers: int, workload: str, size: int | str) -> Any:
    return next(
        (
            r
            for r in table
            if r["workers"] == workers and r["workload"] == workload and r["group_size"] == size
        ),
        None,
    )


def target_lines(table: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each with what this run measured (or why it was not)."""
    out = []
    g100, g1 = _row(table, 128, "single-stage", 100), _row(table, 128, "single-stage", 1)
    if g100 is None or g1 is None:
        out.append("- 128 workers: not measured in this run.")
    else:
        cpu, speedup = g100["cpu_us_per_batch"], g1["ms_per_batch"] / g100["ms_per_batch"]
        out.append(
            f"- 128 workers, single-stage, G=100: driver CPU {cpu:.0f} µs per micro-batch "
            f"(target ≤ {TARGET_CPU_128_US:.0f}: {'met' if cpu <= TARGET_CPU_128_US else 'not met'}"
            f"); G=100 is {speedup:.1f}x faster per micro-batch than G=1 (target ≥ "
            f"{TARGET_SPEEDUP:.0f}x: {'met' if speedup >= TARGET_SPEEDUP else 'not met'})."
        )
    big = _row(table, 1024, "single-stage", 100)
    if big is None:
        out.append("- 1,024 workers: not measured in this run.")
    else:
        per = big["cpu_us_per_worker_batch"]
        verdict = "met" if per <= TARGET_PER_WORKER_US else "not met"
        out.append(
            f"- 1,024 workers, G=100: {per:.2f} µs of driver CPU per worker per micro-batch "
            f"(target ≤ {TARGET_PER_WORKER_US:g}: {verdict})."
        )
    per_worker = [
        f"{r['workers']}: {r['cpu_us_per_worker_batch']:.2f}"
        for r in table
        if r["workload"] == "single-stage" and r["group_size"] == 100
    ]
    out.append(
        "- Driver CPU per worker per micro-batch at G=100, single-stage (µs, by workers): "
        + ", ".join(per_worker)
        + " (flat = linear growth per micro-batch)."
    )
    return out


def report(table: list[dict[str, Any]], args: argparse.Namespace, repeats: int) -> list[str]:
    counts = sorted({r["workers"] for r in table})
    cost = float(getattr(args, "task_cost_us", 0.0) or 0.0)
    mode = getattr(args, "sim_results", None) or "slot"
    lines = [
        f"### scaling, simulated workers: {', '.join(map(str, counts))} workers of 1 slot, "
        f"2 partitions x {RECORDS} ints per worker, median of {repeats}",
        "",
    ]
    if max(counts) < 128:
        lines += [
            "_Validation run at small worker counts only: the targets at 128 and 1,024 workers "
            "are not measured here._",
            "",
        ]
    lines += [
        "Simulated workers speak the real protocol from a few processes but run no user code "
        "(adrizzle_bench/simworkers.py says exactly what is simulated). Tasks cost "
        f"{cost:g} µs; result frames: {mode} ("
        + (
            "one batch_result per micro-batch per slot, as a slot whose tasks outlast the "
            "linger time sends them"
            if mode == "batch"
            else "packed as slot_results.ResultSender packs them: sent when the slot runs out "
            "of ready work (a simulated slot: at its group's end) or after the linger time"
        )
        + "). Driver CPU is this process's `time.process_time`; the simulating processes run "
        "beside it on the same cores, so wall time includes their work.",
        "",
        "| workers | workload | G | batches | ms / micro-batch | driver CPU µs / micro-batch "
        "| driver CPU µs / worker / batch | sim CPU µs / micro-batch | frames in / batch "
        "| mean G | exact |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['workers']} | {r['workload']} | {r['group_size']} | {r['batches']} "
            f"| {r['ms_per_batch']:.3f} | {r['cpu_us_per_batch']:.0f} "
            f"| {r['cpu_us_per_worker_batch']:.2f} | {r['sim_cpu_us_per_batch']:.0f} "
            f"| {r['frames_in_per_batch']:.1f} | {r['mean_group']:.1f} "
            f"| {'yes' if r['exact'] else 'NO'} |"
        )
    lines += [
        "",
        "The seed's numbers (issue 18; real `adrizzle-worker`s on this machine, driver CPU µs "
        "per micro-batch, same data):",
        "",
        "| workers | G=1 | G=10 | G=100 |",
        "|---:|---:|---:|---:|",
        *(f"| {w} | {a:,} | {b:,} | {c:,} |" for w, (a, b, c) in SEED.items()),
        "",
        "Targets (issue 18):",
        "",
        *target_lines(table),
        "",
    ]
    return lines


def plot(table: list[dict[str, Any]], path: Any) -> Any:
    def lines(key: str, scale: float) -> dict[str, dict[float, float]]:
        out: dict[str, dict[float, float]] = {}
        for workload in WORKLOADS:
            for size in SIZES:
                out[f"G={size} · {workload}"] = {
                    r["workers"]: r[key] * scale
                    for r in table
                    if r["workload"] == workload and r["group_size"] == size
                }
        return out

    return harness.plot_xy_panels(
        path,
        [
            harness.XYPanel(
                "driver CPU per micro-batch",
                "driver CPU ms per micro-batch",
                lines("cpu_us_per_batch", 1e-3),
            ),
            harness.XYPanel(
                "wall time per micro-batch (driver and simulated workers share the cores)",
                "ms per micro-batch",
                lines("ms_per_batch", 1.0),
            ),
        ],
        xlabel="workers (simulated, 1 slot each)",
        title="Time per micro-batch vs workers, one line per group size (solid: single-stage, "
        "dashed: shuffle)",
    )


async def bench_scaling_simulated(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    counts = tuple(getattr(args, "simulated", None) or WORKERS)
    repeats = 1 if quick else max(1, int(args.repeats or 1))
    batches = BATCHES_QUICK if quick else BATCHES
    table: list[dict[str, Any]] = []
    for workers in counts:
        table += await bench_workers(workers, args, batches, repeats)
    lines = report(table, args, repeats)
    results_dir = harness.results_dir(args)
    done = plot(table, results_dir / "scaling-simulated.png")
    lines += harness.plot_links([done] if done is not None else [])
    harness.save_section(results_dir, "scaling-simulated", lines)
    return {
        "name": "scaling-simulated",
        "rows": table,
        "plots": [str(done)] if done is not None else [],
        "lines": lines,
        "passed": all(r["exact"] for r in table),
    }
