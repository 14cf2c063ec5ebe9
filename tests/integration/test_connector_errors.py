"""Bad input on connector streams: each a clear error naming the connector, the partition and
the batch, and nothing committed past the failure (issue 16)."""

from __future__ import annotations

import json
import os
import random
import sys

import cloudpickle
import pytest

import adrizzle
from adrizzle.errors import SinkError, SourceError, TaskError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fresh(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{random.randrange(10**9)}"


def key_of(record: tuple[str, dict[str, str]]) -> tuple[str, int]:
    return (json.loads(record[1]["event"])["key"], 1)


async def test_an_unreachable_broker_is_named_when_the_stream_is_built() -> None:
    from adrizzle.connectors.redis import RedisStreamSource

    async with adrizzle.Engine.local(workers=1, cores=1) as eng:
        source = RedisStreamSource("redis://127.0.0.1:1/0", ["a", "b"])
        with pytest.raises(SourceError, match=r"RedisStreamSource.*cannot reach Redis"):
            eng.stream(source, name=fresh("s"))


async def test_a_deleted_stream_fails_the_run_naming_source_partition_and_batch(
    redis_url: str,
) -> None:
    import redis

    from adrizzle.connectors.redis import RedisStreamSource

    keys = [fresh("ev"), fresh("ev")]
    client = redis.Redis.from_url(redis_url)
    for i in range(40):
        client.xadd(keys[i % 2], {"event": json.dumps({"key": f"k{i % 3}"})})
    async with adrizzle.Engine.local(workers=2, cores=1) as eng:
        source = RedisStreamSource(redis_url, keys, max_records_per_batch=5)
        stream = eng.stream(source, batch_interval=0.01, name=fresh("s")).map(key_of)
        seen: list[int] = []

        async def consume() -> None:
            async for batch in stream.run(60, group_size=1, timeout=30):
                seen.append(batch.batch)
                if batch.batch == 3:
                    client.delete(keys[1])

        with pytest.raises(TaskError) as info:
            await consume()
    error = info.value
    assert error.exc_type == "SourceError"
    assert "RedisStreamSource" in error.message
    assert "partition 1" in error.message
    assert "batch " in error.message
    assert "does not exist" in error.message
    assert seen[:4] == [0, 1, 2, 3]


async def test_a_record_the_user_function_cannot_parse_names_its_partition(
    redis_url: str,
) -> None:
    import redis

    from adrizzle.connectors.redis import RedisStreamSource

    keys = [fresh("ev"), fresh("ev")]
    client = redis.Redis.from_url(redis_url)
    client.xadd(keys[0], {"event": json.dumps({"key": "a"})})
    client.xadd(keys[1], {"event": "{not json"})
    async with adrizzle.Engine.local(workers=2, cores=1) as eng:
        source = RedisStreamSource(redis_url, keys)
        stream = eng.stream(source, name=fresh("s")).map(key_of)
        with pytest.raises(TaskError) as info:
            await stream.drain(3, group_size=1, timeout=30)
    assert info.value.exc_type == "JSONDecodeError"
    assert info.value.partition == 1


async def test_a_missing_sink_table_fails_the_run_and_nothing_later_is_committed(
    redis_url: str, postgres_dsn: str
) -> None:
    import psycopg
    import redis

    from adrizzle.connectors.postgres import PostgresSink
    from adrizzle.connectors.redis import RedisStreamSource

    keys = [fresh("ev")]
    table, name = fresh("t"), fresh("s")
    client = redis.Redis.from_url(redis_url)
    for i in range(200):
        client.xadd(keys[0], {"event": json.dumps({"key": f"k{i % 3}"})})
    with psycopg.connect(postgres_dsn, autocommit=True) as db:
        db.execute(f"CREATE TABLE {table} (key text, n bigint)")
    async with adrizzle.Engine.local(workers=1, cores=1) as eng:
        source = RedisStreamSource(redis_url, keys, max_records_per_batch=10)
        stream = (
            eng.stream(source, batch_interval=0.01, name=name)
            .map(key_of)
            .count_by_key(partitions=1)
            .sink(PostgresSink(postgres_dsn, table, ["key", "n"]))
        )

        async def consume() -> None:
            async for batch in stream.run(40, group_size=1, timeout=30):
                if batch.batch == 4:
                    with psycopg.connect(postgres_dsn, autocommit=True) as db:
                        db.execute(f"DROP TABLE {table}")

        with pytest.raises(SinkError) as info:
            await consume()
    error = info.value
    assert error.name.startswith("PostgresSink(")
    assert error.partition == 0
    assert error.batch is not None
    assert error.batch > 4
    assert f"table {table!r} does not exist" in error.cause
    with psycopg.connect(postgres_dsn) as db:
        [(last,)] = db.execute(
            "SELECT last_batch FROM adrizzle_sink_progress WHERE stream = %s",
            (f"{name}@{table}",),
        ).fetchall()
    assert last < error.batch  # the failed batch and everything after it: not committed
    assert last >= 4
