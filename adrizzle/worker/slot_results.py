"""How a slot sends what it produces: finished micro-batches and pushed map outputs, packed.

All writes to the slot's socket go through ``ResultSender``, under one lock: the main thread runs
tasks, and a small thread flushes what waited for the linger time.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from adrizzle.plan.failure import TaskFailure
from adrizzle.plan.serialize import dumps
from adrizzle.wire.framing import encode_frame
from adrizzle.wire.messages import (
    BatchResult,
    GroupDone,
    MapOutputs,
    RunTasks,
    SlotDone,
    encode_meta,
)

if TYPE_CHECKING:
    import socket


def dump_values(values: list[Any], batches: int) -> tuple[bytes, list[int]]:
    """Pickle ``batches`` batches' values, flat: one list, each batch's values in turn (a list
    per batch made the pickle ~3x slower to write and to read: 7.3 vs 2.2 µs and 14.0 vs
    4.9 µs for 100 batches of 2 ints, measured here). A value that cannot be pickled becomes
    a ``TaskFailure``. Returns the bytes and, per batch, how many values had to be replaced.
    """
    try:
        return dumps(values), [0] * batches
    except Exception:
        pass
    per_batch = len(values) // batches if batches else 1
    kept: list[Any] = []
    replaced = [0] * batches
    for i, v in enumerate(values):  # find the offending values; keep the rest
        try:
            dumps(v)
            kept.append(v)
        except Exception as exc:
            kept.append(
                TaskFailure(
                    "SerializationError",
                    f"cannot pickle the task's result of type {type(v).__name__}: {exc}",
                    "",
                )
            )
            replaced[i // per_batch] += 1
    return dumps(kept), replaced


def takes_link(msg: RunTasks) -> bool:
    """Whether a group's frames for the driver may take the slot's result link. A worker's
    acknowledgement must reach the driver behind all of its results and checkpoints on one
    ordered connection: the slot's link when this slot runs the worker's whole share of the
    group (``msg.slots == 1``), else the worker's own connection, which assembles its slots'
    parts. A group whose map outputs are held on the worker for BSP fetches also goes through
    the worker: it must have filed them before the driver sees the acknowledgement
    (docs/architecture.md, "Result links")."""
    return msg.slots == 1 and not msg.hold


# Pushed map outputs for one destination are sent once this many bytes wait (or sooner).
PUSH_BUNDLE_BYTES = 1 << 20


class _Bundle:
    """Map outputs of one group waiting for one reducer slot."""

    __slots__ = ("outputs", "payloads", "size")

    def __init__(self) -> None:
        self.outputs: list[list[int]] = []  # [job, shuffle, map_part, length]
        self.payloads: list[bytes] = []
        self.size = 0


class ResultSender:
    """Sends finished micro-batches and pre-scheduled map outputs by readiness: the slot
    keeps what it finished while it has more ready work and sends it together when it runs
    out (``flush``: before it waits for data that is not due or for map outputs, and with the
    group's ``slot_done`` in one write). A group of many small batches then costs a frame or
    two per slot, on any machine speed, while a paced stream (next batch not due yet) still
    sends each batch at once.

    Map outputs pushed to other slots (``push``) wait the same way and leave as one
    ``map_outputs`` frame per destination slot, so a group's shuffle costs a frame or two per
    destination instead of one per map task; pushes go before results in every flush.

    Nothing waits longer than about ``linger`` (the run's ``result_linger``) behind another
    task: a small clock thread (``before_task``) sends it then, so a slow batch never holds
    back the finished ones before it (a CPU-bound task holding the GIL can delay that by one
    switch interval; an arming the clock sees at its next tick, by up to one more linger).
    All writes to the socket go through here, under one lock.
    """

    def __init__(self, sock: socket.socket, bundle_bytes: int = PUSH_BUNDLE_BYTES) -> None:
        self._sock = sock
        self._bundle_bytes = bundle_bytes
        # (group, worker, slot) -> outputs waiting for that reducer slot
        self._pushes: dict[tuple[int, str, int], _Bundle] = {}
        # A plain lock (its ``with`` is C code, a Condition's is Python: per micro-batch that
        # was ~0.3 µs of ``add``).
        self._lock = threading.Lock()
        self._wake = threading.Lock()  # locked; before_task releases it to wake the parked clock
        self._wake.acquire()
        self._group: RunTasks | None = None
        self._parts: list[int] = []
        self._jobs: list[int] = []
        self._failed: list[int] = []
        self._values: list[Any] = []  # flat: each job's values for ``_parts`` in turn
        self._positions: list[list[Any]] = []  # connector reads: [job, partition, start, end]
        self._deadline = 0.0
        self._linger = 0.0
        self._armed = False  # something waits behind a running task: the clock times it
        self._ticking = False  # the clock thread is awake (timed waits), not parked
        self.unpicklable = 0
        self.link: socket.socket | None = None  # the result link, once open (slot_link)
        self._via_link = False  # the running group's frames for the driver take the link
        threading.Thread(target=self._linger_clock, name="result-sender", daemon=True).start()

    def _empty(self) -> bool:
        return not self._jobs and not self._positions and not self._pushes

    def _pending(self, msg: RunTasks) -> None:
        """Something is about to wait to be sent: start the clock if nothing waited."""
        if self._empty():
            self._group = msg
            self._linger = msg.linger_us / 1e6
            self._deadline = time.monotonic() + self._linger

    def before_task(self) -> None:
        """The slot is about to run another task: what waits now waits behind it, so the
        clock times it. Waking the clock thread is what costs (a slot's CPU per micro-batch
        at G=10 went 53 -> 65 us when it was woken for every group, measured here), so it
        is woken only when parked: it stays awake, ticking at the linger time, while
        arming keeps coming, and parks after a tick with nothing to time. A batch the slot
        flushes as soon as it runs out of work (every batch at G=1) never needs it."""
        if not (self._jobs or self._positions or self._pushes):  # _empty(), inlined: per task
            return
        self._armed = True  # a plain store: an awake clock sees it at its next tick
        if not self._ticking:
            self._ticking = True
            try:
                self._wake.release()
            except RuntimeError:
                pass  # already released: the clock saw the arming while it parked

    def add(
        self, msg: RunTasks, parts: list[int], job: int, values: list[Any], failed: int
    ) -> None:
        """A finished micro-batch's values for ``parts`` (sent at the next ``flush``)."""
        with self._lock:
            if not self._jobs and not self._positions and not self._pushes:  # _pending, inlined
                self._pending(msg)
            self._parts = parts
            self._jobs.append(job)
            self._failed.append(failed)
            self._values += values

    def add_positions(self, msg: RunTasks, reads: list[list[Any]]) -> None:
        """Connector reads of this group, sent with the results: the driver logs a batch once
        every source partition's range is in."""
        with self._lock:
            self._pending(msg)
            self._positions += reads

    def push(
        self, msg: RunTasks, worker: str, slot: int, output: tuple[int, int, int], payload: bytes
    ) -> None:
        """A map output (``output``: job, shuffle stage, map partition; ``payload``: pickled
        ``{reduce_part: block}``) for the reducer slot ``slot`` of ``worker``."""
        with self._lock:
            key = (msg.group, worker, slot)
            bundle = self._pushes.get(key)
            if bundle is not None and bundle.size + len(payload) > self._bundle_bytes:
                self._sock.sendall(self._push_frame(key, self._pushes.pop(key)))
                bundle = None
            if bundle is None:
                self._pending(msg)
                bundle = self._pushes[key] = _Bundle()
            bundle.outputs.append([*output, len(payload)])
            bundle.payloads.append(payload)
            bundle.size += len(payload)

    def route(self, msg: RunTasks) -> None:
        """Where ``msg``'s frames for the driver go (called before the group runs, when
        nothing waits): over the result link if the slot has one and ``takes_link(msg)``."""
        with self._lock:
            self._via_link = self.link is not None and takes_link(msg)

    def flush(self) -> None:
        """Send what waits (the slot ran out of ready work)."""
        with self._lock:
            self._write(*self._frames())

    def send(self, frame: bytes) -> None:
        """A frame for the worker process."""
        with self._lock:
            self._sock.sendall(frame)

    def send_driver(self, frame: bytes) -> None:
        """A frame for the driver (a checkpoint, a failure notice): the group's route."""
        with self._lock:
            self._write(b"", frame)

    def finish_group(
        self,
        group: int,
        tasks: int,
        failed: int,
        busy_us: int,
        unpicklable_before: int,
        pushed: tuple[int, int] = (0, 0),
        of: int = 1,
    ) -> None:
        """The group's last results and its acknowledgement, in one write: the worker's
        ``group_done`` over the link, else this slot's ``slot_done`` (one of ``of``)."""
        with self._lock:
            pushes, results = self._frames()
            failed += self.unpicklable - unpicklable_before
            fields = (group, tasks, failed, busy_us, pushed[0], pushed[1])
            done = GroupDone(*fields) if self._via_link else SlotDone(*fields, of)
            self._write(pushes, results + encode_frame(encode_meta(done)))

    def _write(self, pushes: bytes, results: bytes) -> None:
        """Map outputs to the worker; results to the driver by this group's route (one write
        when both go to the worker). Called under the lock."""
        if self._via_link:
            assert self.link is not None
            if pushes:
                self._sock.sendall(pushes)
            if results:
                self.link.sendall(results)
        elif pushes or results:
            self._sock.sendall(pushes + results)

    @staticmethod
    def _push_frame(key: tuple[int, str, int], bundle: _Bundle) -> bytes:
        group, worker, slot = key
        meta = encode_meta(MapOutputs(group, worker, slot, bundle.outputs))
        return encode_frame(meta, b"".join(bundle.payloads))

    def _frames(self) -> tuple[bytes, bytes]:
        """Everything waiting: pushed map outputs and results (b"" when none waits)."""
        pushes = b"".join([self._push_frame(key, b) for key, b in self._pushes.items()])
        self._pushes.clear()
        return pushes, self._frame()

    def _frame(self) -> bytes:
        """The waiting results as one ``batch_result`` frame (b"" when nothing waits)."""
        if not self._jobs and not self._positions:
            return b""
        assert self._group is not None
        payload, replaced = dump_values(self._values, len(self._jobs))
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
        return encode_frame(encode_meta(result), payload)

    def _linger_clock(self) -> None:
        """Parked on ``_wake`` until ``before_task`` arms it; awake, it sleeps to the deadline
        of what waits and sends it if it still waits then. It reads the state without the
        lock (plain attributes) and takes the lock only to send: each tick costs the slot a
        GIL hand-off, and a tick that also waited for the lock (while ``add`` held it) cost
        more (a slot's CPU per micro-batch at G=100, measured here: docs/architecture.md)."""
        while True:
            if not self._ticking:
                self._wake.acquire()  # parked
                continue
            if self._armed and not self._empty():
                left = self._deadline - time.monotonic()
                if left > 0:
                    time.sleep(left)
                    continue
                with self._lock:
                    if self._armed and not self._empty() and time.monotonic() >= self._deadline:
                        self._armed = False
                        try:
                            self._write(*self._frames())
                        except OSError:
                            return  # the worker is gone; the main thread notices on its next recv
                continue
            self._armed = False
            time.sleep(max(self._linger, 0.001))
            if not self._armed:  # a whole tick with nothing to time: park
                self._ticking = False
                if self._armed:  # armed while parking: before_task may not have seen it
                    self._ticking = True
