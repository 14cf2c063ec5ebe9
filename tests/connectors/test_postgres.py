"""PostgresSink against a real PostgreSQL server (no engine)."""

from __future__ import annotations

import pickle
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import cloudpickle
import psycopg
import pytest

from adrizzle.connectors.base import Sink, SinkWriter
from adrizzle.connectors.postgres import PostgresSink
from adrizzle.errors import SinkError
from tests.servers import free_port

pytestmark = pytest.mark.timeout(60)


def fresh(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def db(postgres_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def table(db: psycopg.Connection[Any]) -> str:
    name = fresh()
    db.execute(f"CREATE TABLE {name} (campaign text, window_start bigint, views integer)")
    return name


def rows(db: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    return db.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3").fetchall()


def test_writes_a_batch_once_with_its_progress(
    postgres_dsn: str, db: psycopg.Connection[Any], table: str
) -> None:
    sink = PostgresSink(postgres_dsn, table, ["campaign", "window_start", "views"])
    assert isinstance(sink, Sink)
    stream = fresh("s")
    writer = sink.writer(stream, 2)
    assert isinstance(writer, SinkWriter)
    assert writer.committed() is None
    assert writer.write(0, [("a", 0, 3), ("b", 0, 4)]) is True
    assert writer.write(0, [("a", 0, 3), ("b", 0, 4)]) is False
    assert writer.write(1, []) is True  # an empty batch still moves the progress
    assert writer.committed() == 1
    assert rows(db, table) == [("a", 0, 3), ("b", 0, 4)]
    progress = db.execute(
        "SELECT last_batch FROM adrizzle_sink_progress WHERE stream = %s AND partition = 2",
        (f"{stream}@{table}",),  # progress is kept per stream and table
    ).fetchone()
    assert progress == (1,)
    other = sink.writer(stream, 2)  # another slot after a failure: sees the same progress
    assert other.committed() == 1
    assert other.write(1, [("x", 1, 1)]) is False
    assert other.write(2, [("c", 10, 1)]) is True
    third = sink.writer(stream, 3)
    assert third.committed() is None
    third.close()
    assert rows(db, table) == [("a", 0, 3), ("b", 0, 4), ("c", 10, 1)]
    # a sink pickles (cloudpickle, to the slots) and its writers connect on the slot
    copy = pickle.loads(cloudpickle.dumps(sink)).writer(stream, 2)
    assert copy.committed() == 2
    copy.close()
    writer.close()
    other.close()


class KillMidway(list[Any]):
    """Rows whose iteration (inside the writer's COPY, after it locked the progress row)
    terminates the writer's backend from another connection, once."""

    def __init__(self, rows: list[Any], dsn: str, pid_of: Any) -> None:
        super().__init__(rows)
        self.dsn = dsn
        self.pid_of = pid_of
        self.killed = False

    def __iter__(self) -> Iterator[Any]:
        for i, row in enumerate(list.__iter__(self)):
            if i == 2 and not self.killed:
                with psycopg.connect(self.dsn, autocommit=True) as admin:
                    done = admin.execute("SELECT pg_terminate_backend(%s)", (self.pid_of(),))
                    self.killed = bool(done.fetchone()[0])  # type: ignore[index]
            yield row


def test_backend_killed_mid_transaction_commits_nothing_then_once(
    postgres_dsn: str, db: psycopg.Connection[Any], table: str
) -> None:
    sink = PostgresSink(postgres_dsn, table, ["campaign", "window_start", "views"])
    stream = fresh("s")
    writer = sink.writer(stream, 0)
    assert writer.write(0, [("a", 0, 1)]) is True
    backend = writer._connection().info.backend_pid
    batch = KillMidway([("b", 1, i) for i in range(5)], postgres_dsn, lambda: backend)
    with pytest.raises(SinkError) as info:
        writer.write(1, batch)
    assert batch.killed
    assert info.value.batch == 1
    assert info.value.partition == 0
    assert "nothing committed" in str(info.value)
    assert rows(db, table) == [("a", 0, 1)]
    assert writer.committed() == 0  # the writer reconnected
    assert writer.write(1, batch) is True  # the retry
    assert writer.write(1, batch) is False
    assert rows(db, table) == [("a", 0, 1)] + [("b", 1, i) for i in range(5)]
    writer.close()


def test_concurrent_writers_of_one_partition_commit_once(
    postgres_dsn: str, db: psycopg.Connection[Any], table: str
) -> None:
    """Two writers (a zombie slot and its replacement) race on the same batches: the
    progress row lock lets exactly one commit each batch."""
    sink = PostgresSink(postgres_dsn, table, ["campaign", "window_start", "views"])
    stream = fresh("s")
    outcomes: list[list[bool]] = [[], []]

    def run(k: int) -> None:
        writer = sink.writer(stream, 0)
        for b in range(20):
            outcomes[k].append(writer.write(b, [(f"w{b}", b, 1)]))
        writer.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [a + b for a, b in zip(*outcomes, strict=True)] == [1] * 20
    assert rows(db, table) == sorted((f"w{b}", b, 1) for b in range(20))


def test_missing_table_is_a_sink_error_and_commits_nothing(
    postgres_dsn: str, db: psycopg.Connection[Any]
) -> None:
    missing = fresh("missing")
    sink = PostgresSink(postgres_dsn, missing, ["a"])
    stream = fresh("s")
    writer = sink.writer(stream, 4)
    with pytest.raises(SinkError) as info:
        writer.write(7, [(1,)])
    message = str(info.value)
    assert message.startswith("PostgresSink(postgresql://postgres@127.0.0.1:")
    assert f", {missing}), partition 4, batch 7: table '{missing}' does not exist" in message
    assert "UndefinedTable" in message
    assert writer.committed() is None
    db.execute(f"CREATE TABLE {missing} (a integer)")
    assert writer.write(7, [(1,)]) is True
    writer.close()


def test_bad_rows_and_an_unreachable_server_are_sink_errors(
    postgres_dsn: str, db: psycopg.Connection[Any], table: str
) -> None:
    writer = PostgresSink(postgres_dsn, table, ["campaign", "window_start", "views"]).writer(
        fresh("s"), 1
    )
    with pytest.raises(SinkError, match=r"batch 3: ValueError: record \('a', 1\) has 2 values"):
        writer.write(3, [("ok", 1, 1), ("a", 1)])
    with pytest.raises(SinkError, match=r"batch 3: .*(InvalidTextRepresentation|DataError)"):
        writer.write(3, [("ok", 1, 1), ("a", "not a number", 1)])
    assert rows(db, table) == []
    assert writer.committed() is None
    writer.close()
    port = free_port()
    dead = PostgresSink(
        f"postgresql://postgres:secret@127.0.0.1:{port}/postgres", "t", ["a"], connect_timeout=2
    ).writer("s", 0)
    with pytest.raises(SinkError) as info:
        dead.write(0, [(1,)])
    assert str(info.value).startswith(
        f"PostgresSink(postgresql://postgres@127.0.0.1:{port}/postgres, t), partition 0, batch 0"
    )
    assert "secret" not in str(info.value)
    assert "OperationalError" in str(info.value)
    dead.close()
