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
from collections.abc import Callable

import adrizzle


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an int >= ``minimum``, with a clear error otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def group_size_arg(text: str) -> int | str:
    """An argparse type: ``auto`` or an int >= 1."""
    return "auto" if text == "auto" else at_least(1)(text)


def batch_partition(batch: int, partitions: int, records: int, partition: int) -> range:
    """The ints of one partition of one micro-batch (computed on the slot)."""
    start = (batch * partitions + partition) * records
    return range(start, start + records)


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
                print(
                    f"batch {job.index:5d}: sum {batch_sum:>14d}  running total {total:>18d}  "
                    f"{(now - last) * 1e3:8.3f} ms"
                )
            last = now
        elapsed = time.perf_counter() - started
    return {
        "mode": "jobs",
        "batches": n,
        "group_size": args.group_size,
        "workers": args.workers,
        "cores": args.cores,
        "partitions": p,
        "records": k,
        "ms_per_batch": elapsed / n * 1e3,
        "batches_completed": expected_index,
        "final_sum": total,
    }


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
                print(
                    f"batch {update.batch:5d}: sum {batch_sum:>14d}  running total {total:>18d}  "
                    f"{(now - last) * 1e3:8.3f} ms"
                )
            last = now
        elapsed = time.perf_counter() - started
    return {
        "mode": "stream",
        "batches": n,
        "group_size": args.group_size,
        "workers": args.workers,
        "cores": args.cores,
        "partitions": p,
        "records": k,
        "ms_per_batch": elapsed / n * 1e3,
        "batches_completed": delivered,
        "final_sum": total,
        "group_sizes": {str(size): groups for size, groups in run.group_sizes().items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("batches", type=at_least(1), help="number of micro-batches N")
    parser.add_argument(
        "group_size", type=group_size_arg, help="micro-batches per group G, or auto"
    )
    parser.add_argument("--workers", type=at_least(1), default=2, help="local worker processes")
    parser.add_argument("--cores", type=at_least(1), default=1, help="slot processes per worker")
    parser.add_argument("--partitions", type=at_least(1), default=4, help="partitions P")
    parser.add_argument("--records", type=at_least(0), default=1000, help="ints per partition K")
    parser.add_argument("--warmup", type=at_least(0), default=1, help="untimed micro-batches")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole run")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary")
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
