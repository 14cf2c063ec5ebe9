"""The stream constructors of ``Engine`` (``engine.stream``, ``engine.stream_from``): a mixin so
that the façade in ``adrizzle.api.engine`` stays one screen of lifecycle, datasets and jobs.

A stream's name keys its offset log, checkpoints and sinks' progress; ``stream_place`` gives
each stream its own checkpoint directory under the engine's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, overload

if TYPE_CHECKING:
    import itertools
    import os
    from collections.abc import AsyncIterable, Callable, Iterable

    from adrizzle.api.stream import Stream
    from adrizzle.connectors.base import Source
    from adrizzle.driver.session import DriverSession

T = TypeVar("T")


class EngineStreams:
    """Making streams on an engine's ``session`` (``Engine`` inherits this)."""

    session: DriverSession
    #: Streams made so far: the default name ``stream-N`` (and its checkpoint subdirectory).
    streams_made: itertools.count[int]

    @overload
    def stream(
        self,
        source: Callable[[int, int], Iterable[T]],
        partitions: int | None = None,
        *,
        batch_interval: float | None = None,
        start: float | None = None,
        batches: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> Stream[T]: ...

    @overload
    def stream(
        self,
        source: Source,
        partitions: int | None = None,
        *,
        batch_interval: float | None = None,
        start: float | None = None,
        batches: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> Stream[Any]: ...

    def stream(
        self,
        source: Callable[[int, int], Iterable[Any]] | Source,
        partitions: int | None = None,
        *,
        batch_interval: float | None = None,
        start: float | None = None,
        batches: int | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> Stream[Any]:
        """A stream of micro-batches read on the slots.

        ``source`` is a connector (``adrizzle.connectors``: Redis Streams, Kafka, files, or
        your own ``Source``): partitions come from it, batch ``b`` of partition ``p`` reads
        from where ``b - 1`` ended to the broker's end at read time (at most the source's
        ``max_records_per_batch``), and the range is kept in the stream's offset log so that a
        replay reads the same records; exactly once with a ``Sink`` (``stream.sink``), across
        worker loss and driver restart (same ``name`` and ``checkpoint_dir``). Or ``source``
        is a function: batch ``b``'s partition ``p`` is ``source(b, p)`` (deterministic and
        replayable, like a log read from an offset).

        ``name`` (default ``stream-N``, N: streams made before by this engine) keys the offset
        log, checkpoints and sinks' progress: with ``Engine(checkpoint_dir=D)`` they are kept
        under ``D/name``, so a restarted driver finds them.

        With ``batch_interval`` T, batch ``b`` covers wall-clock time ``[start + bT,
        start + (b+1)T)`` and is read once that interval is over (``start``: epoch seconds,
        default the first run's start). ``batches``: the source's length (default unbounded).
        State (``update_state``, windows) is checkpointed at group boundaries in driver memory,
        or in files in ``checkpoint_dir`` (default: the engine's); after a worker loss it is
        restored and the batches since are replayed. See ``adrizzle.api.stream``.
        """
        from adrizzle.api.stream import Stream

        name, directory = self.stream_place(name, checkpoint_dir)
        return Stream.from_source(
            self.session,
            source,
            partitions,
            batch_interval=batch_interval,
            start=start,
            batches=batches,
            checkpoint_dir=directory,
            name=name,
        )

    def stream_from(
        self,
        items: AsyncIterable[T],
        partitions: int | None = None,
        *,
        batch_interval: float = 0.05,
        max_batch: int = 100_000,
        checkpoint_dir: str | os.PathLike[str] | None = None,
    ) -> Stream[T]:
        """A stream of the items of an async iterator (live input): every ``batch_interval``
        seconds (or ``max_batch`` items) what arrived becomes one micro-batch, shipped to the
        slots split into ``partitions``. Ends when the iterator does. A stateful stream keeps
        each batch's items on the driver until the state's checkpoint covers it (for replay
        after a loss); ``checkpoint_dir`` as for ``stream``."""
        from adrizzle.api.stream import Stream

        name, directory = self.stream_place(None, checkpoint_dir)
        return Stream.from_async(
            self.session,
            items,
            partitions or self.session.default_partitions(),
            batch_interval=batch_interval,
            max_batch=max_batch,
            checkpoint_dir=directory,
            name=name,
        )

    def stream_place(
        self, name: str | None, checkpoint_dir: str | os.PathLike[str] | None
    ) -> tuple[str, str | os.PathLike[str] | None]:
        """A stream's name (``stream-N`` by default, N: the streams made before it) and its own
        directory: the one given, or ``name`` under the engine's, so a driver that builds the
        same streams again resumes each from its own."""
        n = next(self.streams_made)
        name = name or f"stream-{n}"
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"a stream name must be a plain file name, got {name!r}")
        default = self.session.checkpoints.default_dir
        if checkpoint_dir is not None or default is None:
            return name, checkpoint_dir
        return name, default / name
