"""Redis connectors: ``RedisStreamSource`` reads Redis streams, ``RedisSink`` writes any Redis
commands exactly once per micro-batch. Client: redis-py (``pip install adrizzle[redis]``).

Source: partition ``p`` is the stream ``streams[p]``; a record is ``(entry_id, fields)`` with
``entry_id`` a str such as ``"1700000000000-0"`` and ``fields`` a ``dict[str, str]`` (decoded
as UTF-8). The position is the id of the last entry taken (``"0-0"`` before the first); a read
is ``XRANGE key (start + COUNT cap`` and a replay ``XRANGE key (start end``, so a range of ids
names a fixed set of entries for as long as they are not trimmed or deleted.

Sink: each micro-batch's commands and the (stream, partition)'s progress marker (a key holding
the last batch committed) go in one ``MULTI``/``EXEC`` under ``WATCH`` of that key; see
``RedisSink``.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from adrizzle.connectors.base import Position, check_cap, check_start, describe
from adrizzle.errors import SinkError, SourceError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from redis.client import Pipeline

EARLIEST_ID = "0-0"
# Entries counted after a committed id to tell Redis how many the group has read (its lag).
LAG_COUNT_LIMIT = 100_000
WRITE_ATTEMPTS = 5


def safe_url(url: str) -> str:
    """``url`` without its user and password, for names in messages."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RedisStreamSource:
    """Redis streams as a source: partition ``p`` reads the stream ``streams[p]``.

    ``start``: "earliest" (from the first entry) or "latest" (only entries added after the
    reader resolves it: the stream's last generated id). A stream that does not exist yet reads
    as empty until a producer's first ``XADD`` creates it; one that disappears after entries
    were read from it (``DEL``) is a ``SourceError``.

    ``commit(p, end)`` (on the driver, once a checkpoint covers the batch that ended at
    ``end``): with ``group``, moves that consumer group's last-delivered id to ``end``
    (``XGROUP CREATE`` the first time, then ``XGROUP SETID`` with ``ENTRIESREAD`` when it can be
    counted), so ``XINFO GROUPS`` shows how far the engine is and its lag; the group is only a
    progress marker (the engine reads with ``XRANGE``, not ``XREADGROUP``, so nothing is pending).
    With ``trim=True`` it also runs ``XTRIM key MINID end``: entries before ``end`` are deleted
    for good (use it only when nothing else reads the stream from further back).
    """

    def __init__(
        self,
        url: str,
        streams: Sequence[str],
        *,
        start: str = "earliest",
        max_records_per_batch: int | None = None,
        group: str | None = None,
        trim: bool = False,
        socket_timeout: float = 5.0,
        name: str | None = None,
    ) -> None:
        if isinstance(streams, str) or not streams:
            raise ValueError("streams must be a non-empty list of stream names")
        self.url = url
        self.streams = [str(s) for s in streams]
        self.start = check_start(start)
        self.max_records_per_batch = check_cap(max_records_per_batch)
        self.group = group
        self.trim = trim
        self.socket_timeout = socket_timeout
        self.name = name or f"RedisStreamSource({safe_url(url)}, {self.streams!r})"
        self._client: redis.Redis | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    def connect(self) -> redis.Redis:
        """A new client (connects on first use); reads are idempotent, so client retries are
        allowed."""
        return redis.Redis.from_url(
            self.url,
            decode_responses=True,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_timeout,
        )

    def _driver(self) -> redis.Redis:
        if self._client is None:
            self._client = self.connect()
        return self._client

    def error(self, cause: str, partition: int | None = None) -> SourceError:
        return SourceError(self.name, cause, partition=partition)

    def partitions(self) -> int:
        """``len(streams)``, after checking the server answers and no stream name is taken by
        a key of another type."""
        try:
            with self._driver().pipeline(transaction=False) as pipe:
                for key in self.streams:
                    pipe.type(key)
                types = pipe.execute()
        except redis.RedisError as exc:
            raise self.error(f"cannot reach Redis: {describe(exc)}") from exc
        for p, (key, kind) in enumerate(zip(self.streams, types, strict=True)):
            if kind not in ("stream", "none"):
                raise self.error(f"key {key!r} holds a {kind}, not a stream", p)
        return len(self.streams)

    def reader(self, partition: int) -> RedisStreamReader:
        if not 0 <= partition < len(self.streams):
            raise ValueError(f"{self.name} has no partition {partition}")
        return RedisStreamReader(self, partition)

    def commit(self, partition: int, end: Position) -> None:
        if self.group is None and not self.trim:
            return
        key = self.streams[partition]
        client = self._driver()
        try:
            if self.group is not None:
                read = self._entries_read(client, key, str(end))
                try:
                    client.xgroup_setid(key, self.group, end, entries_read=read)
                except redis.ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    if not client.exists(key):
                        raise self.error(f"stream {key!r} does not exist", partition) from exc
                    try:
                        client.xgroup_create(key, self.group, id=end, entries_read=read)
                    except redis.ResponseError as busy:  # created meanwhile: set it
                        if "BUSYGROUP" not in str(busy):
                            raise
                        client.xgroup_setid(key, self.group, end, entries_read=read)
            if self.trim:
                client.xtrim(key, minid=end, approximate=False)
        except redis.RedisError as exc:
            raise self.error(f"cannot commit {end!r}: {describe(exc)}", partition) from exc

    @staticmethod
    def _entries_read(client: redis.Redis, key: str, end: str) -> int | None:
        """How many entries were ever added up to ``end`` (for ``XINFO GROUPS`` lag), or None
        when it cannot be counted cheaply (entries deleted after ``end``, a long tail)."""
        if end == EARLIEST_ID:
            return 0
        with client.pipeline(transaction=False) as pipe:
            pipe.xinfo_stream(key)
            pipe.xrange(key, "(" + end, "+", count=LAG_COUNT_LIMIT + 1)
            info, after = pipe.execute()
        deleted = str(info.get("max-deleted-entry-id", EARLIEST_ID))
        if len(after) > LAG_COUNT_LIMIT or _id_key(deleted) > _id_key(end):
            return None
        return int(info["entries-added"]) - len(after)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class RedisStreamReader:
    """Reads one stream (partition) of a ``RedisStreamSource`` on the slot that owns it."""

    def __init__(self, source: RedisStreamSource, partition: int) -> None:
        self.source = source
        self.partition = partition
        self.key = source.streams[partition]
        self._client: redis.Redis | None = None

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = self.source.connect()
        return self._client

    def _error(self, cause: str) -> SourceError:
        return self.source.error(cause, self.partition)

    def initial(self) -> Position:
        if self.source.start == "earliest":
            return EARLIEST_ID
        try:
            info = self._redis().xinfo_stream(self.key)
        except redis.ResponseError as exc:
            if "no such key" in str(exc).lower():
                return EARLIEST_ID
            raise self._error(describe(exc)) from exc
        except redis.RedisError as exc:
            raise self._error(f"cannot reach Redis: {describe(exc)}") from exc
        return str(info["last-generated-id"])

    def read(
        self, start: Position, end: Position | None, max_records: int | None
    ) -> tuple[list[Any], Position]:
        if not isinstance(start, str) or (end is not None and not isinstance(end, str)):
            raise self._error(f"positions are entry ids (str), not {start!r}, {end!r}")
        if end is not None and end == start:
            return [], start
        try:
            with self._redis().pipeline(transaction=False) as pipe:
                if end is None:
                    pipe.xrange(self.key, "(" + start, "+", count=max_records)
                else:
                    pipe.xrange(self.key, "(" + start, end)
                pipe.exists(self.key)
                entries, exists = pipe.execute()
        except redis.RedisError as exc:
            raise self._error(f"cannot read stream {self.key!r}: {describe(exc)}") from exc
        records = [(entry_id, fields) for entry_id, fields in entries]
        if end is not None:
            if not records or records[-1][0] != end:
                last = records[-1][0] if records else None
                raise self._error(
                    f"cannot replay entries ({start}, {end}] of stream {self.key!r}: the stream "
                    f"now ends that range at {last!r} (entries trimmed or deleted)"
                )
            return records, end
        if not records:
            if not exists and start != EARLIEST_ID:
                raise self._error(
                    f"stream {self.key!r} does not exist, though entries up to {start} were "
                    "read from it (deleted?)"
                )
            return [], start
        return records, records[-1][0]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def hset(pipe: Pipeline, record: Any) -> None:
    """``RedisSink``'s default: a record ``(key, field, value)`` is ``HSET key field value``."""
    key, field, value = record
    pipe.hset(key, field, value)


class RedisSink:
    """Writes each micro-batch to Redis exactly once.

    A record becomes commands through ``apply(pipe, record)``, which queues them on a redis-py
    transaction pipeline (``pipe.hset(...)``, ``pipe.hincrby(...)``, ``pipe.xadd(...)``, ...).
    The default, ``hset``, takes records ``(key, field, value)`` -> ``HSET key field value``
    (YSB's window counts: ``("campaign:<id>", "<window start>", count)``). ``apply`` runs on
    the slot, so it must be picklable (a module-level function).

    ``write(batch, records)``: ``WATCH`` the progress key ``{progress_prefix}:{stream}:{p}``,
    read it, and if it says ``batch`` or later, write nothing (False); else ``MULTI``, the
    records' commands, ``SET`` the progress key to ``batch``, ``EXEC``. If the connection drops
    or the key changes under the ``WATCH``, the whole thing is tried again (on a new
    connection): ``EXEC`` is all-or-nothing, and a lost ``EXEC`` reply is recognised from the
    progress key, so a batch is committed once however the connection fails. Redis does not
    roll back a command that fails *while* ``EXEC`` runs (e.g. ``HSET`` on a key holding a
    list): the others, and the progress marker, stay applied; ``write`` then raises
    ``SinkError`` saying so. Use commands that cannot fail on your keys.
    """

    def __init__(
        self,
        url: str,
        *,
        apply: Callable[[Pipeline, Any], None] = hset,
        progress_prefix: str = "adrizzle:sink-progress",
        socket_timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        self.url = url
        self.apply = apply
        self.progress_prefix = progress_prefix
        self.socket_timeout = socket_timeout
        self.name = name or f"RedisSink({safe_url(url)})"

    def writer(self, stream: str, partition: int) -> RedisSinkWriter:
        return RedisSinkWriter(self, stream, partition)


class RedisSinkWriter:
    """Writes one (stream, partition) of a ``RedisSink``; see there."""

    def __init__(self, sink: RedisSink, stream: str, partition: int) -> None:
        self.sink = sink
        self.stream = stream
        self.partition = partition
        self.progress_key = f"{sink.progress_prefix}:{stream}:{partition}"
        self._client: redis.Redis | None = None

    def _redis(self) -> redis.Redis:
        if self._client is None:
            # No client-side retries: a retried transaction must re-check the progress key,
            # which ``write`` does itself.
            self._client = redis.Redis.from_url(
                self.sink.url,
                socket_timeout=self.sink.socket_timeout,
                socket_connect_timeout=self.sink.socket_timeout,
                retry=Retry(NoBackoff(), 0),
            )
        return self._client

    def _error(self, cause: str, batch: int | None) -> SinkError:
        return SinkError(self.sink.name, cause, partition=self.partition, batch=batch)

    def committed(self) -> int | None:
        try:
            value = self._redis().get(self.progress_key)
        except redis.RedisError as exc:
            raise self._error(f"cannot read progress: {describe(exc)}", None) from exc
        return None if value is None else int(value)

    def write(self, batch: int, records: list[Any]) -> bool:
        failure: BaseException | None = None
        for _ in range(WRITE_ATTEMPTS):
            try:
                return self._try_write(batch, records)
            except redis.WatchError as exc:  # the key changed, or the connection dropped
                failure = exc
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                failure = exc
                self._drop_connection()
            except redis.ResponseError as exc:
                raise self._error(
                    f"a command failed inside the transaction ({describe(exc)}); Redis does not "
                    "roll back: the batch's other commands and the progress marker were applied",
                    batch,
                ) from exc
            except redis.RedisError as exc:
                raise self._error(describe(exc), batch) from exc
        assert failure is not None
        raise self._error(
            f"not committed after {WRITE_ATTEMPTS} attempts: {describe(failure)}", batch
        ) from failure

    def _try_write(self, batch: int, records: list[Any]) -> bool:
        with self._redis().pipeline(transaction=True) as pipe:
            pipe.watch(self.progress_key)  # type: ignore[no-untyped-call]
            done = pipe.get(self.progress_key)
            if done is not None and int(done) >= batch:
                return False
            pipe.multi()
            for record in records:
                try:
                    self.sink.apply(pipe, record)
                except (TypeError, ValueError) as exc:  # a record apply cannot take
                    raise self._error(f"bad record {record!r}: {describe(exc)}", batch) from exc
            pipe.set(self.progress_key, batch)
            pipe.execute()
        return True

    def _drop_connection(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        self._drop_connection()
