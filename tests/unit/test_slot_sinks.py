"""The slots' sink stage, by plain calls (adrizzle.worker.slot_sinks)."""

from __future__ import annotations

from typing import Any

from adrizzle.errors import SinkError
from adrizzle.plan.offsets import WorkerSink
from adrizzle.worker.slot_sinks import SinkStage


class Writer:
    def __init__(self, log: list[tuple[str, int, int, list[Any]]], stream: str, p: int) -> None:
        self.log, self.stream, self.p = log, stream, p
        self.last = -1
        self.fail_at: int | None = None

    def write(self, batch: int, records: list[Any]) -> bool:
        if batch == self.fail_at:
            raise SinkError("memory", "disk full", partition=self.p, batch=batch)
        if batch <= self.last:
            return False
        self.last = batch
        self.log.append((self.stream, self.p, batch, records))
        return True

    def committed(self) -> int | None:
        return self.last if self.last >= 0 else None

    def close(self) -> None:
        pass


class MemorySink:
    name = "memory"

    def __init__(self) -> None:
        self.log: list[tuple[str, int, int, list[Any]]] = []
        self.writers: dict[tuple[str, int], Writer] = {}

    def writer(self, stream: str, partition: int) -> Writer:
        w = self.writers[(stream, partition)] = Writer(self.log, stream, partition)
        return w


def test_batches_wait_for_the_drivers_watermark_and_commit_in_order() -> None:
    sink = MemorySink()
    ws = WorkerSink(1, "s", sink, first_batch=0)
    stage = SinkStage()
    stage.stage(7, ws, 0, 0, ["a"])
    stage.stage(7, ws, 1, 0, ["b"])
    assert stage.commit_ready() == []
    assert sink.log == []  # nothing is logged yet: nothing is committed
    assert stage.pending(7)
    assert stage.confirm("s", 0) == []
    assert sink.log == [("s", 0, 0, ["a"])]
    stage.confirm("s", 5)
    assert [b for _s, _p, b, _r in sink.log] == [0, 1]
    assert not stage.pending(7)


def test_a_batch_staged_after_its_notice_commits_at_once() -> None:
    sink = MemorySink()
    ws = WorkerSink(1, "s", sink, first_batch=0)
    stage = SinkStage()
    stage.confirm("s", 3)  # a replay: the driver logged these batches before they were staged
    stage.stage(1, ws, 2, 0, ["x"])
    assert stage.commit_ready() == []
    assert sink.log == [("s", 0, 2, ["x"])]


def test_a_replayed_batch_is_skipped_and_a_failure_stops_that_stream() -> None:
    sink = MemorySink()
    ws = WorkerSink(1, "s", sink, first_batch=0)
    stage = SinkStage()
    stage.confirm("s", 10)
    stage.stage(1, ws, 0, 0, ["a"])
    stage.commit_ready()
    stage.stage(2, ws, 0, 0, ["a"])  # replayed: the writer's progress has it
    assert stage.commit_ready() == []
    assert (stage.committed, stage.skipped) == (1, 1)
    sink.writers[("s", 0)].fail_at = 1
    stage.stage(3, ws, 1, 0, ["b"])
    stage.stage(3, ws, 2, 0, ["c"])
    [(group, error)] = stage.commit_ready()
    assert group == 3
    assert error.batch == 1
    assert [b for _s, _p, b, _r in sink.log] == [0]  # nothing after the failure
    assert stage.commit_ready() == []


def test_cancelled_groups_are_not_committed_from_here() -> None:
    sink = MemorySink()
    ws = WorkerSink(1, "s", sink, first_batch=0)
    stage = SinkStage()
    stage.stage(4, ws, 0, 0, ["a"])
    stage.cancel({4})
    stage.confirm("s", 0)
    assert sink.log == []
