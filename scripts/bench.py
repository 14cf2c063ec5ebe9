"""adrizzle benchmarks. Every number is measured side by side in one run on this machine.

    python scripts/bench.py single-stage [--batches 200] [--repeats 3] [--quick] [--json]
    python scripts/bench.py shuffle      [--batches 200] [--repeats 3] [--quick] [--json]
    python scripts/bench.py recovery     [--quick] [--json]

Sub-commands are added as the engine grows (shuffle, streaming, recovery, scaling, peers, all).
Results are printed as a markdown table and written under bench-results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import operator
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

import adrizzle
from adrizzle.progress import progress

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_peers import bench_peers
from bench_scaling import bench_scaling
from floor import floor_ms_per_batch_async

RESULTS = Path(__file__).resolve().parent.parent / "bench-results"


def machine() -> str:
    return (
        f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
        f"adrizzle {adrizzle.__version__} · {datetime.date.today().isoformat()}"
    )


async def single_stage_once(
    engine: adrizzle.Engine, data: adrizzle.Dataset, batches: int, group_size: int
) -> dict[str, float]:
    before = engine.statistics()
    cpu0, t0 = time.process_time(), time.perf_counter()
    results = await engine.run_jobs([data] * batches, sum, group_size=group_size)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
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
    floor = {
        g: await floor_ms_per_batch_async(args.batches, g, workers=args.workers) for g in sizes
    }
    table = []
    for g in sizes:
        med = {k: statistics.median(r[k] for r in rows[g]) for k in rows[g][0]}
        med["group_size"] = g
        med["floor_ms_per_batch"] = floor[g]
        table.append(med)
    by_g = {int(r["group_size"]): r for r in table}
    speedup = by_g[1]["ms_per_batch"] / by_g[100]["ms_per_batch"]
    lines = [
        f"### single-stage: 4 partitions x 1000 ints, {args.workers} local workers, "
        f"{args.batches} micro-batches, median of {args.repeats}",
        "",
        "| group size | ms / micro-batch | hand-written floor ms | x floor | launch frames / batch "
        "| ack frames / batch | result frames / batch | driver CPU µs / task |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {int(r['group_size'])} | {r['ms_per_batch']:.4f} | {r['floor_ms_per_batch']:.4f} "
            f"| {r['ms_per_batch'] / r['floor_ms_per_batch']:.2f} | {r['launch_per_batch']:.3f} "
            f"| {r['ack_per_batch']:.3f} | {r['result_frames_per_batch']:.2f} "
            f"| {r['driver_cpu_us_per_task']:.1f} |"
        )
    lines += [
        "",
        f"group size 100 is **{speedup:.1f}x** faster per micro-batch than group size 1 "
        f"(target >= 10x); ack frames per micro-batch = workers / G "
        f"({args.workers}/G: {', '.join(f'{args.workers / g:g}' for g in sizes)}).",
    ]
    return {"name": "single-stage", "rows": table, "speedup_100_vs_1": speedup, "lines": lines}


def _shuffle_job(engine: adrizzle.Engine) -> adrizzle.Dataset:
    data = engine.parallelize(range(4 * 1000), partitions=4).cache()
    return data.map(_mod16_one).reduce_by_key(operator.add, partitions=2)


def _mod16_one(x: int) -> tuple[int, int]:
    return (x % 16, 1)


SHUFFLE_EXPECTED = sorted((k, 250) for k in range(16))


async def shuffle_once(
    engine: adrizzle.Engine,
    job: adrizzle.Dataset,
    batches: int,
    group_size: int,
    pre_schedule: bool,
) -> dict[str, float]:
    await engine.wait_settled()
    before = engine.statistics()
    t0 = time.perf_counter()
    results = await engine.run_jobs(
        [job] * batches, list, group_size=group_size, pre_schedule=pre_schedule
    )
    wall = time.perf_counter() - t0
    await engine.wait_settled()
    after = engine.statistics()
    for per_partition in results:  # every micro-batch's answer is checked
        assert sorted(kv for part in per_partition for kv in part) == SHUFFLE_EXPECTED

    def frames(kind: str) -> int:
        return int(sum(after[kind].values()) - sum(before[kind].values()))

    return {
        "ms_per_batch": wall / batches * 1e3,
        "driver_frames_per_batch": (frames("frames_sent") + frames("frames_received")) / batches,
        "launch_per_batch": (
            after["frames_sent"].get("launch_group", 0)
            - before["frames_sent"].get("launch_group", 0)
        )
        / batches,
        "pushed_bytes_per_batch": (after["shuffle_bytes_pushed"] - before["shuffle_bytes_pushed"])
        / batches,
        "pushed_blocks_per_batch": (
            after["shuffle_blocks_pushed"] - before["shuffle_blocks_pushed"]
        )
        / batches,
    }


def _cluster_rss_mib(engine: adrizzle.Engine) -> float:
    """Resident memory of every local worker process and its slots, in MiB."""
    total = 0
    for w in engine.workers:
        if w.get("pid") is None:
            continue
        try:
            proc = psutil.Process(w["pid"])
            total += sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def shuffle_compute_floor_ms(workers: int, batches: int = 200) -> float:
    """The batch's Python work alone (map, combine, partition, reduce) in this process, with no
    engine, divided by the workers that would share it: no design can beat this per batch."""
    parts = [list(range(p * 1000, (p + 1) * 1000)) for p in range(4)]
    t0 = time.perf_counter()
    for _ in range(batches):
        reducers: list[dict[int, int]] = [{}, {}]
        for part in parts:
            combined: dict[int, int] = {}
            for k, v in map(_mod16_one, part):
                combined[k] = combined[k] + v if k in combined else v
            for k, v in combined.items():
                r = reducers[hash(k) % 2]
                r[k] = r[k] + v if k in r else v
        assert sorted(kv for r in reducers for kv in r.items()) == SHUFFLE_EXPECTED
    return (time.perf_counter() - t0) / batches * 1e3 / workers


async def bench_shuffle(args: argparse.Namespace) -> dict[str, Any]:
    modes = [(True, 1), (True, 10), (True, 100), (False, 1)]
    rows: dict[tuple[bool, int], list[dict[str, float]]] = {m: [] for m in modes}
    memory: list[tuple[int, float]] = []
    async with adrizzle.Engine.local(workers=args.workers, cores=1) as engine:
        job = _shuffle_job(engine)
        await engine.run_jobs([job] * 20, list, group_size=10)  # warm-up: ship, dial peers
        for _ in range(args.repeats):
            for pre, g in modes:  # interleaved, so drift hits every mode alike
                rows[(pre, g)].append(await shuffle_once(engine, job, args.batches, g, pre))
        # Memory: shuffle blocks of finished batches must be freed. 1000 micro-batches in
        # groups of 10, RSS of all worker and slot processes sampled every 100.
        memory_batches = 200 if args.quick else 1000
        memory.append((0, _cluster_rss_mib(engine)))
        for done in range(100, memory_batches + 1, 100):
            await engine.run_jobs([job] * 100, list, group_size=10)
            memory.append((done, _cluster_rss_mib(engine)))
    table = []
    for pre, g in modes:
        med = {k: statistics.median(r[k] for r in rows[(pre, g)]) for k in rows[(pre, g)][0]}
        table.append({"mode": "pre-scheduled" if pre else "BSP", "group_size": g, **med})
    bsp = next(r for r in table if r["mode"] == "BSP")["ms_per_batch"]
    g100 = next(r for r in table if r["group_size"] == 100)["ms_per_batch"]
    floor = statistics.median(shuffle_compute_floor_ms(args.workers) for _ in range(3))
    lines = [
        f"### shuffle: 4 map partitions x 1000 ints -> (x % 16, 1) -> reduce_by_key into 2; "
        f"{args.workers} local workers, {args.batches} micro-batches, median of {args.repeats}",
        "",
        "| mode | group size | ms / micro-batch | driver frames / batch | launch frames / batch "
        "| blocks pushed / batch | bytes pushed / batch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| {r['mode']} | {r['group_size']} | {r['ms_per_batch']:.3f} "
            f"| {r['driver_frames_per_batch']:.3f} | {r['launch_per_batch']:.3f} "
            f"| {r['pushed_blocks_per_batch']:.1f} | {r['pushed_bytes_per_batch']:.0f} |"
        )
    lines += [
        "",
        f"pre-scheduled group size 100 is **{bsp / g100:.1f}x** faster per micro-batch than "
        f"BSP group size 1 (target >= 15x).",
        "",
        f"Compute floor (the same map/combine/reduce in one process, no engine, / "
        f"{args.workers} workers): {floor:.3f} ms per micro-batch, so no engine on this "
        f"machine can be more than {bsp / floor:.1f}x faster than BSP group size 1 here; "
        f"group size 100 is at {g100 / floor:.1f}x the floor.",
        "",
        "Worker + slot RSS (MiB) after N more micro-batches (group size 10): "
        + ", ".join(f"{n}: {mib:.1f}" for n, mib in memory),
    ]
    return {
        "name": "shuffle",
        "rows": table,
        "speedup_100_vs_bsp_1": bsp / g100,
        "compute_floor_ms": floor,
        "rss_mib": memory,
        "lines": lines,
    }


from bench_recovery import bench_recovery  # noqa: E402
from bench_streaming import bench_streaming  # noqa: E402

BENCHES = {
    "single-stage": bench_single_stage,
    "shuffle": bench_shuffle,
    "recovery": bench_recovery,
    "streaming": bench_streaming,
}


# Sub-commands in modules of their own.
BENCHES.update({"scaling": bench_scaling, "peers": bench_peers})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bench", choices=[*BENCHES, "all"])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke run")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    names = list(BENCHES) if args.bench == "all" else [args.bench]
    RESULTS.mkdir(exist_ok=True)
    summary = {"machine": machine(), "results": []}
    with progress(total=len(names), desc="benchmarks", quiet=args.json) as bar:
        for name in names:
            bar.set_postfix_str(name)
            result = adrizzle.run(BENCHES[name](args))
            text = "\n".join([f"_{machine()}_", "", *result.pop("lines")])
            (RESULTS / f"{name}.md").write_text(text + "\n")
            if not args.json:
                print(text, flush=True)
            summary["results"].append(result)
            bar.update()
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
