"""What checkpointing stream state at every group costs, side by side with (almost) none.

A streaming running sum (4 partitions x 1000 ints per micro-batch, 16 keys, ``update_state``)
on 2 local workers, 1000 micro-batches after 100 of warm-up, for group sizes 1 and 10, with
``Engine(checkpoint_interval=0)`` (every group) and ``checkpoint_interval=3600`` (only each
run's first group), alternating, 5 times each. Prints the median ms per micro-batch (and the
range) and the checkpoints committed.

    .venv/bin/python scripts/bench_checkpoint_cost.py
"""

from __future__ import annotations

import asyncio
import operator
import statistics
import sys
import time

import cloudpickle

import adrizzle

cloudpickle.register_pickle_by_value(sys.modules[__name__])

P, K = 4, 1000


def ints(batch: int, partition: int) -> range:
    start = (batch * P + partition) * K
    return range(start, start + K)


def add(values: list[int], total: int | None) -> int:
    return (total or 0) + sum(values)


def key(x: int) -> tuple[int, int]:
    return (x % 16, x)


async def one(interval: float, group_size: int, batches: int = 1000) -> tuple[float, int]:
    async with adrizzle.Engine.local(workers=2, cores=1, checkpoint_interval=interval) as e:
        totals = e.stream(ints, partitions=P).map(key).update_state(add, combine=operator.add)
        async for _ in totals.run(100, group_size=group_size):
            pass
        t = time.perf_counter()
        async for _ in totals.run(batches, group_size=group_size):
            pass
        ms = (time.perf_counter() - t) / batches * 1e3
        await e.wait_settled()
        return ms, e.statistics()["checkpoints"]["commits"]


async def main(repeats: int = 5) -> None:
    print("| group size | checkpoint_interval s | median ms / micro-batch (range) | commits |")
    print("|---:|---:|---|---:|")
    for group_size in (1, 10):
        runs: dict[float, list[float]] = {0.0: [], 3600.0: []}
        commits: dict[float, int] = {}
        for _repeat in range(repeats):
            for interval in runs:  # alternating, so drift in the machine's load hits both
                ms, commits[interval] = await one(interval, group_size)
                runs[interval].append(ms)
        for interval, ms_list in runs.items():
            print(
                f"| {group_size} | {interval:g} | {statistics.median(ms_list):.3f} "
                f"({min(ms_list):.3f}-{max(ms_list):.3f}) | {commits[interval]} |",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())
