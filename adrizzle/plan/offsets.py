"""Connector streams on the slots: which range batch ``b`` of partition ``p`` reads, and the
marker that sends a stream's output to a sink on the workers (docs/connectors.md).

A connector ``Source`` is read by the slot that owns partition ``p``, through a reader that lives
in the slot across groups and runs (``SourceIO.readers``). Batch ``b`` reads from where batch
``b - 1`` ended (the slot remembers it, ``SourceIO.ends``) up to the broker's end at read time,
capped by ``max_records``; the run's first batch starts where the offset log says the batch
before ended (``starts``), or at the reader's initial position for a new stream; a batch the
offset log already holds (a replay after a loss or a driver restart) reads exactly its logged
range. Every read is reported to the driver (``SourceIO.reads``), which logs it before the batch
is delivered or any sink commits it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from adrizzle.errors import SourceError, StateOrderError

if TYPE_CHECKING:
    from collections.abc import Iterator

Position = Any  # a connector's position (JSON-compatible, compared with ==)


@dataclass(slots=True)
class SourceIO:
    """A slot's connector readers and where each of their partitions' last read ended, kept
    across groups; and the reads not yet reported to the driver."""

    readers: dict[tuple[int, int], Any] = field(default_factory=dict)
    ends: dict[tuple[int, int], tuple[int, Position]] = field(default_factory=dict)
    reads: list[list[Any]] = field(default_factory=list)  # [job, partition, start, end]

    def release(self, node_id: int) -> None:
        """The stream is gone: close its readers."""
        for key in [k for k in self.readers if k[0] == node_id]:
            reader = self.readers.pop(key)
            try:
                reader.close()
            except Exception:  # a reader that cannot close is still dropped
                pass
        for key in [k for k in self.ends if k[0] == node_id]:
            del self.ends[key]


@dataclass(frozen=True, slots=True)
class OffsetSource:
    """A connector stream's source in one run's program: partition ``p`` of job ``j`` is
    micro-batch ``first_batch + j`` of source partition ``p``.

    ``node_id`` is the stream's (stable across its runs: it keys the slots' readers);
    ``starts[p]``: where the run's first batch starts (absent: a new stream, the reader's
    initial position); ``replay[(b, p)]``: the logged ``(start, end)`` of a batch read before.
    Paced like ``BatchSource`` when ``interval`` is set.
    """

    node_id: int
    stream: str
    source: Any  # adrizzle.connectors.base.Source
    first_batch: int
    starts: dict[int, Position] = field(default_factory=dict)
    replay: dict[tuple[int, int], tuple[Position, Position]] = field(default_factory=dict)
    max_records: int | None = None
    interval: float | None = None
    start: float | None = None

    def ready_at(self, job: int) -> float | None:
        if self.interval is None or self.start is None:
            return None
        return self.start + (self.first_batch + job + 1) * self.interval

    def read(
        self, partition: int, store: Any, job: int = 0, io: SourceIO | None = None
    ) -> Iterator[Any]:
        if io is None:
            raise StateOrderError("a connector source is read by a slot (no SourceIO given)")
        batch = self.first_batch + job
        key = (self.node_id, partition)
        reader = io.readers.get(key)
        if reader is None:
            reader = io.readers[key] = self.source.reader(partition)
        try:
            logged = self.replay.get((batch, partition))
            if logged is not None:
                start, end = logged
                records, end = reader.read(start, end, None)
            else:
                start = self._start_of(batch, partition, io, reader)
                records, end = reader.read(start, None, self.max_records)
        except SourceError as exc:
            raise exc.at_batch(batch) from None
        io.ends[key] = (batch, end)
        io.reads.append([job, partition, start, end])
        return iter(records)

    def _start_of(self, batch: int, partition: int, io: SourceIO, reader: Any) -> Position:
        if batch == self.first_batch:
            if partition in self.starts:
                return self.starts[partition]
            return reader.initial()
        last = io.ends.get((self.node_id, partition))
        if last is None or last[0] != batch - 1:
            raise StateOrderError(
                f"stream {self.stream!r} partition {partition}: micro-batch {batch} is read on a "
                f"slot that did not read {batch - 1} (it read {last[0] if last else 'none'})"
            )
        return last[1]


@dataclass(frozen=True, slots=True)
class WorkerSink:
    """The stream's output goes to ``sink`` (an ``adrizzle.connectors.base.Sink``) from the slot
    that computed each partition, as micro-batch ``first_batch + job`` of stream ``stream``, once
    the driver has logged that batch's source ranges; only an empty list goes to the driver."""

    node_id: int  # the stream's (keys the slots' writers)
    stream: str
    sink: Any
    first_batch: int
