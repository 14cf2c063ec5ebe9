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


def _dump_values(values: list[Any]) -> tuple[bytes, int]:
    """Pickle a batch's values; a value that cannot be pickled becomes a ``TaskFailure``.

    Returns the bytes and how many values had to be replaced.
    """
    try:
        return bytes(cloudpickle.dumps(values)), 0
    except Exception:
        pass
    out: list[Any] = []
    replaced = 0
    for v in values:  # find the offending values; keep the rest
        try:
            cloudpickle.dumps(v)
            out.append(v)
        except Exception as exc:
            replaced += 1
            out.append(
                TaskFailure(
                    "SerializationError",
                    f"cannot pickle the task's result of type {type(v).__name__}: {exc}",
                    "",
                )
            )
    return bytes(cloudpickle.dumps(out)), replaced


def run_group(sock: socket.socket, msg: RunTasks, payload: bytes, store: BlockStore) -> None:
    started = time.perf_counter()
    for node_id in msg.release:
        for key in [k for k in store if k[0] == node_id]:
            del store[key]
    view = memoryview(payload)
    programs: list[StageProgram] = pickle.loads(view[: msg.program_len])
    if len(payload) > msg.program_len:
        store.update(pickle.loads(view[msg.program_len :]))
    tasks = failed_total = 0
    for job, values, failed in run_tasks(
        programs, range(msg.first_job, msg.last_job), msg.parts, store
    ):
        payload_out, unpicklable = _dump_values(values)
        failed += unpicklable
        result = BatchResult(group=msg.group, job=job, parts=msg.parts, failed=failed)
        sock.sendall(encode_frame(encode_meta(result), payload_out))
        tasks += len(values)
        failed_total += failed
    busy_us = int((time.perf_counter() - started) * 1e6)
    done = SlotDone(group=msg.group, tasks=tasks, failed=failed_total, busy_us=busy_us)
    sock.sendall(encode_frame(encode_meta(done)))


def serve(sock: socket.socket) -> None:
    decoder = FrameDecoder(TRUSTED_LIMITS)
    store: BlockStore = {}
    sock.sendall(encode_frame(encode_meta(SlotReady(pid=os.getpid()))))
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return  # the worker went away
        for meta, payload in decoder.feed(data):
            msg = decode_meta(meta)
            if isinstance(msg, RunTasks):
                run_group(sock, msg, payload, store)
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
