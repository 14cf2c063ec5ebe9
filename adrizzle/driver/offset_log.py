"""A connector stream's offset log: per micro-batch, each source partition's ``(start, end)``.

The driver appends a batch when its results and every partition's range are in, **before** the
batch is delivered or any sink commits it; a replay (after a loss or a driver restart) ships the
logged ranges, so a replayed batch reads exactly the same records. ``completed_through`` is the
last batch that will never be replayed (its group acknowledged, its sinks committed, and for a
stream with state its checkpoint committed): a restarted driver resumes after it, and the
source is told it may let go of what came before (``Source.commit``).

Storage: memory, or with a directory the file ``offsets.log`` there: one JSON line per batch
(``{"b": batch, "r": {partition: [start, end]}}``) or completion (``{"c": batch}``), appended
by a writer thread that fsyncs what accumulated (group commit); a batch counts as logged once
its line is on disk (``durable_through``). A torn last line (a crash mid-write) is ignored on
load, and the file is rewritten without the entries before the completed batch.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

import orjson

from adrizzle.errors import StateOrderError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

log = logging.getLogger("adrizzle.driver")

Range = tuple[Any, Any]  # (start, end) positions of one source partition in one batch
FILE_NAME = "offsets.log"


class OffsetLog:
    """One stream's offset log (see the module docstring). ``notify`` is called from the
    writer thread after each fsync (the session turns it into a call on its loop)."""

    def __init__(
        self, stream: str, directory: Path | None = None, notify: Callable[[], None] | None = None
    ) -> None:
        self.stream = stream
        self.directory = directory
        self.entries: dict[int, dict[int, Range]] = {}
        self.logged_through = -1  # the last batch appended (appends are contiguous)
        self.completed_through = -1
        # The last batch the stream's consumer has taken its ranges for: a completed batch
        # keeps them until then (its acknowledgement can overtake its delivery).
        self.delivered_through = -1
        self._durable = -1  # written by the writer thread
        self._writer = _Writer(directory / FILE_NAME, notify) if directory is not None else None
        if directory is not None:
            self._load(directory / FILE_NAME)

    @property
    def durable_through(self) -> int:
        """The last batch whose range is safe (on disk, or in memory without a directory)."""
        return self.logged_through if self._writer is None else self._durable

    def append(self, batch: int, ranges: dict[int, Range]) -> None:
        """Log ``batch``'s ranges. A batch logged before (a replay) must read the same
        ranges; appends come in batch order."""
        known = self.entries.get(batch)
        if known is not None:
            if known != ranges:
                raise StateOrderError(
                    f"stream {self.stream!r} micro-batch {batch} was replayed with other "
                    f"source ranges ({ranges}) than logged ({known}): the source is not "
                    "replayable"
                )
            return
        if batch <= self.logged_through:
            return  # logged and dropped since (completed)
        if batch != self.logged_through + 1 and self.logged_through >= 0:
            raise StateOrderError(
                f"stream {self.stream!r}: micro-batch {batch} logged after "
                f"{self.logged_through} (offset log appends must be contiguous)"
            )
        self.entries[batch] = dict(ranges)
        self.logged_through = batch
        if self._writer is not None:
            self._writer.append({"b": batch, "r": {str(p): list(r) for p, r in ranges.items()}})

    def complete(self, through: int) -> dict[int, Any] | None:
        """Batches up to ``through`` will never be replayed. Returns each partition's end at
        ``through`` (for ``Source.commit``), or None when nothing advanced."""
        if through <= self.completed_through:
            return None
        self.completed_through = through
        self._prune()
        if self._writer is not None:
            self._writer.append({"c": through})
        ranges = self.entries.get(through)
        return None if ranges is None else {p: r[1] for p, r in ranges.items()}

    def delivered(self, batch: int) -> dict[int, Range] | None:
        """The consumer takes ``batch``'s ranges (None if it was never logged); completed
        batches up to it are dropped now."""
        ranges = self.entries.get(batch)
        if batch > self.delivered_through:
            self.delivered_through = batch
            self._prune()
        return ranges

    def _prune(self) -> None:
        """Drop the batches that will never be replayed and whose ranges were delivered."""
        last = min(self.completed_through - 1, self.delivered_through)
        for batch in [b for b in self.entries if b <= last]:
            del self.entries[batch]

    def ranges(self, first: int, last: int) -> dict[tuple[int, int], Range]:
        """The logged ranges of batches ``first .. last - 1``: ``(batch, partition) ->
        (start, end)``."""
        return {
            (b, p): r for b, parts in self.entries.items() if first <= b < last
            for p, r in parts.items()
        }  # fmt: skip

    def starts(self, batch: int) -> dict[int, Any]:
        """Where each partition's ``batch`` starts: the logged end of the batch before."""
        before = self.entries.get(batch - 1)
        return {} if before is None else {p: r[1] for p, r in before.items()}

    def drain(self) -> int:
        """Take the writer's progress (on the loop): the new ``durable_through``."""
        if self._writer is not None:
            self._durable = self._writer.durable
        return self.durable_through

    def close(self, timeout: float = 10.0) -> None:
        if self._writer is not None:
            self._writer.close(timeout)

    def _load(self, path: Path) -> None:
        """Read an earlier driver's log (the last line may be torn), then rewrite it compact."""
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.warning("offset log %s: ignoring a torn line (a crash while writing)", path)
                continue
            if "c" in record:
                self.completed_through = max(self.completed_through, int(record["c"]))
            elif "b" in record:
                batch = int(record["b"])
                self.entries[batch] = {int(p): (r[0], r[1]) for p, r in record["r"].items()}
                self.logged_through = max(self.logged_through, batch)
        for batch in [b for b in self.entries if b < self.completed_through]:
            del self.entries[batch]
        self._durable = self.logged_through
        assert self._writer is not None
        self._writer.rewrite(self.completed_through, self.entries)


class _Writer:
    """Appends JSON lines to the log file from a daemon thread, one fsync per burst."""

    def __init__(self, path: Path, notify: Callable[[], None] | None) -> None:
        self.path = path
        self.durable = -1
        self._notify = notify
        self._cond = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._writing = False
        self._closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        threading.Thread(target=self._run, name="adrizzle-offsets", daemon=True).start()

    def append(self, record: dict[str, Any]) -> None:
        with self._cond:
            self._pending.append(record)
            self._cond.notify()

    def rewrite(self, completed: int, entries: dict[int, dict[int, Range]]) -> None:
        """Replace the file with only what a resume needs (atomic rename)."""
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        lines = [orjson.dumps({"c": completed})] if completed >= 0 else []
        for batch in sorted(entries):
            ranges = {str(p): list(r) for p, r in entries[batch].items()}
            lines.append(orjson.dumps({"b": batch, "r": ranges}))
        with open(tmp, "wb") as f:
            f.write(b"".join(line + b"\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.durable = max(entries, default=-1)

    def close(self, timeout: float) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._pending and not self._writing, timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                batch, self._pending = self._pending, []
                if not batch and self._closed:
                    os.close(self._fd)
                    return
                self._writing = True
            try:
                os.write(self._fd, b"".join(orjson.dumps(r) + b"\n" for r in batch))
                os.fsync(self._fd)
            except OSError as exc:
                log.error("cannot write the offset log %s: %s", self.path, exc)
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()
                continue
            logged = [r["b"] for r in batch if "b" in r]
            if logged:
                self.durable = max(self.durable, max(logged))
            with self._cond:
                self._writing = False
                self._cond.notify_all()
            if self._notify is not None and logged:
                self._notify()
