"""How a slot sends its results: finished micro-batches, packed within the linger time.

All writes to the slot's socket go through ``ResultSender``, under one lock: the main thread runs
tasks, and a small thread flushes results that waited for the linger time.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import cloudpickle

from adrizzle.plan.failure import TaskFailure
from adrizzle.wire.framing import encode_frame
from adrizzle.wire.messages import BatchResult, RunTasks, SlotDone, encode_meta

if TYPE_CHECKING:
    import socket


def dump_values(values: list[list[Any]]) -> tuple[bytes, list[int]]:
    """Pickle batches' values; a value that cannot be pickled becomes a ``TaskFailure``.

    Returns the bytes and, per batch, how many values had to be replaced.
    """
    try:
        return bytes(cloudpickle.dumps(values)), [0] * len(values)
    except Exception:
        pass
    out: list[list[Any]] = []
    replaced: list[int] = []
    for batch in values:  # find the offending values; keep the rest
        kept: list[Any] = []
        for v in batch:
            try:
                cloudpickle.dumps(v)
                kept.append(v)
            except Exception as exc:
                kept.append(
                    TaskFailure(
                        "SerializationError",
                        f"cannot pickle the task's result of type {type(v).__name__}: {exc}",
                        "",
                    )
                )
        out.append(kept)
        replaced.append(len(batch) - sum(k is v for k, v in zip(kept, batch, strict=True)))
    return bytes(cloudpickle.dumps(out)), replaced


class ResultSender:
    """Sends finished micro-batches to the worker: at once, or packed within the linger time.

    The linger clock runs in a small thread, so results already done are sent when the linger
    expires even while the next task is still running (a slow batch never holds back the fast
    ones before it). A CPU-bound task holding the GIL can delay that by one switch interval.
    All writes to the socket go through here, under one lock.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._cond = threading.Condition()
        self._group: RunTasks | None = None
        self._parts: list[int] = []
        self._jobs: list[int] = []
        self._failed: list[int] = []
        self._values: list[list[Any]] = []
        self._positions: list[list[Any]] = []  # connector reads: [job, partition, start, end]
        self._deadline = 0.0
        self._last_add = 0.0
        self.unpicklable = 0
        threading.Thread(target=self._linger_clock, name="result-sender", daemon=True).start()

    def add(
        self,
        msg: RunTasks,
        parts: list[int],
        job: int,
        values: list[Any],
        failed: int,
        last_of_group: bool,
    ) -> None:
        with self._cond:
            now = time.monotonic()
            linger = msg.linger_us / 1e6
            # Nothing to pack when this is the group's last batch, or when batches take
            # longer than the linger time (the next one would not make it anyway).
            send_now = last_of_group or now - self._last_add >= linger
            self._last_add = now
            if not self._jobs:
                self._parts = parts
                if not self._positions:
                    self._group = msg
                    self._deadline = now + linger
                    if not send_now:
                        self._cond.notify()  # start the linger clock
            self._jobs.append(job)
            self._failed.append(failed)
            self._values.append(values)
            if send_now or now >= self._deadline:
                self._flush()

    def add_positions(self, msg: RunTasks, reads: list[list[Any]]) -> None:
        """Connector reads of this group, sent with the next results (or alone, within the
        linger time): the driver logs a batch once every source partition's range is in."""
        with self._cond:
            if not self._jobs and not self._positions:
                self._group, self._parts = msg, []
                self._deadline = time.monotonic() + msg.linger_us / 1e6
                self._cond.notify()
            self._positions += reads
            if time.monotonic() >= self._deadline:
                self._flush()

    def send(self, frame: bytes) -> None:
        with self._cond:
            self._sock.sendall(frame)

    def finish_group(
        self,
        group: int,
        tasks: int,
        failed: int,
        busy_us: int,
        unpicklable_before: int,
        pushed: tuple[int, int] = (0, 0),
    ) -> None:
        """Flush the group's last results, then send its ``slot_done``."""
        with self._cond:
            self._flush()
            failed += self.unpicklable - unpicklable_before
            done = SlotDone(group, tasks, failed, busy_us, pushed[0], pushed[1])
            self._sock.sendall(encode_frame(encode_meta(done)))

    def _flush(self) -> None:
        if not self._jobs and not self._positions:
            return
        assert self._group is not None
        payload, replaced = dump_values(self._values)
        failed = [f + r for f, r in zip(self._failed, replaced, strict=True)]
        result = BatchResult(
            group=self._group.group,
            jobs=self._jobs,
            parts=self._parts,
            failed=failed,
            positions=self._positions,
        )
        self._jobs, self._failed, self._values, self._positions = [], [], [], []
        self.unpicklable += sum(replaced)
        self._sock.sendall(encode_frame(encode_meta(result), payload))

    def _linger_clock(self) -> None:
        with self._cond:
            while True:
                if not self._jobs and not self._positions:
                    self._cond.wait()
                    continue
                left = self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                try:
                    self._flush()
                except OSError:
                    return  # the worker is gone; the main thread notices on its next recv
