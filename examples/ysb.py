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

As the original builds it, from a broker with the counts in Redis (a separate producer process,
examples/ysb_producer.py, publishes the events and keeps its own exact counts):

    python examples/ysb.py --source redis --redis redis://127.0.0.1:6379/0 --sink redis --check
    python examples/ysb.py --source kafka --kafka 127.0.0.1:9092 --redis redis://... --check

``--check`` recomputes every window's count in plain Python over the same events (or, from a
broker, compares the counts in Redis with the producer's) and counts the windows that differ.
The last line with ``--json`` is a JSON summary (from a broker also ``sink_rows``,
``duplicates``, ``missing``).

The events and the pipeline are in ``adrizzle_bench.ysb_workload`` (installed with adrizzle from
scripts/adrizzle_bench/), where the benchmarks run the same workload.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from _cli import group_size_arg

import adrizzle
from adrizzle_bench.ysb_broker import run_ysb_broker
from adrizzle_bench.ysb_workload import run_ysb


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    async with adrizzle.Engine.local(workers=args.workers, cores=args.cores) as engine:
        if args.source != "generator":
            return await run_ysb_broker(
                engine,
                source=args.source,
                redis_url=args.redis,
                kafka=args.kafka,
                sink=args.sink,
                seconds=args.seconds,
                rate=args.rate,
                window=args.window,
                partitions=args.partitions,
                group_size=args.group_size,
                batch_interval=args.batch_interval / 1000,
                check=args.check,
                seed=args.seed,
                lateness=args.lateness,
            )
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
    parser.add_argument(
        "--source",
        choices=["generator", "redis", "kafka"],
        default="generator",
        help="where events come from: the in-process generator (default), or a producer "
        "process publishing to Redis streams or a Kafka topic",
    )
    parser.add_argument(
        "--sink",
        choices=["redis", "driver"],
        default="redis",
        help="with a broker source: window counts written to Redis from the workers (default) "
        "or sent to the driver",
    )
    parser.add_argument("--redis", help="redis://host:port/db: the ad table and the counts")
    parser.add_argument("--kafka", help="host:port of the Kafka broker (--source kafka)")
    parser.add_argument(
        "--lateness",
        type=float,
        default=0.25,
        help="with a broker source: seconds an event may come behind the newest one seen "
        "before its window closes (partitions are read a little apart; default 0.25)",
    )
    args = parser.parse_args()
    if args.seconds <= 0 or args.rate < 1:
        parser.error("--seconds and --rate must be positive")
    if args.source != "generator" and not args.redis:
        parser.error(f"--source {args.source} needs --redis (the ad table and the counts)")
    if args.source == "kafka" and not args.kafka:
        parser.error("--source kafka needs --kafka host:port")
    summary = adrizzle.run(main_async(args))
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>22}: {value}")
    return 1 if summary.get("mismatches") else 0


if __name__ == "__main__":
    raise SystemExit(main())
