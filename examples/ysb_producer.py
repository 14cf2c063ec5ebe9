"""A Yahoo streaming benchmark producer: publishes YSB ad events to Redis streams or a Kafka
topic at a fixed rate, as a separate process, for ``examples/ysb.py --source redis|kafka``.

    python examples/ysb_producer.py --target redis://127.0.0.1:6379/0 --rate 20000 \\
        --seconds 30 --partitions 4 --counts counts.json
    python examples/ysb_producer.py --target kafka://127.0.0.1:9092 --topic ysb ...

What it does, like the original benchmark's setup and generator:

- loads the ads -> campaigns table into Redis: ``HSET ad_to_campaign <ad_id> <campaign_id>``
  and ``SADD campaigns <campaign_id>`` (into the ``--target`` Redis, or ``--table-redis`` for a
  Kafka target; ``--table FILE`` also writes it as JSON);
- publishes events, JSON objects in examples/ysb.py's format (user_id, page_id, ad_id,
  ad_type, event_type in view/click/purchase, event_time in epoch ms, ip): event ``i`` is due
  ``i / rate`` s after the start, its event_time is that instant, and it goes to partition
  ``i % partitions`` (Redis: ``XADD <stream>-<p> * event <json>``; Kafka: the value, in topic
  partition ``p``, created with that many partitions if missing);
- at the end writes its own exact count of 'view' events per (campaign, ``--window`` s window)
  to ``--counts FILE`` (JSON: ``{"window_ms", "events", "views", "counts": [[campaign,
  window_start_ms, views], ...]}``) for a ``--check``.

The last line printed is a JSON summary (events sent, seconds taken, achieved rate).
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
import urllib.parse
import uuid
from typing import Any

AD_TYPES = ("banner", "modal", "sponsored-search", "mail", "mobile")
EVENT_TYPES = ("view", "click", "purchase")
POOL = 100  # distinct users, pages and ips
TICK = 0.005  # s between sends


def ids(rng: random.Random, n: int) -> list[str]:
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def make_table(seed: int, campaigns: int, ads_per_campaign: int) -> dict[str, str]:
    """ad_id -> campaign_id, ``ads_per_campaign`` consecutive ads per campaign."""
    rng = random.Random(seed)
    camps = ids(rng, campaigns)
    ads = ids(rng, campaigns * ads_per_campaign)
    return {ad: camps[i // ads_per_campaign] for i, ad in enumerate(ads)}


class Events:
    """The event stream: ``event(i)`` is deterministic given the seed and the start."""

    def __init__(self, seed: int, table: dict[str, str], t0_ms: int, rate: int) -> None:
        self.rng = random.Random(seed + 1)
        self.ads = list(table)
        self.users = ids(self.rng, POOL)
        self.pages = ids(self.rng, POOL)
        self.ips = [
            ".".join(str(self.rng.randrange(1, 255)) for _ in range(4)) for _ in range(POOL)
        ]
        self.t0_ms = t0_ms
        self.rate = rate

    def event(self, i: int) -> dict[str, Any]:
        rng = self.rng
        return {
            "user_id": rng.choice(self.users),
            "page_id": rng.choice(self.pages),
            "ad_id": rng.choice(self.ads),
            "ad_type": rng.choice(AD_TYPES),
            "event_type": rng.choice(EVENT_TYPES),
            "event_time": self.t0_ms + i * 1000 // self.rate,
            "ip": rng.choice(self.ips),
        }


class RedisTarget:
    def __init__(self, url: str, stream: str, partitions: int) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.streams = [f"{stream}-{p}" for p in range(partitions)]

    def send(self, batch: list[tuple[int, str]]) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            for p, line in batch:
                pipe.xadd(self.streams[p], {"event": line})
            pipe.execute()

    def finish(self) -> None:
        self.client.close()


class KafkaTarget:
    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": bootstrap})
        if topic not in admin.list_topics(timeout=10).topics:
            for future in admin.create_topics(
                [NewTopic(topic, num_partitions=partitions)]
            ).values():
                future.result(10)
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})

    def send(self, batch: list[tuple[int, str]]) -> None:
        for p, line in batch:
            while True:
                try:
                    self.producer.produce(self.topic, value=line.encode(), partition=p)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    self.producer.poll(0.05)
        self.producer.poll(0)

    def finish(self) -> None:
        left = self.producer.flush(30)
        if left:
            raise SystemExit(f"{left} events were not delivered")


def load_table(url: str, table: dict[str, str]) -> None:
    import redis

    client = redis.Redis.from_url(url)
    with client.pipeline(transaction=False) as pipe:
        pipe.hset("ad_to_campaign", mapping=table)
        pipe.sadd("campaigns", *sorted(set(table.values())))
        pipe.execute()
    client.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    target_url = urllib.parse.urlsplit(args.target)
    table = make_table(args.seed, args.campaigns, args.ads_per_campaign)
    if target_url.scheme in ("redis", "rediss", "unix"):
        load_table(args.target, table)
        sink: RedisTarget | KafkaTarget = RedisTarget(args.target, args.stream, args.partitions)
    elif target_url.scheme == "kafka":
        if args.table_redis:
            load_table(args.table_redis, table)
        sink = KafkaTarget(target_url.netloc, args.topic, args.partitions)
    else:
        raise SystemExit(f"--target must be redis://... or kafka://host:port, not {args.target}")
    if args.table:
        with open(args.table, "w") as out:
            json.dump(table, out)
    total = int(args.rate * args.seconds)
    start = time.time() + 0.05
    events = Events(args.seed, table, round(start * 1000), args.rate)
    window_ms = round(args.window * 1000)
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    sent = 0
    while sent < total:
        due = min(total, int((time.time() - start) * args.rate) + 1)
        batch = []
        for i in range(sent, max(sent, due)):
            event = events.event(i)
            if event["event_type"] == "view":
                window = event["event_time"] // window_ms * window_ms
                counts[(table[event["ad_id"]], window)] += 1
            batch.append((i % args.partitions, json.dumps(event)))
        if batch:
            sink.send(batch)
            sent += len(batch)
        if sent < total:
            time.sleep(TICK)
    sink.finish()
    elapsed = time.time() - start
    if args.counts:
        with open(args.counts, "w") as out:
            rows = sorted([c, w, n] for (c, w), n in counts.items())
            json.dump(
                {
                    "window_ms": window_ms,
                    "events": sent,
                    "views": sum(counts.values()),
                    "counts": rows,
                },
                out,
            )
    return {"events": sent, "seconds": round(elapsed, 3), "events_per_s": round(sent / elapsed)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", required=True, help="redis://host:port/db or kafka://host:port")
    parser.add_argument("--rate", type=int, default=10_000, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--campaigns", type=int, default=100)
    parser.add_argument("--ads-per-campaign", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--stream", default="ysb", help="Redis streams <stream>-<partition>")
    parser.add_argument("--topic", default="ysb", help="Kafka topic")
    parser.add_argument("--window", type=float, default=10.0, help="count window, seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--counts", help="write the exact view counts here (JSON)")
    parser.add_argument("--table", help="also write the ad -> campaign table here (JSON)")
    parser.add_argument("--table-redis", help="Redis for the table when the target is Kafka")
    args = parser.parse_args()
    if args.rate < 1 or args.seconds <= 0 or args.partitions < 1 or args.campaigns < 1:
        parser.error("--rate, --seconds, --partitions and --campaigns must be positive")
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
