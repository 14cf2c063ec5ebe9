"""A producer process for the connector benchmark: events ``{"key", "ts"}`` at a fixed rate to
Redis streams ``<name>-<p>`` or a Kafka topic, then a JSON line with how many it wrote.

    python -m adrizzle_bench.connector_producer --target redis://... --name s --partitions 2 \\
        --rate 5000 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True, help="redis://host:port/db or kafka://host:port")
    p.add_argument("--name", required=True, help="stream prefix or topic")
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--rate", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--keys", type=int, default=16)
    args = p.parse_args()
    total = int(args.rate * args.seconds)
    tick = 0.005
    per_tick = max(1, round(args.rate * tick))
    if args.target.startswith("redis://"):
        import redis

        client = redis.Redis.from_url(args.target)

        def send(first: int, n: int) -> None:
            now = time.time()
            with client.pipeline(transaction=False) as pipe:
                for i in range(first, first + n):
                    event = json.dumps({"key": f"k{i % args.keys}", "ts": now})
                    pipe.xadd(f"{args.name}-{i % args.partitions}", {"event": event})
                pipe.execute()

        def finish() -> None:
            pass
    else:
        from confluent_kafka import Producer

        producer = Producer(
            {"bootstrap.servers": args.target.removeprefix("kafka://"), "linger.ms": 1}
        )

        def send(first: int, n: int) -> None:
            now = time.time()
            for i in range(first, first + n):
                event = json.dumps({"key": f"k{i % args.keys}", "ts": now}).encode()
                producer.produce(args.name, value=event, partition=i % args.partitions)
            producer.poll(0)

        def finish() -> None:
            producer.flush(30)

    start = time.monotonic()
    sent = 0
    while sent < total:
        due = start + sent / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        n = min(per_tick, total - sent)
        send(sent, n)
        sent += n
    finish()
    elapsed = time.monotonic() - start
    print(json.dumps({"events": sent, "seconds": elapsed, "rate": sent / elapsed}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
