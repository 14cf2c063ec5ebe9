"""The check every launcher passes: a shuffle job and a stateful stream, exact, across a loss.

Used in-process by the Dask and Ray tests, and run as the driver program by the SLURM test
(``python -m adrizzle.deploy.slurm deploy_check.py --kill-step 0 --kill-at 30``: it prints one
JSON line with what it saw; ``--kill-signal TERM`` makes it a drain). ``kill`` is awaited in
the background when the stream has delivered batch ``kill_at``: the launcher's test stops one
worker through its manager there."""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import operator
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import cloudpickle

import adrizzle

if __name__ != "__main__":  # the slots cannot import this file: ship its functions by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])

P = 4  # partitions
K = 40  # ints per partition and batch
KEYS = 6
WORDS = 5000


def numbers(partition: int) -> range:
    return range(partition * WORDS, (partition + 1) * WORDS)


def expected_counts() -> dict[int, int]:
    return dict(collections.Counter(x % 7 for p in range(P) for x in numbers(p)))


async def shuffle(engine: adrizzle.Engine) -> dict[int, int]:
    """A two-stage job (pre-scheduled shuffle): how many of the numbers fall in each x % 7."""
    counts = engine.generate(numbers, P).map(lambda x: (x % 7, 1)).reduce_by_key(operator.add)
    [per_partition] = await engine.run_jobs([counts], list, timeout=60)
    return {key: value for part in per_partition for key, value in part}


def ints(batch: int, partition: int) -> range:
    start = (batch * P + partition) * K
    return range(start, start + K)


def keyed(x: int) -> tuple[int, int]:
    return (x % KEYS, x)


def add_values(values: list[int], total: int | None) -> int:
    return (total or 0) + sum(values)


def expected_totals(batches: int) -> list[dict[int, int]]:
    """Per batch: every key's running total after it (plain Python)."""
    totals: dict[int, int] = collections.Counter()
    out = []
    for b in range(batches):
        for p in range(P):
            for x in ints(b, p):
                totals[x % KEYS] += x
        out.append(dict(totals))
    return out


async def stream(
    engine: adrizzle.Engine,
    batches: int,
    kill_at: int | None = None,
    kill: Callable[[], Awaitable[Any]] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """A running sum per key as stream state, paced (``batches`` x 20 ms); every batch's
    totals are compared with plain Python. Returns the batches seen and the mismatches."""
    want = expected_totals(batches)
    running = (
        engine.stream(ints, partitions=P, batch_interval=0.02)
        .map(keyed)
        .update_state(add_values, combine=operator.add, partitions=3)
    )
    seen: list[int] = []
    mismatches: list[int] = []
    killer: asyncio.Future[Any] | None = None
    killed_by: int | None = None
    last: dict[int, int] = {}
    async for update in running.run(batches, group_size=4, timeout=90):
        seen.append(update.batch)
        last = dict(update.values)
        if last != want[update.batch]:
            mismatches.append(update.batch)
        if progress is not None:
            progress(update.batch)
        if kill is not None and update.batch == kill_at:
            killer = asyncio.ensure_future(kill())
        if killer is not None and killer.done() and killed_by is None:
            killed_by = update.batch
    if killer is not None:
        await killer
    return {
        "seen": seen,
        "mismatches": mismatches,
        "last": sorted(last.items()),
        "killed_by": killed_by,  # the batch delivered when the kill had been done
    }


async def check(
    engine: adrizzle.Engine,
    batches: int = 150,
    kill_at: int | None = None,
    kill: Callable[[], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """The whole check: shuffle, stream (with the kill), shuffle again on the workers left."""
    before = len(engine.workers)
    first = await shuffle(engine)
    streamed = await stream(engine, batches, kill_at, kill)
    after = await shuffle(engine)
    return {
        "workers_before": before,
        "workers_after": len(engine.workers),
        "shuffle": sorted(first.items()),
        "shuffle_after": sorted(after.items()),
        "stream": streamed,
        "recoveries": engine.statistics()["recoveries"],
    }


def assert_exact(result: dict[str, Any], batches: int, killed: bool) -> None:
    """What a test asserts of ``check``'s result; ``killed``: a worker was stopped during the
    stream, and the stop was over well before the stream's end."""
    counts = sorted(expected_counts().items())
    assert [tuple(kv) for kv in result["shuffle"]] == counts
    assert [tuple(kv) for kv in result["shuffle_after"]] == counts
    assert result["stream"]["seen"] == list(range(batches))
    assert result["stream"]["mismatches"] == []
    if killed:
        killed_by = result["stream"]["killed_by"]
        assert killed_by is not None
        assert killed_by < batches - 10, killed_by
    last = expected_totals(batches)[-1]
    assert [tuple(kv) for kv in result["stream"]["last"]] == sorted(last.items())


async def main() -> None:
    """The SLURM test's driver program."""
    from adrizzle.deploy import driver_engine, expected_workers

    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--kill-step", default=None, help="scancel --signal JOB.STEP")
    parser.add_argument("--kill-at", type=int, default=30)
    parser.add_argument("--kill-signal", default="KILL", help="KILL, or TERM (a drain)")
    args = parser.parse_args()

    async def kill() -> None:
        step = f"{os.environ['SLURM_JOB_ID']}.{args.kill_step}"
        proc = await asyncio.create_subprocess_exec("scancel", f"--signal={args.kill_signal}", step)
        await proc.wait()

    async with driver_engine() as engine:
        await engine.wait_for_workers(expected_workers(), timeout=60)
        result = await check(
            engine, args.batches, args.kill_at, kill if args.kill_step is not None else None
        )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    adrizzle.run(main())
