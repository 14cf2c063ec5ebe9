"""PostgreSQL sink: ``PostgresSink`` writes each micro-batch's records as rows of a table, in
the same transaction as the (stream, partition)'s progress row. Client: psycopg 3
(``pip install adrizzle[postgres]``).
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from adrizzle.connectors.base import describe
from adrizzle.errors import SinkError

if TYPE_CHECKING:
    from collections.abc import Sequence

PROGRESS_TABLE = "adrizzle_sink_progress"


def safe_dsn(dsn: str) -> str:
    """A DSN (URL or ``key=value`` form) without its password, for names in messages."""
    if "://" in dsn:
        parts = urllib.parse.urlsplit(dsn)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        user = f"{parts.username}@" if parts.username else ""
        return urllib.parse.urlunsplit((parts.scheme, user + host, parts.path, "", ""))
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<dsn>"
    params.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in params.items())


def _identifier(name: str) -> sql.Identifier:
    """``table`` or ``schema.table`` as a quoted identifier."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ValueError(f"a table is 'name' or 'schema.name', not {name!r}")
    return sql.Identifier(*parts)


class PostgresSink:
    """Rows into ``table``, exactly once per micro-batch.

    Each record is a tuple (or list) with one value per name in ``columns``; it becomes one row
    (psycopg adapts the values: int, float, str, bytes, datetime, Decimal, dict for json, ...).
    ``write(batch, rows)`` runs one transaction: make sure the progress row
    ``("STREAM@TABLE", partition)`` of ``progress_table`` exists (progress says what is in
    this table: one stream name sinking into two tables keeps two progresses), lock it
    (``SELECT ... FOR UPDATE``),
    and if its ``last_batch`` is ``batch`` or later, write nothing (False); else ``COPY`` the
    rows into the table, set ``last_batch = batch``, commit. The progress table
    (``adrizzle_sink_progress (stream text, partition int, last_batch bigint)``, primary key
    ``(stream, partition)``) is created if missing; the user table must exist. Any failure
    (a missing table, a bad row, a dropped connection) rolls the whole batch back and raises
    ``SinkError``; the writer reconnects on its next ``write``.
    """

    def __init__(
        self,
        dsn: str,
        table: str,
        columns: Sequence[str],
        *,
        progress_table: str = PROGRESS_TABLE,
        connect_timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        if isinstance(columns, str) or not columns:
            raise ValueError("columns must be a non-empty list of column names")
        _identifier(table)
        _identifier(progress_table)
        self.dsn = dsn
        self.table = table
        self.columns = [str(c) for c in columns]
        self.progress_table = progress_table
        self.connect_timeout = connect_timeout
        self.name = name or f"PostgresSink({safe_dsn(dsn)}, {table})"

    def writer(self, stream: str, partition: int) -> PostgresSinkWriter:
        return PostgresSinkWriter(self, stream, partition)


class PostgresSinkWriter:
    """Writes one (stream, partition) of a ``PostgresSink``; see there."""

    def __init__(self, sink: PostgresSink, stream: str, partition: int) -> None:
        self.sink = sink
        self.stream = stream
        self.partition = partition
        # Progress says what is in *this* table: two sinks of one stream name into two
        # tables must not skip each other's batches.
        self._key = (f"{stream}@{sink.table}", partition)
        self._conn: psycopg.Connection[Any] | None = None
        self._progress_ready = False
        table = _identifier(sink.table)
        progress = _identifier(sink.progress_table)
        self._create_progress = sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (stream text NOT NULL, partition integer NOT NULL, "
            "last_batch bigint NOT NULL, PRIMARY KEY (stream, partition))"
        ).format(progress)
        self._ensure_row = sql.SQL(
            "INSERT INTO {} (stream, partition, last_batch) VALUES (%s, %s, -1) "
            "ON CONFLICT (stream, partition) DO NOTHING"
        ).format(progress)
        self._lock_row = sql.SQL(
            "SELECT last_batch FROM {} WHERE stream = %s AND partition = %s FOR UPDATE"
        ).format(progress)
        self._select_row = sql.SQL(
            "SELECT last_batch FROM {} WHERE stream = %s AND partition = %s"
        ).format(progress)
        self._set_row = sql.SQL(
            "UPDATE {} SET last_batch = %s WHERE stream = %s AND partition = %s"
        ).format(progress)
        self._copy = sql.SQL("COPY {} ({}) FROM STDIN").format(
            table, sql.SQL(", ").join(sql.Identifier(c) for c in sink.columns)
        )

    def _error(self, cause: str, batch: int | None) -> SinkError:
        return SinkError(self.sink.name, cause, partition=self.partition, batch=batch)

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn.close()
            self._conn = None
        if self._conn is None:
            self._conn = psycopg.connect(
                self.sink.dsn, connect_timeout=max(1, round(self.sink.connect_timeout))
            )
        if not self._progress_ready:
            self._create_progress_table(self._conn)
            self._progress_ready = True
        return self._conn

    def _create_progress_table(self, conn: psycopg.Connection[Any]) -> None:
        try:
            with conn.transaction():
                conn.execute(self._create_progress)
        except (
            psycopg.errors.UniqueViolation,
            psycopg.errors.DuplicateTable,
            psycopg.errors.DuplicateObject,  # the table's row type, created by the other one
        ):
            pass  # another writer created it at the same moment: IF NOT EXISTS is not atomic

    def committed(self) -> int | None:
        try:
            conn = self._connection()
            with conn.transaction():
                row = conn.execute(self._select_row, self._key).fetchone()
        except psycopg.Error as exc:
            self._drop_broken()
            raise self._error(f"cannot read progress: {describe(exc)}", None) from exc
        return None if row is None or row[0] < 0 else int(row[0])

    def write(self, batch: int, records: list[Any]) -> bool:
        width = len(self.sink.columns)
        try:
            conn = self._connection()
            with conn.transaction():
                key = self._key
                conn.execute(self._ensure_row, key)
                row = conn.execute(self._lock_row, key).fetchone()
                assert row is not None
                if row[0] >= batch:
                    return False
                with conn.cursor() as cur, cur.copy(self._copy) as copy:
                    for record in records:
                        if len(record) != width:
                            raise ValueError(
                                f"record {record!r} has {len(record)} values for "
                                f"{width} columns {self.sink.columns}"
                            )
                        copy.write_row(record)
                conn.execute(self._set_row, (batch, *key))
        except psycopg.errors.UndefinedTable as exc:
            raise self._error(
                f"table {self.sink.table!r} does not exist ({describe(exc)}); nothing committed",
                batch,
            ) from exc
        except (psycopg.Error, ValueError, TypeError) as exc:
            self._drop_broken()
            raise self._error(f"{describe(exc)}; nothing committed", batch) from exc
        return True

    def _drop_broken(self) -> None:
        """Forget a connection that broke, so the next call opens a new one."""
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
