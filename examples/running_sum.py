"""Drizzle's streaming running sum: each micro-batch is summed on the workers, the driver keeps
a running total across micro-batches.

Micro-batch b, partition p holds the ints ``range((b*P + p)*K, (b*P + p + 1)*K)`` for
``--partitions`` P and ``--records`` K: each partition is generated on the slot it is pinned to
(like a replayable log read from an offset), so nothing is shipped per micro-batch. The N jobs
run in groups of ``group_size`` micro-batches through ``engine.iter_jobs``, which delivers each
micro-batch as soon as it completes; the running total is updated as it arrives. The final
total is therefore ``sum(range(N*P*K))``.

    python examples/running_sum.py 100 10               # 100 micro-batches in groups of 10
    python examples/running_sum.py 100 1                # the BSP baseline, one batch at a time
    python examples/running_sum.py 100 10 --json        # last line: JSON summary
    python examples/running_sum.py 200 auto --stream    # the total as stream state, adaptive G

With ``--stream`` the pipeline is an adrizzle stream and the running total is streaming state:
``update_state`` keeps it in the slot that owns its key, each micro-batch adds its ints there,
and each batch's output is the total so far (the driver only reads it). ``group_size`` may be
``auto`` (adaptive group size) in both modes.

Without ``--json`` one line per micro-batch shows its sum, the running total and the ms since
the previous micro-batch arrived. ``ms_per_batch`` is the wall time of the N micro-batches
divided by N; an untimed warm-up micro-batch (``--warmup``, default 1) that loads the function
into the slots comes first and is not part of the total.
"""

from __future__ import annotations

import argparse
import functools
import json
import operator
import sys
import time

from _cli import example_parser, group_size_arg

import adrizzle


def batch_partition(batch: int, partitions: int, records: int, partition: int) -> range:
    """The ints of one partition of one micro-batch (computed on the slot)."""
    start = (batch * partitions + partition) * records
    return range(start, start + records)


def print_batch(index: int, batch_sum: int, total: int, ms: float) -> None:
    print(f"batch {index:5d}: sum {batch_sum:>14d}  running total {total:>18d}  {ms:8.3f} ms")


def summary(
    args: argparse.Namespace, mode: str, elapsed: float, completed: int, total: int
) -> dict[str, object]:
    """The JSON summary's keys common to both modes."""
    return {
        "mode": mode,
        "batches": args.batches,
        "group_size": args.group_size,
        "workers": args.workers,
        "cores": args.cores,
        "partitions": args.partitions,
        "records": args.records,
        "ms_per_batch": elapsed / args.batches * 1e3,
        "batches_completed": completed,
        "final_sum": total,
    }


async def running_sum(args: argparse.Namespace) -> dict[str, object]:
    n, p, k = args.batches, args.partitions, args.records
    async with adrizzle.Engine.local(workers=args.workers, cores=args.cores) as engine:

        def micro_batch(b: int) -> adrizzle.Dataset:
            return engine.generate(functools.partial(batch_partition, b, p, k), partitions=p)

        if args.warmup:
            warm = [micro_batch(b) for b in range(args.warmup)]
            await engine.run_jobs(warm, sum, timeout=args.timeout)
        jobs = [micro_batch(b) for b in range(n)]
        total = 0
        expected_index = 0
        started = last = time.perf_counter()
        async for job in engine.iter_jobs(
            jobs, sum, group_size=args.group_size, timeout=args.timeout
        ):
            assert job.values is not None
            if job.index != expected_index:
                raise RuntimeError(f"micro-batch {job.index} arrived, expected {expected_index}")
            expected_index += 1
            batch_sum = sum(job.values)
            total += batch_sum
            now = time.perf_counter()
            if not args.json:
                print_batch(job.index, batch_sum, total, (now - last) * 1e3)
            last = now
        elapsed = time.perf_counter() - started
    return summary(args, "jobs", elapsed, expected_index, total)


def stream_source(partitions: int, records: int, batch: int, partition: int) -> range:
    return batch_partition(batch, partitions, records, partition)


def to_total_key(x: int) -> tuple[str, int]:
    return ("total", x)


def add_to_total(values: list[int], total: int | None) -> int:
    return (total or 0) + sum(values)


async def stream_running_sum(args: argparse.Namespace) -> dict[str, object]:
    """The running total as ``update_state`` state on the slots, never shipped per batch."""
    n, p, k = args.batches, args.partitions, args.records
    async with adrizzle.Engine.local(workers=args.workers, cores=args.cores) as engine:

        def totals() -> adrizzle.Stream:
            source = functools.partial(stream_source, p, k)
            stream = engine.stream(source, partitions=p)
            return stream.map(to_total_key).update_state(add_to_total, combine=operator.add)

        if args.warmup:  # its own stream: its state is separate from the measured one
            await totals().drain(args.warmup, timeout=args.timeout)
        total = 0
        delivered = 0
        started = last = time.perf_counter()
        run = totals().run(n, group_size=args.group_size, timeout=args.timeout)
        async for update in run:
            if update.batch != delivered:
                raise RuntimeError(f"micro-batch {update.batch} arrived, expected {delivered}")
            delivered += 1
            # One key: the batch's output is the total so far (empty if no int was added).
            new_total = update.values[0][1] if update.values else total
            batch_sum, total = new_total - total, new_total
            now = time.perf_counter()
            if not args.json:
                print_batch(update.batch, batch_sum, total, (now - last) * 1e3)
            last = now
        elapsed = time.perf_counter() - started
    return {
        **summary(args, "stream", elapsed, delivered, total),
        "group_sizes": {str(size): groups for size, groups in run.group_sizes().items()},
    }


def main() -> int:
    parser = example_parser(__doc__, group_size_arg, "micro-batches per group G, or auto")
    parser.add_argument(
        "--stream", action="store_true", help="keep the total as stream state (update_state)"
    )
    args = parser.parse_args()
    try:
        summary = adrizzle.run(stream_running_sum(args) if args.stream else running_sum(args))
    except KeyboardInterrupt:  # the engine has stopped its workers by now
        print("interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{args.batches} micro-batches x {args.partitions} partitions x {args.records} ints "
            f"on {args.workers} workers x {args.cores} cores, group size {args.group_size}: "
            f"final sum {summary['final_sum']}, {summary['ms_per_batch']:.3f} ms per micro-batch"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
