"""The Yahoo streaming benchmark as the original builds it: events from a broker, the ad table
and the window counts in Redis (``examples/ysb.py --source redis|kafka``).

A separate producer process (``examples/ysb_producer.py``) loads ``ad_to_campaign`` into Redis
and publishes JSON events at ``rate`` to Redis streams ``<stream>-<p>`` or a Kafka topic, then
writes its own exact view counts per (campaign, window). The stream reads the broker through
a connector (offsets logged: exactly once), keeps views, joins each ad to its campaign with the
table loaded from Redis (once per slot process), counts views per campaign per event-time
window and writes each window's count, once final, to Redis from the workers
(``RedisSink``): ``HSET <run>:counts:<campaign> <window_start_ms> <views>``, with the time it
was written in ``<run>:updated:<campaign>`` and a write counter in ``<run>:writes:<campaign>``
(more than one write of a window is a duplicate; ``<run>`` names this run). ``--sink
driver`` sends the counts to the driver instead. ``check`` compares Redis with the
producer's counts: ``mismatches``, ``missing``, ``duplicates``, ``sink_rows``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import adrizzle
from adrizzle_bench.harness import percentile_or_none
from adrizzle_bench.ysb_workload import event_seconds, is_view, project

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_TABLES: dict[str, dict[str, str]] = {}  # per slot process: redis url -> ad_to_campaign


def redis_event(record: tuple[str, dict[str, str]]) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(record[1]["event"])
    return event


def kafka_event(record: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(record.value)
    return event


def join_from_redis(url: str, ad_times: Any) -> Any:
    """(ad_id, event_time ms) -> (campaign_id, event_time s), with the ad table read from
    Redis once per slot process (the original keeps it in Redis too); read again when an ad
    is not in it (the producer loads the table as it starts)."""
    table = _TABLES.get(url) or _load_table(url)
    out = []
    for ad, t in ad_times:
        campaign = table.get(ad)
        if campaign is None:
            table = _load_table(url)
            campaign = table[ad]
        out.append((campaign, t / 1000))
    return out


def _load_table(url: str) -> dict[str, str]:
    import redis

    table = dict(redis.Redis.from_url(url, decode_responses=True).hgetall("ad_to_campaign"))
    if table:
        _TABLES[url] = table
    return table


def write_window(prefix: str, pipe: Any, record: Any) -> None:
    """One final window count into Redis (a RedisSink ``apply``), under this run's prefix."""
    start_ms = str(round(record.start * 1000))
    key = record.key
    pipe.hset(f"{prefix}:counts:{key}", start_ms, record.value)
    pipe.hset(f"{prefix}:updated:{key}", start_ms, repr(time.time()))
    pipe.hincrby(f"{prefix}:writes:{key}", start_ms, 1)


def start_producer(args: list[str], counts: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(EXAMPLES / "ysb_producer.py"), *args, "--counts", str(counts)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def run_ysb_broker(
    engine: adrizzle.Engine,
    *,
    source: str,
    redis_url: str,
    kafka: str | None = None,
    sink: str = "redis",
    seconds: float = 10.0,
    rate: int = 10_000,
    window: float = 10.0,
    partitions: int = 4,
    group_size: Any = "auto",
    batch_interval: float = 0.01,
    check: bool = False,
    seed: int = 7,
    lateness: float = 0.25,
) -> dict[str, Any]:
    """Start the producer, run the stream until the producer is done and the last window that
    can close has closed, then summarize (and with ``check`` compare with the producer)."""
    from adrizzle.connectors.redis import RedisSink, RedisStreamSource

    tag = f"ysb-{os.getpid()}-{int(time.time() * 1000)}"
    workdir = Path(tempfile.mkdtemp(prefix="ysb-"))
    counts_file = workdir / "counts.json"
    target = redis_url if source == "redis" else f"kafka://{kafka}"
    producer_args = [
        "--target", target, "--rate", str(rate), "--seconds", str(seconds),
        "--partitions", str(partitions), "--window", str(window), "--seed", str(seed),
        "--stream" if source == "redis" else "--topic", tag, "--table-redis", redis_url,
    ]  # fmt: skip
    producer = start_producer(producer_args, counts_file)
    if source == "redis":
        connector: Any = RedisStreamSource(redis_url, [f"{tag}-{p}" for p in range(partitions)])
        parse = redis_event
    else:
        from adrizzle.connectors.kafka import KafkaSource

        assert kafka is not None
        await _wait_for_topic(kafka, tag)
        connector = KafkaSource(kafka, tag)
        parse = kafka_event
    stream = engine.stream(connector, batch_interval=batch_interval, name=tag)
    counts = (
        stream.map(parse)
        .filter(is_view)
        .map(project)
        .map_partitions(functools.partial(join_from_redis, redis_url))
        # A broker's partitions are read a little apart (a read may return a prefix of what
        # is there): allow events this late before a window closes.
        .window_count(window, event_time=event_seconds, lateness=lateness)
    )
    found: dict[tuple[str, int], int] = {}
    duplicates_at_driver = 0
    latency: list[float] = []
    if sink == "redis":
        counts = counts.sink(RedisSink(redis_url, apply=functools.partial(write_window, tag)))
    started = time.time()
    idle = 0
    async for batch in counts.run(group_size=group_size, timeout=60.0):
        for r in batch.values:
            key = (r.key, round(r.start * 1000))
            duplicates_at_driver += key in found
            found[key] = r.value
            latency.append(batch.done_at - r.end)
        idle = idle + 1 if _all_read(batch) else 0
        # The producer is done and the source gave nothing for a while (a read may return
        # any prefix of what is there: one empty batch is not the end).
        if producer.poll() is not None and idle >= max(20, round(0.3 / batch_interval)):
            break
    elapsed = time.time() - started
    _out, err = producer.communicate(timeout=30)
    if producer.returncode:
        raise RuntimeError(f"the YSB producer failed: {err[-2000:]}")
    summary: dict[str, Any] = {
        "source": source,
        "sink": sink,
        "seconds": seconds,
        "rate": rate,
        "window_s": window,
        "lateness_s": lateness,
        "events_per_s": None,
        "group_size": group_size if isinstance(group_size, int) else "auto",
    }
    produced = json.loads(counts_file.read_text())
    summary["events"] = produced["events"]
    summary["events_per_s"] = round(produced["events"] / elapsed, 1) if elapsed > 0 else None
    if sink == "redis":
        found, latency, duplicates = _read_redis(redis_url, tag, window)
    else:
        duplicates = duplicates_at_driver
    summary["sink_rows"] = len(found)
    summary["duplicates"] = duplicates
    summary["latency_p50_ms"] = _ms(percentile_or_none(latency, 50))
    summary["latency_p99_ms"] = _ms(percentile_or_none(latency, 99))
    if check:
        summary.update(_check(produced, found, duplicates, lateness))
    return summary


def _all_read(batch: adrizzle.StreamBatch) -> bool:
    """A micro-batch that read nothing from any partition."""
    return batch.positions is not None and all(s == e for s, e in batch.positions.values())


def _read_redis(
    url: str, prefix: str, window: float
) -> tuple[dict[tuple[str, int], int], list[float], int]:
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    found: dict[tuple[str, int], int] = {}
    latency: list[float] = []
    duplicates = 0
    for key in client.scan_iter(f"{prefix}:counts:*"):
        campaign = key.removeprefix(f"{prefix}:counts:")
        updated = client.hgetall(f"{prefix}:updated:{campaign}")
        writes = client.hgetall(f"{prefix}:writes:{campaign}")
        for start_ms, value in client.hgetall(key).items():
            found[(campaign, int(start_ms))] = int(value)
            latency.append(float(updated[start_ms]) - (int(start_ms) / 1000 + window))
            duplicates += int(writes.get(start_ms, 1)) > 1
    return found, latency, duplicates


def _check(
    produced: dict[str, Any], found: dict[tuple[str, int], int], duplicates: int, lateness: float
) -> dict[str, Any]:
    """Every window that must have closed (its end plus the lateness at or before the last
    event's time, of which the last window's start is a lower bound) must be in the sink with
    the producer's exact count; later windows may still be open and are left out of both."""
    window_ms = int(produced["window_ms"])
    expected = {(c, int(w)): int(n) for c, w, n in produced["counts"]}
    last_event_ms = max((w for _c, w in expected), default=0)
    closes = window_ms + round(lateness * 1000)
    closed = {k: n for k, n in expected.items() if k[1] + closes <= last_event_ms}
    missing = sum(1 for k in closed if k not in found)
    wrong = sum(1 for k, n in closed.items() if k in found and found[k] != n)
    extra = sum(1 for k in found if k not in expected)  # a window no event of which was a view
    return {
        "windows_checked": len(closed),
        "missing": missing,
        "mismatches": wrong + missing + extra + duplicates,
    }


async def _wait_for_topic(bootstrap: str, topic: str, timeout: float = 30.0) -> None:
    """The producer creates the Kafka topic; the source needs it to count its partitions."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = await asyncio.to_thread(admin.list_topics, timeout=5)
        if topic in listed.topics:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the YSB producer did not create topic {topic!r} within {timeout:g} s")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)
