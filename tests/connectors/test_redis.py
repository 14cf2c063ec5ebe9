"""RedisStreamSource and RedisSink against a real redis-server (no engine)."""

from __future__ import annotations

import pickle
import uuid
from typing import Any

import cloudpickle
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adrizzle.connectors.base import Sink, SinkWriter, Source, SourceReader
from adrizzle.connectors.redis import RedisSink, RedisStreamSource
from adrizzle.errors import SinkError, SourceError
from tests.servers import free_port

pytestmark = pytest.mark.timeout(60)


def fresh(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def r(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def produce(r: Any, key: str, n: int, start: int = 0) -> list[str]:
    return [r.xadd(key, {"i": str(start + i)}) for i in range(n)]


def values(records: list[Any]) -> list[int]:
    return [int(fields["i"]) for _id, fields in records]


def test_reads_in_order_across_reads_with_a_cap(redis_url: str, r: Any) -> None:
    a, b = fresh(), fresh()
    ids = produce(r, a, 10)
    produce(r, b, 3, start=100)
    source = RedisStreamSource(redis_url, [a, b], max_records_per_batch=4)
    assert isinstance(source, Source)
    assert source.partitions() == 2
    reader = source.reader(0)
    assert isinstance(reader, SourceReader)
    pos = reader.initial()
    assert pos == "0-0"
    got: list[int] = []
    sizes = []
    while True:
        records, new = reader.read(pos, None, source.max_records_per_batch)
        if not records:
            assert new == pos
            break
        assert new == records[-1][0]
        sizes.append(len(records))
        got += values(records)
        pos = new
    assert sizes == [4, 4, 2]
    assert got == list(range(10))
    assert pos == ids[-1]
    other = source.reader(1)
    records, _ = other.read(other.initial(), None, None)
    assert values(records) == [100, 101, 102]
    assert all(isinstance(f, dict) and isinstance(i, str) for i, f in records)
    reader.close()
    other.close()
    source.close()


def test_replay_returns_exactly_the_same_records(redis_url: str, r: Any) -> None:
    key = fresh()
    produce(r, key, 5)
    source = RedisStreamSource(redis_url, [key])
    reader = source.reader(0)
    first, end = reader.read("0-0", None, 3)
    second, end2 = reader.read(end, None, None)
    produce(r, key, 5, start=5)
    again, same_end = reader.read("0-0", end, None)  # replay, no cap given
    assert (again, same_end) == (first, end)
    capped, _ = reader.read("0-0", end, 1)  # a replay ignores the cap
    assert capped == first
    assert reader.read(end, end2, 1) == (second, end2)
    assert reader.read(end, end, None) == ([], end)
    # a new reader (another slot, after a restart) replays the same way
    fresh_reader = source.reader(0)
    assert fresh_reader.read("0-0", end, None) == (first, end)
    fresh_reader.close()
    reader.close()


def test_start_latest_skips_what_was_there(redis_url: str, r: Any) -> None:
    key = fresh()
    produce(r, key, 4)
    reader = RedisStreamSource(redis_url, [key], start="latest").reader(0)
    pos = reader.initial()
    assert reader.read(pos, None, None) == ([], pos)
    produce(r, key, 2, start=4)
    records, _ = reader.read(pos, None, None)
    assert values(records) == [4, 5]
    # latest on a stream that does not exist yet starts before its first entry
    missing = RedisStreamSource(redis_url, [fresh()], start="latest").reader(0)
    assert missing.initial() == "0-0"
    reader.close()
    missing.close()


def test_empty_and_missing_streams_read_nothing_then_pick_up(redis_url: str, r: Any) -> None:
    key = fresh()
    source = RedisStreamSource(redis_url, [key])
    assert source.partitions() == 1  # a stream that does not exist yet is fine
    reader = source.reader(0)
    pos = reader.initial()
    assert reader.read(pos, None, 10) == ([], pos)
    produce(r, key, 3)
    records, pos = reader.read(pos, None, 10)
    assert values(records) == [0, 1, 2]
    assert reader.read(pos, None, 10) == ([], pos)
    produce(r, key, 1, start=3)
    assert values(reader.read(pos, None, 10)[0]) == [3]
    reader.close()


def test_commit_moves_the_group_and_shows_lag(redis_url: str, r: Any) -> None:
    key = fresh()
    ids = produce(r, key, 6)
    source = RedisStreamSource(redis_url, [key], group="engine")
    source.commit(0, ids[1])
    (group,) = r.xinfo_groups(key)
    assert group["name"] == "engine"
    assert group["last-delivered-id"] == ids[1]
    assert group["lag"] == 4
    assert group["pending"] == 0
    source.commit(0, ids[3])
    source.commit(0, ids[3])  # idempotent
    (group,) = r.xinfo_groups(key)
    assert (group["last-delivered-id"], group["lag"]) == (ids[3], 2)
    source.close()


def test_commit_with_trim_deletes_entries_before_end(redis_url: str, r: Any) -> None:
    key = fresh()
    ids = produce(r, key, 5)
    source = RedisStreamSource(redis_url, [key], trim=True)
    source.commit(0, ids[2])
    assert [i for i, _f in r.xrange(key)] == ids[2:]
    # replaying a range whose entries were trimmed is an error, not a short read
    reader = source.reader(0)
    with pytest.raises(SourceError, match="cannot replay") as info:
        reader.read("0-0", ids[1], None)
    assert info.value.partition == 0
    assert source.name in str(info.value)
    reader.close()
    source.close()


def test_unreachable_server_is_a_source_error(redis_url: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    source = RedisStreamSource(url, ["a", "b"], socket_timeout=1.0)
    with pytest.raises(SourceError) as info:
        source.partitions()
    message = str(info.value)
    assert f"RedisStreamSource(redis://127.0.0.1:{url.split(':')[2]}" in message
    assert "cannot reach Redis" in message
    assert "ConnectionError" in message
    reader = source.reader(1)
    with pytest.raises(SourceError, match=r"partition 1: cannot read stream 'b'.*Connection"):
        reader.read("0-0", None, None)
    reader.close()


def test_deleted_stream_and_wrong_type_are_source_errors(redis_url: str, r: Any) -> None:
    key = fresh()
    produce(r, key, 2)
    source = RedisStreamSource(redis_url, ["x", key])
    reader = source.reader(1)
    _records, pos = reader.read("0-0", None, None)
    r.delete(key)
    with pytest.raises(SourceError, match=r"partition 1: stream '.*' does not exist") as info:
        reader.read(pos, None, None)
    assert info.value.partition == 1
    assert info.value.at_batch(7).batch == 7
    assert "batch 7" in str(info.value.at_batch(7))
    r.set(key, "not a stream")
    with pytest.raises(SourceError, match="holds a string, not a stream"):
        source.partitions()
    with pytest.raises(SourceError, match="WRONGTYPE"):
        reader.read(pos, None, None)
    reader.close()


def test_source_pickles_without_a_connection(redis_url: str, r: Any) -> None:
    key = fresh()
    produce(r, key, 2)
    source = RedisStreamSource(redis_url, [key], group="g")
    source.partitions()  # opens the driver's connection
    copy = pickle.loads(cloudpickle.dumps(source))
    assert copy._client is None
    assert copy.name == source.name
    records, _ = copy.reader(0).read("0-0", None, None)
    assert values(records) == [0, 1]
    source.close()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("produce"), st.integers(0, 5)),
            st.tuples(st.just("read"), st.one_of(st.none(), st.integers(1, 4))),
            st.tuples(st.just("replay"), st.integers(0, 50)),
        ),
        max_size=25,
    )
)
def test_interleavings_match_a_model(redis_url: str, steps: list[tuple[str, Any]]) -> None:
    """Random produce / read / replay sequences: reads return exactly the next entries in
    order (at most the cap), and a replay of any earlier read returns the same records."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    key = fresh("h")
    reader = RedisStreamSource(redis_url, [key]).reader(0)
    produced: list[int] = []
    taken = 0
    pos = reader.initial()
    history: list[tuple[Any, Any, list[Any]]] = []
    try:
        for op, arg in steps:
            if op == "produce":
                for _ in range(arg):
                    client.xadd(key, {"i": str(len(produced))})
                    produced.append(len(produced))
            elif op == "read":
                records, new = reader.read(pos, None, arg)
                expect = produced[taken : taken + arg if arg is not None else None]
                assert values(records) == expect
                if records:
                    history.append((pos, new, records))
                taken += len(records)
                pos = new
            elif history:
                start, end, records = history[arg % len(history)]
                assert reader.read(start, end, 1) == (records, end)
    finally:
        client.delete(key)
        client.close()
        reader.close()


# -- RedisSink -------------------------------------------------------------------------------


def incr(pipe: Any, record: Any) -> None:
    key, field, by = record
    pipe.hincrby(key, field, by)


def test_sink_writes_a_batch_once(redis_url: str, r: Any) -> None:
    key = fresh("h")
    sink = RedisSink(redis_url)
    assert isinstance(sink, Sink)
    stream = fresh()
    writer = sink.writer(stream, 3)
    assert isinstance(writer, SinkWriter)
    assert writer.committed() is None
    assert writer.write(0, [(key, "w0", 5), (key, "w1", 7)]) is True
    assert writer.write(0, [(key, "w0", 999)]) is False
    assert writer.committed() == 0
    assert r.hgetall(key) == {"w0": "5", "w1": "7"}
    assert writer.write(1, [(key, "w0", 6)]) is True
    other = sink.writer(stream, 3)  # a new writer (another slot, after a failure)
    assert other.committed() == 1
    assert other.write(0, [(key, "w0", 999)]) is False
    assert other.write(1, [(key, "w0", 999)]) is False
    assert r.hgetall(key) == {"w0": "6", "w1": "7"}
    # progress is per (stream, partition)
    assert sink.writer(stream, 4).committed() is None
    assert sink.writer(fresh(), 3).committed() is None
    assert r.get(f"adrizzle:sink-progress:{stream}:3") == "1"
    writer.close()
    other.close()


def test_sink_survives_a_connection_killed_mid_transaction(redis_url: str, r: Any) -> None:
    """The writer's connection is killed while the batch is being queued: nothing of the
    first attempt is applied, the retry applies it once (HINCRBY would show twice)."""
    key = fresh("h")
    kills: list[int] = []
    writer = RedisSink(redis_url, apply=incr).writer(fresh(), 0)
    assert writer.write(0, [(key, "a", 1)]) is True
    conn_id = writer._redis().client_id()

    def kill_once(pipe: Any, record: Any) -> None:
        if not kills:
            kills.append(r.client_kill_filter(_id=conn_id))
        incr(pipe, record)

    writer.sink.apply = kill_once
    assert writer.write(1, [(key, "a", 10), (key, "b", 1)]) is True
    assert kills == [1]
    assert r.hgetall(key) == {"a": "11", "b": "1"}
    assert writer.committed() == 1
    assert writer.write(1, [(key, "a", 10)]) is False
    assert r.hget(key, "a") == "11"
    writer.close()


def test_sink_errors_name_sink_partition_batch(redis_url: str, r: Any) -> None:
    key = fresh("h")
    port = free_port()
    dead = RedisSink(f"redis://127.0.0.1:{port}/0", socket_timeout=1.0).writer("s", 2)
    with pytest.raises(SinkError) as info:
        dead.write(5, [(key, "f", 1)])
    expected = f"RedisSink(redis://127.0.0.1:{port}/0), partition 2, batch 5"
    assert str(info.value).startswith(expected)
    assert "ConnectionError" in str(info.value)
    assert (info.value.partition, info.value.batch) == (2, 5)
    dead.close()
    writer = RedisSink(redis_url).writer(fresh(), 0)
    with pytest.raises(SinkError, match=r"batch 0: bad record \('only', 'two'\)"):
        writer.write(0, [(key, "f", 1), ("only", "two")])
    assert r.exists(key) == 0
    assert writer.committed() is None
    # a command that fails while EXEC runs: Redis applies the rest; the error says so
    r.rpush(key + "-list", "x")
    with pytest.raises(SinkError, match="does not roll back"):
        writer.write(0, [(key, "f", 1), (key + "-list", "f", 1)])
    assert r.hget(key, "f") == "1"
    assert writer.committed() == 0
    writer.close()


def test_sink_error_pickles() -> None:
    err = SinkError("RedisSink(redis://h:1/0)", "boom", partition=1, batch=2)
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), str(copy), copy.partition, copy.batch) == (
        SinkError,
        str(err),
        1,
        2,
    )
