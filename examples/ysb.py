"""The Yahoo streaming benchmark (YSB) as an adrizzle stream.

100 campaigns x 10 ads. Ad events (JSON: user_id, page_id, ad_id, ad_type, event_type in
{view, click, purchase}, event_time in ms, ip) are generated deterministically at ``--rate``
events per second of wall-clock time, like a Kafka topic read from an offset: micro-batch ``b``
of partition ``p`` holds the events of the ``b``-th batch interval that fall in partition ``p``,
and the slot reads it once that interval is over. The pipeline: parse -> keep views -> project
(ad_id, event_time) -> join ad to campaign (a broadcast table) -> count per campaign per 10 s
event-time window. A window's count is emitted once the watermark (largest event time seen)
passes the window's end; its latency is the time that count reaches the driver minus the
window's end.

    python examples/ysb.py --seconds 30 --rate 20000 --group-size auto
    python examples/ysb.py --seconds 12 --rate 5000 --group-size 10 --check --json

``--check`` recomputes every window's count in plain Python over the same events and counts the
windows that differ. The last line with ``--json`` is a JSON summary.

The events and the pipeline are in ``adrizzle_bench.ysb_workload`` (installed with adrizzle from
scripts/adrizzle_bench/), where the benchmarks run the same workload.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from _cli import group_size_arg

import adrizzle
from adrizzle_bench.ysb_workload import run_ysb


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    async with adrizzle.Engine.local(workers=args.workers, cores=args.cores) as engine:
        return await run_ysb(
            engine,
            seconds=args.seconds,
            rate=args.rate,
            group_size=args.group_size,
            batch_interval=args.batch_interval / 1000,
            window=args.window,
            partitions=args.partitions,
            seed=args.seed,
            check=args.check,
            align=args.align,
            progress=not args.json,
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="event time to generate")
    parser.add_argument("--rate", type=int, default=10_000, help="events per second")
    parser.add_argument("--group-size", type=group_size_arg, default="auto", help="G or auto")
    parser.add_argument("--batch-interval", type=int, default=10, help="milliseconds")
    parser.add_argument("--window", type=float, default=10.0, help="window length, seconds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--align", action="store_true", help="start on a window boundary")
    parser.add_argument("--check", action="store_true", help="verify every window count")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rate < 1:
        parser.error("--seconds and --rate must be positive")
    summary = adrizzle.run(main_async(args))
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>22}: {value}")
    return 1 if summary["mismatches"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
