"""A slot: one long-lived CPU process of a worker, fed over its own socketpair.

The slot is the only place user closures and data are unpickled on a worker (the worker process
forwards payload bytes untouched). It keeps the block store (shipped source partitions and cached
results pinned to it) and runs a group's tasks for its partitions in batch order, sending each
micro-batch's values back as soon as that batch is done.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys
import threading
import time
from typing import Any

import cloudpickle

from adrizzle.api.program import BlockStore, StageProgram, TaskFailure, run_tasks
from adrizzle.wire.framing import FrameDecoder, FrameLimits, encode_frame
from adrizzle.wire.messages import (
    BatchResult,
    RunTasks,
    Shutdown,
    SlotDone,
    SlotReady,
    decode_meta,
    encode_meta,
)

TRUSTED_LIMITS = FrameLimits(max_meta=1 << 24, max_payload=1 << 34)


def _dump_values(values: list[list[Any]]) -> tuple[bytes, list[int]]:
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
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._cond = threading.Condition()
        self._group: RunTasks | None = None
        self._jobs: list[int] = []
        self._failed: list[int] = []
        self._values: list[list[Any]] = []
        self._deadline = 0.0
        self.unpicklable = 0
        threading.Thread(target=self._linger_clock, name="result-sender", daemon=True).start()

    def add(self, msg: RunTasks, job: int, values: list[Any], failed: int) -> None:
        with self._cond:
            last_of_group = job == msg.last_job - 1
            if not self._jobs:
                self._group = msg
                self._deadline = time.monotonic() + msg.linger_us / 1e6
                if not last_of_group and msg.linger_us > 0:
                    self._cond.notify()  # start the linger clock only if more will follow
            self._jobs.append(job)
            self._failed.append(failed)
            self._values.append(values)
            if last_of_group or msg.linger_us <= 0 or time.monotonic() >= self._deadline:
                self._flush()

    def send(self, frame: bytes) -> None:
        """Flush what is pending, then send ``frame`` (keeps results before ``slot_done``)."""
        with self._cond:
            self._flush()
            self._sock.sendall(frame)

    def finish_group(
        self, group: int, tasks: int, failed: int, busy_us: int, unpicklable_before: int
    ) -> None:
        """Flush the group's last results, then send its ``slot_done``."""
        with self._cond:
            self._flush()
            failed += self.unpicklable - unpicklable_before
            done = SlotDone(group=group, tasks=tasks, failed=failed, busy_us=busy_us)
            self._sock.sendall(encode_frame(encode_meta(done)))

    def _flush(self) -> None:
        if not self._jobs:
            return
        assert self._group is not None
        payload, replaced = _dump_values(self._values)
        failed = [f + r for f, r in zip(self._failed, replaced, strict=True)]
        result = BatchResult(
            group=self._group.group, jobs=self._jobs, parts=self._group.parts, failed=failed
        )
        self._jobs, self._failed, self._values = [], [], []
        self.unpicklable += sum(replaced)
        self._sock.sendall(encode_frame(encode_meta(result), payload))

    def _linger_clock(self) -> None:
        with self._cond:
            while True:
                if not self._jobs:
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


def run_group(sender: ResultSender, msg: RunTasks, payload: bytes, store: BlockStore) -> None:
    started = time.perf_counter()
    for node_id in msg.release:
        for key in [k for k in store if k[0] == node_id]:
            del store[key]
    view = memoryview(payload)
    programs: list[StageProgram] = pickle.loads(view[: msg.program_len])
    if len(payload) > msg.program_len:
        store.update(pickle.loads(view[msg.program_len :]))
    tasks = failed_total = 0
    unpicklable_before = sender.unpicklable
    for job, values, failed in run_tasks(
        programs, range(msg.first_job, msg.last_job), msg.parts, store
    ):
        sender.add(msg, job, values, failed)
        tasks += len(values)
        failed_total += failed
    busy_us = int((time.perf_counter() - started) * 1e6)
    sender.finish_group(msg.group, tasks, failed_total, busy_us, unpicklable_before)


def serve(sock: socket.socket) -> None:
    decoder = FrameDecoder(TRUSTED_LIMITS)
    store: BlockStore = {}
    sender = ResultSender(sock)
    sender.send(encode_frame(encode_meta(SlotReady(pid=os.getpid()))))
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return  # the worker went away
        for meta, payload in decoder.feed(data):
            msg = decode_meta(meta)
            if isinstance(msg, RunTasks):
                run_group(sender, msg, payload, store)
            elif isinstance(msg, Shutdown):
                return


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # Ctrl-C reaches the whole process group; the worker decides when its slots stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(args[0]))
    try:
        serve(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
