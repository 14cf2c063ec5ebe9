"""The demo behind scripts/demo: a running sum, group size 1 vs 10, per-batch table.

Batch b, partition p holds ``range((b*P + p)*K, (b*P + p + 1)*K)``; workers sum partitions,
the driver keeps the running total as each micro-batch's results arrive.
"""

from __future__ import annotations

import argparse
import functools
import time

import adrizzle


def batch_partition(b: int, partitions: int, records: int, p: int) -> range:
    start = (b * partitions + p) * records
    return range(start, start + records)


async def running_sum(
    engine: adrizzle.Engine, batches: int, group_size: int, partitions: int, records: int
) -> list[tuple[int, float]]:
    """Per batch: (running total after it, ms since the previous batch was delivered)."""
    datasets = [
        engine.generate(functools.partial(batch_partition, b, partitions, records), partitions)
        for b in range(batches)
    ]
    total = 0
    rows: list[tuple[int, float]] = []
    last = time.perf_counter()
    async for job in engine.iter_jobs(datasets, sum, group_size=group_size):
        assert job.values is not None
        total += sum(job.values)
        now = time.perf_counter()
        rows.append((total, (now - last) * 1e3))
        last = now
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--records", type=int, default=1000)
    args = parser.parse_args()
    n, p, k = args.batches, args.partitions, args.records
    async with adrizzle.Engine.local(workers=2, cores=1) as engine:
        workers = ", ".join(f"{w['id']} (pid {w['pid']})" for w in engine.workers)
        print(f"driver on {engine.address}; workers: {workers}")
        await running_sum(engine, 10, 1, p, k)  # warm-up: slots import and unpickle once
        results = {g: await running_sum(engine, n, g, p, k) for g in (1, 10)}
    print(f"\nrunning sum of {n} micro-batches x {p} partitions x {k} ints")
    print("| batch | running total | G=1: ms since previous batch | G=10: ms since previous |")
    print("|---:|---:|---:|---:|")
    for b in range(n):
        total, ms1 = results[1][b]
        _total, ms10 = results[10][b]
        print(f"| {b} | {total} | {ms1:.3f} | {ms10:.3f} |")
    expected = sum(range(n * p * k))
    for g, rows in results.items():
        final = rows[-1][0]
        verdict = "exact" if final == expected else f"WRONG, expected {expected}"
        mean = sum(ms for _t, ms in rows) / len(rows)
        print(f"group size {g:>2}: final sum {final} ({verdict}), {mean:.3f} ms per micro-batch")
    print("(with G=10 a group's batches arrive back to back: one launch and one ack per group)")


if __name__ == "__main__":
    adrizzle.run(main())
