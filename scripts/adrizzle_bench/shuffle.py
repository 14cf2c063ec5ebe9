"""``bench.py shuffle``: a two-stage micro-batch, pre-scheduled at G = 1, 10, 100 vs BSP.

    python scripts/bench.py shuffle [--batches 200] [--repeats 3] [--workers 2] [--quick]

4 map partitions x 1000 ints -> ``(x % 16, 1)`` -> ``reduce_by_key`` into 2, every micro-batch's
answer checked; ms per micro-batch, driver frames, blocks and bytes pushed between workers per
micro-batch, the compute floor (the same Python work in one process, no engine), and the
workers' resident memory over 1000 more micro-batches (shuffle blocks of finished batches must
be freed). Results: bench-results/shuffle.md, RESULTS.md.
"""

from __future__ import annotations

import argparse
import operator
import statistics
import time
from typing import Any

import adrizzle
from adrizzle_bench import harness


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
    harness.save_section(harness.results_dir(args), "shuffle", lines)
    return {
        "name": "shuffle",
        "rows": table,
        "speedup_100_vs_bsp_1": bsp / g100,
        "compute_floor_ms": floor,
        "rss_mib": memory,
        "lines": lines,
    }
