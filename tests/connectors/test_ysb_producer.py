"""examples/ysb_producer.py as a process against real Redis and Tansu: the events read back with
the connectors give exactly the counts it wrote."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from adrizzle.connectors.kafka import KafkaSource
from adrizzle.connectors.redis import RedisStreamSource

pytestmark = pytest.mark.timeout(120)
PRODUCER = Path(__file__).resolve().parents[2] / "examples" / "ysb_producer.py"


def produce(tmp_path: Path, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    counts = tmp_path / "counts.json"
    table = tmp_path / "table.json"
    cmd = [sys.executable, str(PRODUCER), *args, "--rate", "3000", "--seconds", "1"]
    cmd += ["--campaigns", "5", "--ads-per-campaign", "3", "--partitions", "3", "--window", "0.2"]
    cmd += ["--counts", str(counts), "--table", str(table)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["events"] == 3000
    return json.loads(counts.read_text()), json.loads(table.read_text())


def recount(events: list[dict[str, Any]], table: dict[str, str], window_ms: int) -> list[Any]:
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    for e in events:
        if e["event_type"] == "view":
            counts[(table[e["ad_id"]], e["event_time"] // window_ms * window_ms)] += 1
    return sorted([c, w, n] for (c, w), n in counts.items())


def test_redis_target(tmp_path: Path, redis_url: str) -> None:
    stream = f"ysb-{uuid.uuid4().hex[:8]}"
    expected, table = produce(tmp_path, "--target", redis_url, "--stream", stream)
    assert len(set(table.values())) == 5
    assert len(table) == 15
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.hgetall("ad_to_campaign") == table
    assert client.smembers("campaigns") == set(table.values())
    client.close()
    source = RedisStreamSource(redis_url, [f"{stream}-{p}" for p in range(3)])
    events = []
    for p in range(source.partitions()):
        reader = source.reader(p)
        records, _ = reader.read(reader.initial(), None, None)
        assert len(records) == 1000
        events += [json.loads(fields["event"]) for _id, fields in records]
        reader.close()
    assert set(events[0]) == {
        "user_id", "page_id", "ad_id", "ad_type", "event_type", "event_time", "ip",
    }  # fmt: skip
    assert expected["events"] == 3000
    assert recount(events, table, expected["window_ms"]) == expected["counts"]
    assert sum(n for _c, _w, n in expected["counts"]) == expected["views"] > 0


def test_kafka_target(tmp_path: Path, kafka_bootstrap: str) -> None:
    topic = f"ysb-{uuid.uuid4().hex[:8]}"
    expected, table = produce(tmp_path, "--target", f"kafka://{kafka_bootstrap}", "--topic", topic)
    source = KafkaSource(kafka_bootstrap, topic, read_timeout=5)
    assert source.partitions() == 3
    events = []
    for p in range(3):
        reader = source.reader(p)
        pos = reader.initial()
        got: list[Any] = []
        while len(got) < 1000:
            records, pos = reader.read(pos, None, None)
            got += records
        assert len(got) == 1000
        events += [json.loads(r.value) for r in got]
        reader.close()
    source.close()
    assert recount(events, table, expected["window_ms"]) == expected["counts"]
