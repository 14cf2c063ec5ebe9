"""The connector protocols: what a source or sink must provide for the engine to read a broker
or write a store exactly once, micro-batch by micro-batch.

Where each piece lives:

- a ``Source`` or ``Sink`` is built by the user on the driver and shipped to the workers with
  cloudpickle, so it holds only configuration (no open connection when pickled);
- ``Source.partitions()``, ``Source.commit()`` and ``Source.close()`` run on the driver;
- a ``SourceReader`` (``Source.reader(p)``) and a ``SinkWriter`` (``Sink.writer(stream, p)``)
  are made on the slot process that owns partition ``p`` and live there across micro-batches
  (they keep their connection); they are never pickled.

Exactly once, end to end: the engine keeps an *offset log* (for each micro-batch and
partition, the ``(start, end)`` positions its read covered) and checkpoints its state. After a
failure or a driver restart it replays the batches since the last checkpoint: it calls
``read(start, end, ...)`` with the recorded positions, which must return exactly the records the
first read returned, and it calls ``write(batch, ...)`` again for batches a sink may have
committed already, which the sink must recognise from its own progress marker (committed in the
same transaction as the batch's output) and skip. Sources are therefore *replayable* (a range
of positions names a fixed set of records) and sinks *idempotent per batch*.

Errors: connectors raise ``adrizzle.errors.SourceError`` / ``SinkError`` naming themselves
(``name``), the partition, the batch when they know it (writers do; readers do not: the engine
adds it with ``error.at_batch(b)``) and the cause.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

Position = Any
"""Where a reader is in a partition: JSON-compatible (None, bool, int, float, str, and lists or
dicts of those) so the engine can store it in its offset log; compared with ``==``. Each source
documents its own (a Redis entry id, a Kafka offset, the last file taken, ...)."""

Start = Literal["earliest", "latest"]
"""Where a partition starts when the offset log has nothing for it: at the oldest record still
in the broker, or after the newest one present when the reader is created (only what arrives
later is read)."""

STARTS: tuple[str, ...] = ("earliest", "latest")


@runtime_checkable
class SourceReader(Protocol):
    """Reads one partition of a source, on the slot process that owns it; lives across
    micro-batches (keeps its connection) and is never pickled."""

    def initial(self) -> Position:
        """Where this partition starts when the offset log has nothing for it: the source's
        ``start`` ("earliest" or "latest") resolved now, against the broker."""
        ...

    def read(
        self, start: Position, end: Position | None, max_records: int | None
    ) -> tuple[list[Any], Position]:
        """The records after ``start``.

        ``end`` None (a new micro-batch): up to the broker's end at read time, at most
        ``max_records`` records (None: no cap); returns ``(records, new_end)``, where
        ``new_end`` is the position after the last record returned. Nothing new:
        ``([], start)``.

        ``end`` given (a replay after a failure or a driver restart): exactly the records that an
        earlier read from ``start`` which returned ``end`` returned, in the same order, whatever
        ``max_records`` is (and however many records were added since); returns
        ``(records, end)``. When they cannot be read again (trimmed, deleted), raises
        ``SourceError`` rather than return something else.

        Raises ``SourceError`` (naming the source and partition) on any failure.
        """
        ...

    def close(self) -> None:
        """Release the connection. Idempotent."""
        ...


@runtime_checkable
class Source(Protocol):
    """A partitioned, replayable input. Picklable (cloudpickle) and holding no open connection
    when pickled: it is built on the driver and shipped to the slots."""

    name: str
    """Names the source in errors and logs, e.g. ``RedisStreamSource(redis://h:p/0, ['a'])``."""

    max_records_per_batch: int | None
    """The cap the engine passes to ``read`` for new micro-batches (None: no cap)."""

    def partitions(self) -> int:
        """How many partitions; called on the driver when the stream is built (may contact
        the broker, and raises ``SourceError`` when it cannot)."""
        ...

    def reader(self, partition: int) -> SourceReader:
        """A reader of ``partition``, made on the slot that owns it (connects lazily)."""
        ...

    def commit(self, partition: int, end: Position) -> None:
        """Called on the driver once a checkpoint covers the micro-batch of ``partition`` that
        ended at ``end``: the records up to ``end`` will never be replayed. Tells the broker
        (consumer-group offsets, last-delivered ids, retention) for monitoring and cleanup; the
        engine's offset log, not this, is the truth about progress. Idempotent; called with
        increasing ends per partition, though a driver restart may repeat one."""
        ...

    def close(self) -> None:
        """Close the driver-side connections (those of ``partitions`` and ``commit``)."""
        ...


@runtime_checkable
class SinkWriter(Protocol):
    """Writes one (stream, partition)'s output, on the slot process that owns it; lives across
    micro-batches and is never pickled. Micro-batches reach one writer in increasing order, but
    after a failure the engine replays from its last checkpoint, so ``write`` sees batches
    again."""

    def write(self, batch: int, records: list[Any]) -> bool:
        """Commit ``records`` as micro-batch ``batch`` of this (stream, partition) together with
        the progress marker, atomically (one transaction, or an idempotent write). When the
        progress already says ``batch`` or a later one is committed, write nothing and return
        False (a replay); else return True once the batch is durably committed.

        Raises ``SinkError`` (naming the sink, partition and batch) when it cannot commit;
        nothing of the batch is then committed, and calling ``write`` again with the same batch
        (on this writer, which reconnects, or a new one) commits it exactly once.
        """
        ...

    def committed(self) -> int | None:
        """The last micro-batch committed for this (stream, partition), None if none."""
        ...

    def close(self) -> None:
        """Release the connection. Idempotent."""
        ...


@runtime_checkable
class Sink(Protocol):
    """An exactly-once output. Picklable and holding no open connection when pickled."""

    name: str

    def writer(self, stream: str, partition: int) -> SinkWriter:
        """The writer of ``(stream, partition)``, made on the slot that owns the partition.
        ``stream`` is the engine's stable name of the stream: progress is kept per
        (stream, partition), so two streams can share a sink."""
        ...


def check_start(start: str) -> Start:
    """Validate a source's ``start`` argument."""
    if start not in STARTS:
        raise ValueError(f"start must be 'earliest' or 'latest', not {start!r}")
    return start  # type: ignore[return-value]


def check_cap(max_records: int | None, what: str = "max_records_per_batch") -> int | None:
    """Validate a record cap: None or a positive int."""
    if max_records is not None and (not isinstance(max_records, int) or max_records < 1):
        raise ValueError(f"{what} must be a positive int or None, not {max_records!r}")
    return max_records


def describe(exc: BaseException) -> str:
    """An exception as a cause in a connector error message: ``Type: message``."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
