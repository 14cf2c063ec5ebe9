"""How a KafkaReader waits for the broker, with a fake consumer (pure logic, no broker).

librdkafka's ``consume(n, timeout)`` returns only when ``n`` events are there or the timeout
has passed, so a reader that waited through it paid the whole poll slice on every read that
was not yet at the partition's end (the connectors benchmark's Kafka p50 went from 63-70 ms to
15-18 ms when this changed). A reader must wait only through ``poll``, which returns at the
first event, and drain with ``consume(n, 0)``.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

from adrizzle.connectors.kafka import KafkaSource


class FakeMessage:
    def __init__(self, offset: int, eof: bool = False) -> None:
        self._offset, self._eof = offset, eof

    def error(self) -> Any:
        return FakeError() if self._eof else None

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return 0

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v%d" % self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, 1000 + self._offset)


class FakeError:
    def code(self) -> int:
        return KafkaError._PARTITION_EOF


class FakeConsumer:
    """Five records 0..4 arrive one by one, then the end of the partition."""

    def __init__(self) -> None:
        self.arriving = [FakeMessage(i) for i in range(5)] + [FakeMessage(5, eof=True)]
        self.fetched: list[FakeMessage] = []
        self.consume_timeouts: list[float] = []
        self.poll_timeouts: list[float] = []

    def assign(self, partitions: Any) -> None:
        pass

    def get_watermark_offsets(self, tp: Any, cached: bool = False, timeout: float = 0) -> Any:
        return (0, 5)

    def _arrive(self) -> None:
        if self.arriving:
            self.fetched.append(self.arriving.pop(0))

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        self.consume_timeouts.append(timeout)
        taken, self.fetched = self.fetched[:num_messages], self.fetched[num_messages:]
        return taken

    def poll(self, timeout: float) -> FakeMessage | None:
        self.poll_timeouts.append(timeout)
        self._arrive()  # the broker answers while we wait
        return self.fetched.pop(0) if self.fetched else None

    def close(self) -> None:
        pass


class FakeSource(KafkaSource):
    def __init__(self, consumer: FakeConsumer) -> None:
        super().__init__("127.0.0.1:9", "topic")
        self.fake = consumer

    def consumer(self, **callbacks: Any) -> Any:
        return self.fake


def test_a_read_waits_through_poll_and_drains_without_waiting() -> None:
    fake = FakeConsumer()
    reader = FakeSource(fake).reader(0)
    records, end = reader.read(0, None, None)
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert end == 5
    assert fake.consume_timeouts
    assert set(fake.consume_timeouts) == {0}
    assert fake.poll_timeouts
    assert all(t > 0 for t in fake.poll_timeouts)


def test_records_already_fetched_are_taken_without_any_wait() -> None:
    fake = FakeConsumer()
    fake.fetched, fake.arriving = fake.arriving, []  # everything is fetched already
    records, end = FakeSource(fake).reader(0).read(0, None, None)
    assert [r.offset for r in records] == [0, 1, 2, 3, 4]
    assert end == 5
    assert fake.poll_timeouts == []
