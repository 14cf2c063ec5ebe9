"""Kafka source: ``KafkaSource`` reads a topic's partitions as a replayable source. Client:
confluent-kafka (librdkafka; ``pip install adrizzle[kafka]``).

Partition ``p`` is the topic's partition ``p``; a record is a ``KafkaRecord``; the position is
the offset of the next record to read (an int). A reader keeps one assign-only consumer (no
group membership, no auto-commit) whose fetcher runs ahead in the background, so a read mostly
drains records already fetched; it knows it reached the partition's end from the fetch
responses (the high watermark they carry, and librdkafka's end-of-partition events) rather than
from a ``ListOffsets`` request per read, which is both a round trip and, on some
Kafka-compatible brokers (Tansu 0.6), wrong for multi-record batches.
"""

from __future__ import annotations

import collections
import time
import uuid
from typing import TYPE_CHECKING, Any, NamedTuple

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from adrizzle.connectors.base import Position, check_cap, check_start, describe
from adrizzle.errors import SourceError

if TYPE_CHECKING:
    from confluent_kafka import Message

# librdkafka settings every consumer of this module uses (a caller's ``config`` overrides them).
DEFAULT_CONFIG: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": True,  # end-of-partition events: how a read knows it is done
    "auto.offset.reset": "error",  # an offset no longer there is an error, not a silent jump
    "allow.auto.create.topics": False,
    "fetch.wait.max.ms": 10,  # the background fetcher's long poll: bounds how stale a read is
    "socket.connection.setup.timeout.ms": 5000,
}
CONSUME_CHUNK = 10_000
POLL_SLICE = 0.05  # s: one wait for the fetcher while a read is not done
_DOWN = (KafkaError._ALL_BROKERS_DOWN, KafkaError._AUTHENTICATION, KafkaError._RESOLVE)


class KafkaRecord(NamedTuple):
    """One Kafka message. ``timestamp``: ms since the epoch (create or log-append time), None
    when the broker gives none."""

    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    timestamp: int | None


class KafkaSource:
    """A Kafka topic as a source.

    ``start``: "earliest" (the partition's oldest offset still kept) or "latest" (the end of
    the partition when the reader resolves it). ``group_id``: the consumer group whose
    committed offsets ``commit(p, end)`` sets (on the driver, once a checkpoint covers the
    batch that ended at ``end``) so ``kafka-consumer-groups`` and lag monitors see the engine's
    progress; the engine never joins the group (readers are assign-only). ``config``: extra
    librdkafka consumer settings (e.g. security), applied to readers and the driver's
    consumer. ``read_timeout``: how long a read or a metadata request may wait for the broker
    before it is a ``SourceError``.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        start: str = "earliest",
        group_id: str | None = None,
        max_records_per_batch: int | None = None,
        config: dict[str, Any] | None = None,
        read_timeout: float = 10.0,
        name: str | None = None,
    ) -> None:
        if not topic:
            raise ValueError("topic must be a non-empty str")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.start = check_start(start)
        self.group_id = group_id
        self.max_records_per_batch = check_cap(max_records_per_batch)
        self.config = dict(config or {})
        self.read_timeout = read_timeout
        self.name = name or f"KafkaSource({bootstrap_servers}, {topic!r})"
        self._consumer: Consumer | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_consumer"] = None
        return state

    def consumer(self, **callbacks: Any) -> Consumer:
        """A new assign-only consumer with this source's settings."""
        group = self.group_id or f"adrizzle-{uuid.uuid4().hex[:12]}"
        settings = {"bootstrap.servers": self.bootstrap_servers, "group.id": group}
        settings.update(DEFAULT_CONFIG)
        settings.update(self.config)
        settings.update(callbacks)
        return Consumer(settings)

    def error(self, cause: str, partition: int | None = None) -> SourceError:
        return SourceError(self.name, cause, partition=partition)

    def _driver(self) -> Consumer:
        if self._consumer is None:
            self._consumer = self.consumer()
        return self._consumer

    def partitions(self) -> int:
        try:
            meta = self._driver().list_topics(self.topic, timeout=self.read_timeout)
        except KafkaException as exc:
            raise self.error(f"cannot reach the broker: {describe(exc)}") from exc
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None:
            why = "not in the metadata" if topic is None else str(topic.error)
            raise self.error(f"topic {self.topic!r} does not exist ({why})")
        return len(topic.partitions)

    def reader(self, partition: int) -> KafkaReader:
        if partition < 0:
            raise ValueError(f"{self.name} has no partition {partition}")
        return KafkaReader(self, partition)

    def commit(self, partition: int, end: Position) -> None:
        if self.group_id is None:
            return
        try:
            done = self._driver().commit(
                offsets=[TopicPartition(self.topic, partition, int(end))], asynchronous=False
            )
        except KafkaException as exc:
            raise self.error(f"cannot commit offset {end}: {describe(exc)}", partition) from exc
        for tp in done or []:
            if tp.error is not None:
                raise self.error(f"cannot commit offset {end}: {tp.error}", partition)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class KafkaReader:
    """Reads one partition of a ``KafkaSource`` on the slot that owns it (see the module doc).

    ``_cursor`` is the offset after the last record taken from the consumer (its stream goes
    on from there); ``_pending`` holds records taken but not yet returned (a replay stopped
    before them); ``_eof`` says the last event was an end-of-partition with nothing after it.
    """

    def __init__(self, source: KafkaSource, partition: int) -> None:
        self.source = source
        self.partition = partition
        self._consumer: Consumer | None = None
        self._cursor: int | None = None
        self._pending: collections.deque[Message] = collections.deque()
        self._eof: int | None = None  # the end offset the last end-of-partition event gave
        self._down: KafkaError | None = None  # the broker is unreachable, per librdkafka

    def _error(self, cause: str) -> SourceError:
        return self.source.error(cause, self.partition)

    def _client(self) -> Consumer:
        if self._consumer is None:
            self._consumer = self.source.consumer(error_cb=self._on_error)
        return self._consumer

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal() or err.code() in _DOWN:
            self._down = err

    def _tp(self, offset: int = -1001) -> TopicPartition:
        return TopicPartition(self.source.topic, self.partition, offset)

    def _seek(self, offset: int) -> None:
        """Restart the consumer's stream at ``offset`` (drops whatever was fetched)."""
        try:
            self._client().assign([self._tp(offset)])
        except KafkaException as exc:
            raise self._error(f"cannot assign offset {offset}: {describe(exc)}") from exc
        self._pending.clear()
        self._cursor = offset
        self._eof = None

    def _pull(self, timeout: float) -> None:
        """Move the events the consumer has to ``_pending``; when it has none, wait up to
        ``timeout`` s for the first one (and take what arrived with it).

        Not ``consume(n, timeout)`` alone: librdkafka returns from it only when ``n`` events
        are there or the timeout has passed, so every read that was not yet at the partition's
        end waited the whole slice (measured: 6 events ready, 50.3 ms for a 50 ms slice; the
        connectors benchmark's Kafka p50 event-to-commit was 63-70 ms). ``poll`` returns at the
        first event.
        """
        client = self._client()
        try:
            events = client.consume(CONSUME_CHUNK, timeout=0)
            if not events and timeout > 0:
                first = client.poll(timeout)
                if first is not None:
                    events = [first, *client.consume(CONSUME_CHUNK, timeout=0)]
        except KafkaException as exc:
            raise self._error(describe(exc)) from exc
        for m in events:
            err = m.error()
            if err is None:
                self._pending.append(m)
                self._eof = None
                self._down = None
            elif err.code() == KafkaError._PARTITION_EOF:
                self._eof = m.offset()
                self._down = None
            else:
                raise self._error(f"broker error: {err.str()} ({err.name()})")

    def _known_end(self) -> int | None:
        """The partition's end as of the last fetch response, if there was one."""
        try:
            _low, high = self._client().get_watermark_offsets(self._tp(), cached=True)
        except KafkaException:
            return None
        return high if high is not None and high >= 0 else None

    def initial(self) -> Position:
        try:
            low, high = self._client().get_watermark_offsets(
                self._tp(), timeout=self.source.read_timeout
            )
        except KafkaException as exc:
            raise self._error(f"cannot list offsets: {describe(exc)}") from exc
        if self.source.start == "earliest":
            return int(low)
        # ListOffsets(latest) may lag the true end (Tansu); a fetch from there says the end.
        self._seek(int(high))
        deadline = time.monotonic() + self.source.read_timeout
        while not self._pending and self._eof is None and time.monotonic() < deadline:
            self._pull(POLL_SLICE)
            if self._down is not None:
                raise self._error(f"broker unreachable: {self._down.str()}")
        fetched = self._known_end()
        return max(int(high), fetched if fetched is not None else int(high))

    def read(
        self, start: Position, end: Position | None, max_records: int | None
    ) -> tuple[list[Any], Position]:
        if not isinstance(start, int) or (end is not None and not isinstance(end, int)):
            raise self._error(f"positions are offsets (int), not {start!r}, {end!r}")
        if end is not None and end <= start:
            if end < start:
                raise self._error(f"replay end {end} is before its start {start}")
            return [], start
        if self._cursor != start:
            self._seek(start)
        records: list[KafkaRecord] = []
        deadline = time.monotonic() + self.source.read_timeout
        while True:
            if end is not None and self._cursor is not None and self._cursor >= end:
                break
            if end is None and max_records is not None and len(records) >= max_records:
                break
            if self._pending:
                record = _record(self._pending[0])
                if end is not None and record.offset >= end:
                    break  # a gap (compaction, transaction markers) before the replay's end
                self._pending.popleft()
                records.append(record)
                self._cursor = record.offset + 1
                continue
            if self._done(end):
                self._pull(0)  # whatever is fetched already, then stop
                if not self._pending:
                    break
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return self._timed_out(start, end, records)
            self._pull(min(left, POLL_SLICE))
            if self._down is not None and not self._pending:
                raise self._error(f"broker unreachable: {self._down.str()}")
        if end is not None:
            return records, end
        if not records and self._down is not None:
            raise self._error(f"broker unreachable: {self._down.str()}")
        return records, (records[-1].offset + 1 if records else start)

    def _done(self, end: int | None) -> bool:
        """Nothing is fetched and the partition has nothing more (for this read)."""
        cursor = self._cursor if self._cursor is not None else 0
        if end is not None:
            if self._eof is not None and self._eof <= cursor:
                if self._eof < end:
                    raise self._error(
                        f"cannot replay offsets up to {end}: the partition ends at {self._eof}"
                    )
                return True  # only gaps were left before ``end``
            return False
        if self._eof is not None:
            return True
        known = self._known_end()
        return known is not None and cursor >= known

    def _timed_out(
        self, start: int, end: int | None, records: list[KafkaRecord]
    ) -> tuple[list[Any], Position]:
        waited = f"{self.source.read_timeout:g} s"
        if end is not None:
            raise self._error(
                f"replay of offsets [{start}, {end}) got only up to {self._cursor} in {waited}"
            )
        if records:  # a prefix of the range is a valid read
            return records, records[-1].offset + 1
        known = self._known_end()
        why = f"the broker reports offsets up to {known}" if known is not None else "no answer"
        raise self._error(f"no records after offset {start} within {waited} ({why})")

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._pending.clear()
        self._cursor = None


def _record(m: Message) -> KafkaRecord:
    kind, ts = m.timestamp()
    partition = m.partition()
    offset = m.offset()
    assert partition is not None
    assert offset is not None
    return KafkaRecord(m.key(), m.value(), partition, offset, ts if kind else None)
