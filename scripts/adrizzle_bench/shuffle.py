"""``bench.py shuffle``: a two-stage micro-batch, pre-scheduled at G = 1, 10, 100 vs BSP.

    python scripts/bench.py shuffle [--batches 200] [--repeats 3] [--workers 2] [--quick]

Two workloads, every micro-batch's answer checked:

- small: 4 map partitions x 100 ints -> ``(x % 16, 1)`` -> ``reduce_by_key`` into 2, where the
  engine's per-batch costs dominate. Next to it in the same run: a single stage on the same
  cached input at G = 100 (summed per partition, as ``bench.py single-stage``) and the
  hand-written pre-scheduled shuffle floor (``floor.py``) at each group size.
- large: the same with 4 x 1000 ints: ms per micro-batch, driver frames, blocks and bytes
  pushed between workers per micro-batch, the compute floor (the same Python work in one
  process, no engine), and the workers' resident memory over 1000 more micro-batches (shuffle
  blocks of finished batches must be freed).

Results: bench-results/shuffle.md, RESULTS.md.
"""

from __future__ import annotations

import argparse
import operator
import statistics
import time
from collections.abc import Iterator
from typing import Any

import adrizzle
from adrizzle_bench import harness
from adrizzle_bench.floor import shuffle_floor_ms_per_batch_async
from adrizzle_bench.single_stage import single_stage_once


def _shuffle_job(engine: adrizzle.Engine, records: int = 1000) -> adrizzle.Dataset:
    data = engine.parallelize(range(4 * records), partitions=4).cache()
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
    expected: list[tuple[int, int]] = SHUFFLE_EXPECTED,
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
        assert sorted(kv for part in per_partition for kv in part) == expected

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
    return harness.workers_rss_bytes(engine.workers) / 2**20


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


SMALL_EXPECTED = sorted((k, 25) for k in range(16))


def _mod16_combined(it: Iterator[int]) -> list[tuple[int, int]]:
    """The shuffle's map side as one stage: ``(x % 16, 1)`` combined per key."""
    acc: dict[int, int] = {}
    for k, v in map(_mod16_one, it):
        acc[k] = operator.add(acc[k], v) if k in acc else v
    return list(acc.items())


async def bench_small_shuffle(args: argparse.Namespace) -> dict[str, Any]:
    """The small workload: adrizzle's modes, a single stage on the same input and the
    hand-written pre-scheduled shuffle floor, ratios from one run."""
    modes = [(True, 1), (True, 10), (True, 100), (False, 1)]
    rows: dict[tuple[bool, int], list[dict[str, float]]] = {m: [] for m in modes}
    single: list[float] = []
    map_only: list[float] = []
    async with adrizzle.Engine.local(workers=args.workers, cores=1) as engine:
        job = _shuffle_job(engine, records=100)
        data = engine.parallelize(range(4 * 100), partitions=4).cache()
        combined = data.map_partitions(_mod16_combined)  # the map side alone, no shuffle
        await engine.run_jobs([job] * 20, list, group_size=10)  # warm-up: ship, dial peers
        await engine.run_jobs([data] * 20, sum, group_size=10)
        await engine.run_jobs([combined] * 20, list, group_size=10)
        for _ in range(args.repeats):
            for pre, g in modes:  # interleaved, so drift hits every mode alike
                rows[(pre, g)].append(
                    await shuffle_once(engine, job, args.batches, g, pre, SMALL_EXPECTED)
                )
            one = await single_stage_once(engine, data, args.batches, 100)
            single.append(one["ms_per_batch"])
            with harness.timed() as t:
                await engine.run_jobs([combined] * args.batches, list, group_size=100)
            map_only.append(t.wall / args.batches * 1e3)
    floor = {
        g: statistics.median(
            [
                await shuffle_floor_ms_per_batch_async(args.batches, g, workers=args.workers)
                for _ in range(args.repeats)
            ]
        )
        for g in (1, 10, 100)
    }
    ms = {m: statistics.median(r["ms_per_batch"] for r in rows[m]) for m in modes}
    frames = {m: statistics.median(r["driver_frames_per_batch"] for r in rows[m]) for m in modes}
    single_ms = statistics.median(single)
    map_only_ms = statistics.median(map_only)
    bsp, g100 = ms[(False, 1)], ms[(True, 100)]
    lines = [
        f"### shuffle, small: 4 map partitions x 100 ints -> (x % 16, 1) -> reduce_by_key into "
        f"2; {args.workers} local workers, {args.batches} micro-batches, median of {args.repeats}",
        "",
        "| mode | group size | ms / micro-batch | driver frames / batch "
        "| hand-written floor ms | x floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for pre, g in modes:
        f = floor[g] if pre else None
        lines.append(
            f"| {'pre-scheduled' if pre else 'BSP'} | {g} | {ms[(pre, g)]:.3f} "
            f"| {frames[(pre, g)]:.3f} | {f'{f:.3f}' if f else '-'} "
            f"| {f'{ms[(pre, g)] / f:.2f}' if f else '-'} |"
        )
    lines += [
        f"| single stage (sum per partition), same input | 100 | {single_ms:.3f} | - | - | - |",
        f"| single stage doing the map side (map + combine per key, no shuffle) | 100 "
        f"| {map_only_ms:.3f} | - | - | - |",
        "",
        f"pre-scheduled G=100 is **{bsp / g100:.1f}x** faster than BSP G=1 (target >= 15x) and "
        f"costs **{g100 / single_ms:.2f}x** a single stage on the same input at G=100 "
        f"(target <= 2x); **{g100 / floor[100]:.2f}x** the hand-written pre-scheduled shuffle "
        f"at G=100 (target <= 3x). Against the single stage that does the same map-side "
        f"work without the shuffle: **{g100 / map_only_ms:.2f}x**.",
        "",
    ]
    return {
        "ms_per_batch": {f"{'pre' if p else 'bsp'}_{g}": ms[(p, g)] for p, g in modes},
        "single_stage_100_ms": single_ms,
        "floor_ms": floor,
        "speedup_100_vs_bsp_1": bsp / g100,
        "vs_single_stage_100": g100 / single_ms,
        "map_side_single_stage_100_ms": map_only_ms,
        "vs_map_side_single_stage_100": g100 / map_only_ms,
        "vs_floor": {g: ms[(True, g)] / floor[g] for g in (1, 10, 100)},
        "lines": lines,
    }


async def bench_shuffle(args: argparse.Namespace) -> dict[str, Any]:
    small = await bench_small_shuffle(args)
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
        *small["lines"],
        f"### shuffle, large: 4 map partitions x 1000 ints -> (x % 16, 1) -> reduce_by_key into 2; "
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
    harness.save_section(harness.results_dir(args), "shuffle", lines)
    return {
        "name": "shuffle",
        "small": {k: v for k, v in small.items() if k != "lines"},
        "rows": table,
        "speedup_100_vs_bsp_1": bsp / g100,
        "compute_floor_ms": floor,
        "rss_mib": memory,
        "lines": lines,
    }
