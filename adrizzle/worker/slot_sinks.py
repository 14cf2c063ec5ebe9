"""Sinks on the slots: a stream's output is written from the slot that computed it, exactly once.

A micro-batch's output for a partition is *staged* here when its task finishes, and committed
(``SinkWriter.write``, rows and progress in one transaction) only once the driver says the
stream's source ranges are logged through that batch (``offsets_logged``): a batch a sink holds
can always be replayed with the same records. Batches commit in order per (stream, partition);
a writer skips a batch its progress already holds (a replay). A slot finishes a group only after
its staged batches are committed, so a group's acknowledgement (and the checkpoint it completes)
implies its sinks' commits. After a sink fails, nothing later of that stream is committed here.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import TYPE_CHECKING, Any

from adrizzle.errors import SinkError

if TYPE_CHECKING:
    from adrizzle.plan.offsets import WorkerSink


@dataclasses.dataclass(slots=True)
class Staged:
    group: int
    sink: WorkerSink
    batch: int
    partition: int
    records: list[Any]


class SinkStage:
    """The slot's staged sink outputs, its writers (kept across groups) and the driver's
    ``offsets_logged`` watermark per stream."""

    def __init__(self) -> None:
        self.staged: deque[Staged] = deque()
        self.writers: dict[tuple[int, int], Any] = {}
        self.logged: dict[str, int] = {}
        self.failed: dict[str, SinkError] = {}
        self.committed = 0  # batches written (for tests and statistics)
        self.skipped = 0  # batches the sink already held (replays)

    def stage(self, group: int, sink: WorkerSink, batch: int, partition: int, records: Any) -> None:
        self.staged.append(Staged(group, sink, batch, partition, list(records)))

    def confirm(self, stream: str, through: int) -> list[tuple[int, SinkError]]:
        """The driver logged ``stream`` through ``through``: commit what that covers."""
        if through > self.logged.get(stream, -1):
            self.logged[stream] = through
        return self.commit_ready()

    def commit_ready(self) -> list[tuple[int, SinkError]]:
        """Commit the staged batches the driver's watermark covers, in staging order (a later
        batch never before an earlier one of the same stream). Returns ``(group, error)`` of
        each stream that failed now."""
        failures = []
        kept: deque[Staged] = deque()
        blocked: set[str] = set()  # streams with an earlier batch still waiting
        while self.staged:
            item = self.staged.popleft()
            stream = item.sink.stream
            if stream in self.failed:
                continue  # nothing after a failure is committed
            if stream in blocked or item.batch > self.logged.get(stream, -1):
                blocked.add(stream)
                kept.append(item)
                continue
            try:
                self._write(item)
            except SinkError as exc:
                self.failed[stream] = exc
                failures.append((item.group, exc))
            except Exception as exc:  # a sink that does not follow the protocol
                error = SinkError(
                    str(getattr(item.sink.sink, "name", type(item.sink.sink).__name__)),
                    f"{type(exc).__name__}: {exc}",
                    partition=item.partition,
                    batch=item.batch,
                )
                self.failed[stream] = error
                failures.append((item.group, error))
        self.staged = kept
        return failures

    def _write(self, item: Staged) -> None:
        key = (item.sink.node_id, item.partition)
        writer = self.writers.get(key)
        if writer is None:
            writer = self.writers[key] = item.sink.sink.writer(item.sink.stream, item.partition)
        if writer.write(item.batch, item.records):
            self.committed += 1
        else:
            self.skipped += 1

    def pending(self, group: int) -> bool:
        """Whether batches of ``group`` still wait to be committed."""
        return any(item.group == group for item in self.staged)

    def waiting_streams(self, group: int) -> dict[str, int]:
        """Per stream, the highest batch of ``group`` still waiting (for error messages)."""
        out: dict[str, int] = {}
        for item in self.staged:
            if item.group == group:
                out[item.sink.stream] = max(out.get(item.sink.stream, -1), item.batch)
        return out

    def cancel(self, groups: set[int]) -> None:
        """These groups were cancelled: their batches are replayed, not committed from here."""
        self.staged = deque(item for item in self.staged if item.group not in groups)

    def release(self, node_ids: list[int]) -> None:
        """The streams are gone: close their writers."""
        ids = set(node_ids)
        for key in [k for k in self.writers if k[0] in ids]:
            writer = self.writers.pop(key)
            try:
                writer.close()
            except Exception:  # a writer that cannot close is still dropped
                pass
