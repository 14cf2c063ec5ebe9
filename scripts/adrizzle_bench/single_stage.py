"""``bench.py single-stage``: a cached single-stage micro-batch at group size 1, 10 and 100.

    python scripts/bench.py single-stage [--batches 200] [--repeats 3] [--workers 2] [--quick]

4 partitions x 1000 ints, cached, summed per partition; ``--batches`` micro-batches per run, the
sizes interleaved ``--repeats`` times, medians reported next to the hand-written floor
(``floor``, and the same floor with a byte-relaying process per worker): ms per micro-batch,
launch / ack / result frames per micro-batch, the driver's CPU per task, and the CPU per
micro-batch of the driver, the workers' runtimes and their slots (``harness.cpu_seconds``).
Results: bench-results/single-stage.md, RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from typing import Any

import adrizzle
from adrizzle_bench import harness
from adrizzle_bench.floor import floor_ms_per_batch_async


def local_processes(engine: adrizzle.Engine) -> dict[str, list[int]]:
    """The pids of the local workers' runtime processes and of their slots."""
    import psutil

    runtimes = [w["pid"] for w in engine.workers if w.get("pid") is not None]
    slots: list[int] = []
    for pid in runtimes:
        with contextlib.suppress(psutil.NoSuchProcess):
            slots += [child.pid for child in psutil.Process(pid).children()]
    return {"runtimes": runtimes, "slots": slots}


def cpu_of(pids: list[int]) -> float:
    return sum(harness.cpu_seconds(pid) or 0.0 for pid in pids)


async def single_stage_once(
    engine: adrizzle.Engine, data: adrizzle.Dataset, batches: int, group_size: int
) -> dict[str, float]:
    before = engine.statistics()
    procs = local_processes(engine)
    cpu_before = {kind: cpu_of(pids) for kind, pids in procs.items()}
    with harness.timed() as t:
        results = await engine.run_jobs([data] * batches, sum, group_size=group_size)
    wall, cpu = t.wall, t.cpu
    cpu_after = {kind: cpu_of(pids) for kind, pids in procs.items()}
    await engine.wait_settled()
    after = engine.statistics()
    assert results == [results[0]] * batches
    tasks = batches * data.partitions

    def delta(kind: str, name: str) -> int:
        return int(after[kind].get(name, 0) - before[kind].get(name, 0))

    return {
        "ms_per_batch": wall / batches * 1e3,
        "launch_per_batch": delta("frames_sent", "launch_group") / batches,
        "ack_per_batch": delta("frames_received", "group_done") / batches,
        "result_frames_per_batch": delta("frames_received", "batch_result") / batches,
        "driver_cpu_us_per_task": cpu / tasks * 1e6,
        # CPU per micro-batch by process (all workers' runtimes, all slots, summed).
        "driver_cpu_us_per_batch": cpu / batches * 1e6,
        "runtimes_cpu_us_per_batch": (cpu_after["runtimes"] - cpu_before["runtimes"])
        / batches
        * 1e6,
        "slots_cpu_us_per_batch": (cpu_after["slots"] - cpu_before["slots"]) / batches * 1e6,
    }


async def bench_single_stage(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [1, 10, 100]
    rows: dict[int, list[dict[str, float]]] = {g: [] for g in sizes}
    async with adrizzle.Engine.local(workers=args.workers, cores=1) as engine:
        data = engine.parallelize(range(4 * 1000), partitions=4).cache()
        await engine.run_jobs([data] * 20, sum, group_size=10)  # warm-up
        for _ in range(args.repeats):
            for g in sizes:  # interleaved, so drift hits every size alike
                rows[g].append(await single_stage_once(engine, data, args.batches, g))
    # The floors are noisy too: each is measured as often as the engine, the median kept.
    floors: dict[tuple[int, bool], list[float]] = {(g, r): [] for g in sizes for r in (0, 1)}
    for _ in range(args.repeats):
        for g in sizes:
            for relay in (False, True):
                floors[g, relay].append(
                    await floor_ms_per_batch_async(
                        args.batches, g, workers=args.workers, relay=relay
                    )
                )
    table = []
    for g in sizes:
        med = {k: statistics.median(r[k] for r in rows[g]) for k in rows[g][0]}
        med["group_size"] = g
        med["floor_ms_per_batch"] = statistics.median(floors[g, False])
        med["relay_floor_ms_per_batch"] = statistics.median(floors[g, True])
        table.append(med)
    by_g = {int(r["group_size"]): r for r in table}
    speedup = by_g[1]["ms_per_batch"] / by_g[100]["ms_per_batch"]
    lines = [
        f"### single-stage: 4 partitions x 1000 ints, {args.workers} local workers, "
        f"{args.batches} micro-batches, median of {args.repeats}",
        "",
        "| group size | ms / micro-batch | hand-written floor ms | x floor | launch frames / batch "
        "| ack frames / batch | result frames / batch | driver CPU µs / task "
        "| floor with a relay hop ms | x relay floor "
        "| CPU µs / micro-batch: driver / worker runtimes / slots |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in table:
        lines.append(
            f"| {int(r['group_size'])} | {r['ms_per_batch']:.4f} | {r['floor_ms_per_batch']:.4f} "
            f"| {r['ms_per_batch'] / r['floor_ms_per_batch']:.2f} | {r['launch_per_batch']:.3f} "
            f"| {r['ack_per_batch']:.3f} | {r['result_frames_per_batch']:.2f} "
            f"| {r['driver_cpu_us_per_task']:.1f} | {r['relay_floor_ms_per_batch']:.4f} "
            f"| {r['ms_per_batch'] / r['relay_floor_ms_per_batch']:.2f} "
            f"| {r['driver_cpu_us_per_batch']:.1f} / {r['runtimes_cpu_us_per_batch']:.1f} "
            f"/ {r['slots_cpu_us_per_batch']:.1f} |"
        )
    lines += [
        "",
        f"group size 100 is **{speedup:.1f}x** faster per micro-batch than group size 1 "
        f"(target >= 10x); ack frames per micro-batch = workers / G "
        f"({args.workers}/G: {', '.join(f'{args.workers / g:g}' for g in sizes)}). "
        "The floor is a hand-written driver and worker processes (`scripts/floor.py`); the "
        "relay floor puts a process that only forwards bytes between them, the shape of "
        "adrizzle's worker runtime and slot.",
    ]
    harness.save_section(harness.results_dir(args), "single-stage", lines)
    return {"name": "single-stage", "rows": table, "speedup_100_vs_1": speedup, "lines": lines}
