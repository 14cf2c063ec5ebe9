"""Drizzle's single-stage micro-benchmark: N micro-batches, each one sum over a cached dataset.

A dataset of ``--partitions`` P partitions of ``--records`` K ints (partition p holds
``range(p*K, (p+1)*K)``) is shipped to the workers once and cached there. Each micro-batch is
one job that sums every partition; ``engine.run_jobs`` runs the N jobs in groups of
``group_size`` micro-batches (one launch and one acknowledgement per worker per group;
``group_size=1`` is the BSP baseline that coordinates every micro-batch).

    python examples/single_stage.py 100 10               # 100 micro-batches in groups of 10
    python examples/single_stage.py 200 1 --workers 2    # the BSP baseline
    python examples/single_stage.py 100 10 --json        # last line: JSON summary

``ms_per_batch`` is the wall time of the N micro-batches divided by N. It leaves out a warm-up
(``--warmup`` micro-batches, default 1) that ships the data and loads the function into the
slots. ``result`` is the sum over all N micro-batches: N * sum(range(P*K)).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _cli import at_least, example_parser

import adrizzle
from adrizzle.progress import job_progress


async def single_stage(args: argparse.Namespace) -> dict[str, object]:
    n, p, k = args.batches, args.partitions, args.records
    async with adrizzle.Engine.local(workers=args.workers, cores=args.cores) as engine:
        data = engine.parallelize(range(p * k), partitions=p).cache()
        if args.warmup:
            await engine.run_jobs([data] * args.warmup, sum, timeout=args.timeout)
        await engine.wait_settled(5.0)  # the last group's acks may trail its results
        before = engine.statistics()
        # A bar on stderr while the run goes (not with --json, nor when stderr is no terminal).
        async with job_progress(engine, n, f"G={args.group_size}", quiet=args.json):
            started = time.perf_counter()
            per_job = await engine.run_jobs(
                [data] * n, sum, group_size=args.group_size, timeout=args.timeout
            )
            elapsed = time.perf_counter() - started
        await engine.wait_settled(5.0)  # the last group's acks may trail its results
        after = engine.statistics()

    def delta(direction: str, kind: str) -> int:
        return int(after[direction].get(kind, 0) - before[direction].get(kind, 0))

    return {
        "batches": n,
        "group_size": args.group_size,
        "workers": args.workers,
        "cores": args.cores,
        "partitions": p,
        "records": k,
        "ms_per_batch": elapsed / n * 1e3,
        # Every micro-batch sums the same cached data, so all of them must agree.
        "distinct_batch_results": len({tuple(values) for values in per_job}),
        "partition_sums": list(per_job[0]),
        "result": sum(sum(values) for values in per_job),
        # Coordination is per group: about workers/G of each per micro-batch.
        "launch_frames_per_batch": delta("frames_sent", "launch_group") / n,
        "ack_frames_per_batch": delta("frames_received", "group_done") / n,
    }


def main() -> int:
    parser = example_parser(__doc__, at_least(1), "micro-batches per group G")
    args = parser.parse_args()
    try:
        summary = adrizzle.run(single_stage(args))
    except KeyboardInterrupt:  # the engine has stopped its workers by now
        print("interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{args.batches} micro-batches x {args.partitions} partitions x {args.records} ints "
            f"on {args.workers} workers x {args.cores} cores, group size {args.group_size}"
        )
        print(f"partition sums of each micro-batch: {summary['partition_sums']}")
        print(f"sum over all micro-batches: {summary['result']}")
        print(
            f"{summary['ms_per_batch']:.3f} ms per micro-batch; per micro-batch "
            f"{summary['launch_frames_per_batch']:.3f} launch and "
            f"{summary['ack_frames_per_batch']:.3f} ack frames"
        )
    return 0 if summary["distinct_batch_results"] == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
