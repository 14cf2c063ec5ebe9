"""``bench.py connectors``: broker -> counts -> store, exactly once, at what rate and latency.

    python scripts/bench.py connectors [--quick] [--json]

Redis Streams (2 partitions) or Kafka (Tansu, 2 partitions) -> per micro-batch, per key: the
count and the oldest event's production time (``reduce_by_key``) -> ``PostgresSink`` (a row
per key and batch; the table stamps each row with its commit time) or ``RedisSink`` (a hash per
key; the write time is recorded), on 2 local workers, 10 ms batches, G = 1, 10 and auto. A
separate producer process writes at each rate of a ladder for a few seconds; a rate is
*sustained* when every event was committed exactly once within the run's grace time and the
p99 event-to-commit latency (commit time minus the oldest event of its row: an upper bound of
its events') is under 100 ms. The servers are started here (adrizzle_bench.servers).

Also the offset log's cost: appending a batch's ranges, in memory and with a directory (a
writer thread fsyncs what accumulated), and the p50 event-to-commit latency with and without
``checkpoint_dir`` at one rate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import adrizzle
from adrizzle_bench import harness
from adrizzle_bench.servers import kafka_broker, postgres_server, redis_server

TARGET_P99_MS = 100.0
PARTITIONS = 2


def parse_redis(record: tuple[str, dict[str, str]]) -> tuple[str, tuple[int, float]]:
    event = json.loads(record[1]["event"])
    return (event["key"], (1, event["ts"]))


def parse_kafka(record: Any) -> tuple[str, tuple[int, float]]:
    event = json.loads(record.value)
    return (event["key"], (1, event["ts"]))


def merge(a: tuple[int, float], b: tuple[int, float]) -> tuple[int, float]:
    return (a[0] + b[0], min(a[1], b[1]))


def as_row(kv: tuple[str, tuple[int, float]]) -> tuple[str, int, float]:
    return (kv[0], kv[1][0], kv[1][1])


def redis_write(prefix: str, pipe: Any, row: tuple[str, int, float]) -> None:
    key, n, oldest = row
    pipe.hincrby(f"{prefix}:totals", key, n)
    pipe.rpush(f"{prefix}:latency", repr(time.time() - oldest))


@contextlib.contextmanager
def servers(kafka: bool) -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        found = {
            "redis": stack.enter_context(redis_server()).url,
            "postgres": stack.enter_context(postgres_server()).dsn,
        }
        if kafka:
            found["kafka"] = stack.enter_context(kafka_broker()).bootstrap
        yield found


async def one_run(
    srv: dict[str, str], source: str, sink: str, group_size: Any, rate: int, seconds: float,
    checkpoint_dir: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Produce at ``rate`` for ``seconds`` while the stream runs; exactness and latency."""
    from adrizzle.connectors.postgres import PostgresSink
    from adrizzle.connectors.redis import RedisSink, RedisStreamSource

    tag = f"c{os.getpid()}x{time.monotonic_ns() % 10**12}"
    if source == "redis":
        connector: Any = RedisStreamSource(srv["redis"], [f"{tag}-{p}" for p in range(PARTITIONS)])
        parse = parse_redis
        target = srv["redis"]
    else:
        from confluent_kafka.admin import AdminClient, NewTopic

        from adrizzle.connectors.kafka import KafkaSource

        admin = AdminClient({"bootstrap.servers": srv["kafka"]})
        admin.create_topics([NewTopic(tag, PARTITIONS, 1)])[tag].result(30)
        connector = KafkaSource(srv["kafka"], tag)
        parse = parse_kafka
        target = f"kafka://{srv['kafka']}"
    if sink == "postgres":
        import psycopg

        with psycopg.connect(srv["postgres"], autocommit=True) as db:
            db.execute(
                f"CREATE TABLE {tag} (key text, n bigint, oldest double precision, "
                "committed double precision DEFAULT extract(epoch FROM clock_timestamp()))"
            )
        out: Any = PostgresSink(srv["postgres"], tag, ["key", "n", "oldest"])
    else:
        import functools

        out = RedisSink(srv["redis"], apply=functools.partial(redis_write, tag))
    settings = {} if checkpoint_dir is None else {"checkpoint_dir": checkpoint_dir}
    async with adrizzle.Engine.local(workers=2, cores=1, **settings) as engine:
        stream = (
            engine.stream(connector, batch_interval=0.01, name=tag)
            .map(parse)
            .reduce_by_key(merge, partitions=PARTITIONS)
            .map(as_row)
            .sink(out)
        )
        producer = subprocess.Popen(  # noqa: ASYNC220 - only forks; we never wait on it here
            [sys.executable, "-m", "adrizzle_bench.connector_producer", "--target", target,
             "--name", tag, "--partitions", str(PARTITIONS), "--rate", str(rate),
             "--seconds", str(seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        grace_until: float | None = None
        async for batch in stream.run(group_size=group_size, timeout=60):
            idle = batch.positions is not None and all(s == e for s, e in batch.positions.values())
            if producer.poll() is not None:
                grace_until = grace_until or time.monotonic() + 2.0
                if idle or time.monotonic() > grace_until:
                    break
        produced_out, err = producer.communicate(timeout=60)
        if producer.returncode:
            raise RuntimeError(f"the producer failed: {err[-1500:]}")
        await engine.wait_settled()
        groups = engine.statistics()["adaptive_groups_per_size"]
    produced = json.loads(produced_out.strip().splitlines()[-1])
    committed, latencies = _read(srv, sink, tag)
    p99 = harness.percentile_or_none(latencies, 99)
    p50 = harness.percentile_or_none(latencies, 50)
    exact = committed == produced["events"]
    return {
        "source": source,
        "sink": sink,
        "group_size": group_size if isinstance(group_size, int) else "auto",
        "rate": rate,
        "achieved_rate": round(produced["rate"]),
        "events": produced["events"],
        "committed": committed,
        "exact": exact,
        "p50_ms": None if p50 is None else round(p50 * 1e3, 2),
        "p99_ms": None if p99 is None else round(p99 * 1e3, 2),
        "sustained": exact and p99 is not None and p99 * 1e3 < TARGET_P99_MS,
        "group_sizes": groups,
    }


def _read(srv: dict[str, str], sink: str, tag: str) -> tuple[int, list[float]]:
    if sink == "postgres":
        import psycopg

        with psycopg.connect(srv["postgres"]) as db:
            rows = db.execute(f"SELECT n, committed - oldest FROM {tag}").fetchall()
        return sum(int(n) for n, _ in rows), [float(lat) for _, lat in rows]
    import redis

    client = redis.Redis.from_url(srv["redis"], decode_responses=True)
    totals = client.hgetall(f"{tag}:totals")
    latencies = [float(x) for x in client.lrange(f"{tag}:latency", 0, -1)]
    return sum(int(v) for v in totals.values()), latencies


def offset_log_cost(appends: int) -> dict[str, float]:
    """µs per OffsetLog.append (+ drain), in memory and with a directory (fsync'd by the
    writer thread; the append itself does not wait for it)."""
    from adrizzle.driver.offset_log import OffsetLog

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, directory in (("memory", None), ("directory", Path(tmp))):
            log = OffsetLog("bench", directory)
            t = time.perf_counter()
            for b in range(appends):
                log.append(b, {0: (f"{b}-0", f"{b + 1}-0"), 1: (f"{b}-1", f"{b + 1}-1")})
                log.drain()
            out[label] = (time.perf_counter() - t) / appends * 1e6
            log.close()
    return out


async def bench_connectors(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    seconds = 3.0 if quick else 5.0
    ladder = [1000, 4000] if quick else [2000, 5000, 10_000, 20_000, 40_000]
    sizes: list[Any] = [10] if quick else [1, 10, "auto"]
    configs = [("redis", "postgres"), ("redis", "redis"), ("kafka", "postgres")]
    if quick:
        configs = configs[:1]
    rows: list[dict[str, Any]] = []
    best: dict[tuple[str, str, str], int] = {}
    with servers(kafka=any(src == "kafka" for src, _ in configs)) as srv:
        for source, sink in configs:
            for g in sizes:
                label = (source, sink, str(g))
                for rate in ladder:
                    row = await one_run(srv, source, sink, g, rate, seconds)
                    rows.append(row)
                    if row["sustained"]:
                        best[label] = rate
                    else:
                        break  # the next rung would not be sustained either
        with tempfile.TemporaryDirectory() as ckpt:
            cost_rate = ladder[0]
            plain = await one_run(srv, "redis", "postgres", 10, cost_rate, seconds)
            logged = await one_run(srv, "redis", "postgres", 10, cost_rate, seconds, ckpt)
    appends = offset_log_cost(2000 if quick else 20_000)
    lines = [
        f"### connectors: broker -> per-batch counts -> store, 2 local workers, {PARTITIONS} "
        f"partitions, 10 ms batches, {seconds:g} s per rate, p99 event-to-commit < "
        f"{TARGET_P99_MS:g} ms",
        "",
        "| source | sink | group size | rate ev/s | achieved | committed / produced | exact "
        "| p50 ms | p99 ms | sustained |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['source']} | {r['sink']} | {r['group_size']} | {r['rate']} | "
            f"{r['achieved_rate']} | {r['committed']}/{r['events']} | "
            f"{'yes' if r['exact'] else 'NO'} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{'yes' if r['sustained'] else 'no'} |"
        )
    lines += ["", "| source | sink | group size | highest sustained ev/s |", "|---|---|---|---:|"]
    for source, sink in configs:
        for g in sizes:
            top = best.get((source, sink, str(g)))
            lines.append(f"| {source} | {sink} | {g} | {top if top else 'none of the ladder'} |")
    lines += [
        "",
        f"Offset log: {appends['memory']:.1f} µs per append in memory, "
        f"{appends['directory']:.1f} µs with a directory (fsync on the writer thread). "
        f"At {cost_rate} ev/s, G=10, Redis -> Postgres: p50/p99 event-to-commit "
        f"{plain['p50_ms']}/{plain['p99_ms']} ms in memory vs {logged['p50_ms']}/"
        f"{logged['p99_ms']} ms with checkpoint_dir (the sinks wait for the log's fsync).",
    ]
    harness.save_section(harness.results_dir(args), "connectors", lines)
    return {
        "name": "connectors",
        "rows": rows,
        "highest_sustained": {"/".join(k): v for k, v in best.items()},
        "offset_log_us_per_append": appends,
        "checkpoint_dir_effect": {"memory": plain, "directory": logged},
        "lines": lines,
    }
