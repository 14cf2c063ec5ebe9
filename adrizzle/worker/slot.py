"""A slot: one long-lived CPU process of a worker, fed over its own socketpair.

The slot is the only place user closures and data are unpickled on a worker (the worker process
forwards payload bytes untouched). It keeps the block store (shipped source partitions and cached
results pinned to it) and the shuffle inbox, derives its tasks from a group's placement, and runs
them in order: lower batch first, and within a batch stage by stage, so a reduce runs before the
next batch's maps and no slot ever waits on a task that waits on it. Map tasks push one block set
per reducer slot; a reduce task starts when every map output it needs has arrived (or fails after
``shuffle_timeout``). Each micro-batch's values go back as soon as that batch is done.
"""

from __future__ import annotations

import argparse
import collections
import os
import pickle
import select
import signal
import socket
import threading
import time
from typing import Any

import cloudpickle

from adrizzle.api.program import (
    BlockStore,
    JobProgram,
    ShuffleRead,
    StageProgram,
    StateStore,
    TaskFailure,
    restore_states,
)
from adrizzle.wire.framing import FrameDecoder, FrameLimits, encode_frame
from adrizzle.wire.messages import (
    BatchResult,
    CancelGroups,
    GroupFailed,
    MapOutputReady,
    RunTasks,
    Shutdown,
    SlotDone,
    SlotReady,
    StateCheckpoint,
    decode_meta,
    encode_meta,
)

TRUSTED_LIMITS = FrameLimits(max_meta=1 << 24, max_payload=1 << 34)


class UpstreamFailure(Exception):
    """A map task this task depends on failed; carries that original failure."""

    def __init__(self, failure: TaskFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class WorkerGone(Exception):
    """The worker closed our socket (or asked us to shut down)."""


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
                self._group, self._parts = msg, parts
                self._deadline = now + linger
                if not send_now:
                    self._cond.notify()  # start the linger clock
            self._jobs.append(job)
            self._failed.append(failed)
            self._values.append(values)
            if send_now or now >= self._deadline:
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
        if not self._jobs:
            return
        assert self._group is not None
        payload, replaced = _dump_values(self._values)
        failed = [f + r for f, r in zip(self._failed, replaced, strict=True)]
        result = BatchResult(
            group=self._group.group, jobs=self._jobs, parts=self._parts, failed=failed
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


class SlotProcess:
    def __init__(
        self, sock: socket.socket, shuffle_timeout: float, max_block_bytes: int = 1 << 30
    ) -> None:
        self.sock = sock
        self.shuffle_timeout = shuffle_timeout
        # Map outputs bigger than the data port's frame cap go out in pieces of this size.
        self.max_block_bytes = max(1, max_block_bytes)
        # (job, shuffle, map partition, reducer slot) -> chunks of a split map output so far
        self.partial: dict[tuple[int, int, int, int, int], dict[int, bytes]] = {}
        self.pushed_blocks = 0  # map output frames sent to other slots (this group)
        self.pushed_bytes = 0
        self.decoder = FrameDecoder(TRUSTED_LIMITS)
        self.sender = ResultSender(sock)
        self.store: BlockStore = {}
        # Per-partition state of stateful steps (streams), kept across groups like the store.
        self.states: StateStore = {}
        self.queue: collections.deque[tuple[RunTasks, bytes]] = collections.deque()
        # (group, job, shuffle stage, reduce partition) -> {map partition: block}. The group
        # id is the attempt: a re-run after a worker loss never mixes with the old outputs.
        self.inbox: dict[tuple[int, int, int, int], dict[int, Any]] = {}
        self.cancelled: set[int] = set()

    def serve(self) -> None:
        self.sender.send(encode_frame(encode_meta(SlotReady(pid=os.getpid()))))
        while True:
            while self.queue:
                self.run_group(*self.queue.popleft())
            self.receive(None)

    def receive(self, timeout: float | None) -> None:
        """Wait up to ``timeout`` s for frames and file them (tasks queue, blocks inbox)."""
        if timeout is not None:
            ready, _w, _x = select.select([self.sock], [], [], max(timeout, 0.0))
            if not ready:
                return
        data = self.sock.recv(1 << 20)
        if not data:
            raise WorkerGone
        for meta, payload in self.decoder.feed(data):
            msg = decode_meta(meta)
            if isinstance(msg, RunTasks):
                self.queue.append((msg, payload))
            elif isinstance(msg, MapOutputReady):
                if msg.group in self.cancelled:
                    continue
                if msg.chunks > 1:
                    whole = self.join_chunks(msg, payload)
                    if whole is None:
                        continue
                    payload = whole
                blocks = pickle.loads(payload)
                self.file_blocks(msg.group, msg.job, msg.shuffle, msg.map_part, blocks)
            elif isinstance(msg, CancelGroups):
                self.cancel(msg.groups)
            elif isinstance(msg, Shutdown):
                raise WorkerGone

    def join_chunks(self, msg: MapOutputReady, payload: bytes) -> bytes | None:
        """File one piece of a split map output; the whole payload once every piece is in."""
        key = (msg.group, msg.job, msg.shuffle, msg.map_part, msg.slot)
        pieces = self.partial.setdefault(key, {})
        pieces[msg.chunk] = payload
        if len(pieces) < msg.chunks:
            return None
        del self.partial[key]
        return b"".join(pieces[i] for i in range(msg.chunks))

    def file_blocks(
        self, group: int, job: int, shuffle: int, map_part: int, blocks: dict[int, Any]
    ) -> None:
        for reduce_part, block in blocks.items():
            self.inbox.setdefault((group, job, shuffle, reduce_part), {})[map_part] = block

    def cancel(self, groups: list[int]) -> None:
        """Drop these groups: queued, running (at its next wait) and their map outputs."""
        self.cancelled.update(groups)
        if len(self.cancelled) > 10_000:  # ids only grow: old ones can no longer arrive
            self.cancelled = set(sorted(self.cancelled)[-1000:])
        kept: collections.deque[tuple[RunTasks, bytes]] = collections.deque()
        for run, payload in self.queue:
            if run.group not in self.cancelled:
                kept.append((run, payload))
            elif len(payload) - run.state_len > run.program_len:
                # The driver counts source blocks as shipped once sent: keep them. (State to
                # restore is dropped: whoever cancelled the group restores it again.)
                try:
                    data = memoryview(payload)[run.program_len : len(payload) - run.state_len]
                    self.store.update(pickle.loads(data))
                except Exception:
                    pass  # reported when a task needs the block
        self.queue = kept
        for key in [k for k in self.inbox if k[0] in self.cancelled]:
            del self.inbox[key]
        for chunk_key in [k for k in self.partial if k[0] in self.cancelled]:
            del self.partial[chunk_key]

    # -- running a group -------------------------------------------------------------------

    def run_group(self, msg: RunTasks, payload: bytes) -> None:
        """Run this slot's tasks of a group by priority: lower batch first, then stage order;
        a reduce waiting for map outputs lets later ready tasks (the next batch's maps) run."""
        started = time.perf_counter()
        self.pushed_blocks = self.pushed_bytes = 0
        for node_id in msg.release:
            for key in [k for k in self.store if k[0] == node_id]:
                del self.store[key]
            for state_key in [k for k in self.states if k[0] == node_id]:
                del self.states[state_key]
        view = memoryview(payload)
        try:
            # Data first: the driver counts it as shipped, so a bad program must not lose it.
            what = "source data"
            data_end = len(payload) - msg.state_len
            if data_end > msg.program_len:
                self.store.update(pickle.loads(view[msg.program_len : data_end]))
            what = "stream state"
            if msg.state_len:
                state_ids, cells = pickle.loads(view[data_end:])
                restore_states(self.states, state_ids, cells)
            what = "program"
            programs: list[JobProgram] = pickle.loads(view[: msg.program_len])
        except Exception as exc:  # e.g. a function pickled by reference to a missing module
            reason = (
                f"worker {msg.worker} slot {msg.slot} cannot load the {what} of jobs "
                f"{msg.first_job}..{msg.last_job - 1}: {type(exc).__name__}: {exc}"
            )
            if isinstance(exc, ImportError):
                reason += (
                    " (functions from modules the workers cannot import are pickled by "
                    "reference; install the module on the workers or define the function in "
                    "__main__ or with cloudpickle.register_pickle_by_value)"
                )
            notice = GroupFailed(msg.group, msg.worker, msg.slot, reason)
            self.sender.send(encode_frame(encode_meta(notice)))
            self.sender.finish_group(msg.group, 0, 0, 0, self.sender.unpicklable)
            return
        n = len(msg.placement_slots)
        me = (msg.worker, msg.slot)
        mine = [
            i
            for i, ref in enumerate(zip(msg.placement_workers, msg.placement_slots, strict=True))
            if ref == me
        ]
        pending: list[tuple[int, int, int]] = []  # (job, stage, partition) in priority order
        results: dict[int, dict[int, Any]] = {}  # job -> result partition -> value
        result_parts: list[int] = []
        for job in range(msg.first_job, msg.last_job):
            program = programs[job - msg.first_job]
            for stage_index in msg.stages:
                stage = program.stages[stage_index]
                parts = sorted(p for i in mine for p in range(i, stage.partitions, n))
                pending += [(job, stage_index, p) for p in parts]
                if stage.output is None and parts:
                    results[job] = {}
                    result_parts = parts
        result_jobs_left = len(results)
        tasks = len(pending)
        failed_total = 0
        unpicklable_before = self.sender.unpicklable
        stuck_since: float | None = None
        waited = 0.0  # time spent waiting for stream data to be due: not busy
        while pending:
            index = next((i for i, t in enumerate(pending) if self.ready(programs, msg, t)), -1)
            if index < 0:
                due_in = self.due_in(programs, msg, pending)
                if due_in is not None:  # waiting for data to exist is not being stuck
                    stuck_since = None
                    wait_from = time.perf_counter()
                    self.receive(min(due_in, self.shuffle_timeout))
                    waited += time.perf_counter() - wait_from
                    if msg.group in self.cancelled:
                        return
                    continue
                now = time.monotonic()
                stuck_since = stuck_since or now
                if now - stuck_since >= self.shuffle_timeout:
                    index = 0  # give up on the head task: inputs() raises the timeout error
                else:
                    self.receive(self.shuffle_timeout - (now - stuck_since))
                    if msg.group in self.cancelled:
                        return  # a worker was lost: the driver re-runs these jobs
                    continue
            stuck_since = None
            job, stage_index, p = pending.pop(index)
            program = programs[job - msg.first_job]
            stage = program.stages[stage_index]
            if stage.output is not None:
                self.run_map_task(msg, job, stage_index, stage, p)
                continue
            results[job][p] = self.run_result_task(msg.group, job, program, stage, p)
            if len(results[job]) == len(result_parts):
                done = results.pop(job)
                values = [done[q] for q in result_parts]
                failed = sum(isinstance(v, TaskFailure) for v in values)
                failed_total += failed
                result_jobs_left -= 1
                self.sender.add(msg, result_parts, job, values, failed, result_jobs_left == 0)
        if msg.checkpoint:
            self.send_checkpoint(msg)
        busy_us = int((time.perf_counter() - started - waited) * 1e6)
        self.sender.finish_group(
            msg.group,
            tasks,
            failed_total,
            busy_us,
            unpicklable_before,
            (self.pushed_blocks, self.pushed_bytes),
        )

    def send_checkpoint(self, msg: RunTasks) -> None:
        """Send the stream state changed since the last checkpoint (DESIGN.md section 7)."""
        changed = {key: cell for key, cell in self.states.items() if cell.dirty}
        if not changed:
            return
        try:
            payload = bytes(cloudpickle.dumps(changed))
        except Exception as exc:
            reason = (
                f"worker {msg.worker} slot {msg.slot} cannot checkpoint the stream state of "
                f"jobs {msg.first_job}..{msg.last_job - 1} (states must be picklable): "
                f"{type(exc).__name__}: {exc}"
            )
            self.sender.send(
                encode_frame(encode_meta(GroupFailed(msg.group, msg.worker, msg.slot, reason)))
            )
            return
        group = msg.group
        for cell in changed.values():
            cell.dirty = False
        notice = StateCheckpoint(
            group=group,
            slot=msg.slot,
            keys=[list(key) for key in changed],
            batches=[cell.batch for cell in changed.values()],
        )
        self.sender.send(encode_frame(encode_meta(notice), payload))

    def ready(self, programs: list[JobProgram], msg: RunTasks, task: tuple[int, int, int]) -> bool:
        job, stage_index, p = task
        read = programs[job - msg.first_job].stages[stage_index].input
        if not isinstance(read, ShuffleRead):
            due = read.ready_at(job)
            return due is None or due <= time.time()
        inbox, group = self.inbox, msg.group
        return all(len(inbox.get((group, job, s, p), ())) >= maps for s, maps in read.shuffles)

    def due_in(
        self, programs: list[JobProgram], msg: RunTasks, pending: list[tuple[int, int, int]]
    ) -> float | None:
        """Seconds until the earliest pending source task's data is due, if one waits for it."""
        due = None
        for job, stage_index, _p in pending:
            read = programs[job - msg.first_job].stages[stage_index].input
            at = None if isinstance(read, ShuffleRead) else read.ready_at(job)
            if at is not None and (due is None or at < due):
                due = at
        return None if due is None else max(0.0, due - time.time())

    def run_result_task(
        self, group: int, job: int, program: JobProgram, stage: StageProgram, p: int
    ) -> Any:
        try:
            inputs = self.inputs(group, job, stage, p)
            return program.action(stage.compute(p, self.store, inputs, self.states, job))
        except UpstreamFailure as exc:
            return exc.failure
        except WorkerGone:
            raise
        except Exception as exc:
            return TaskFailure.capture(exc)

    def run_map_task(
        self, msg: RunTasks, job: int, stage_index: int, stage: StageProgram, p: int
    ) -> None:
        assert stage.output is not None
        try:
            blocks: list[Any] = stage.output.split(
                stage.compute(
                    p, self.store, self.inputs(msg.group, job, stage, p), self.states, job
                )
            )
        except UpstreamFailure as exc:
            blocks = [exc.failure] * stage.output.partitions
        except WorkerGone:
            raise
        except Exception as exc:  # reducers get the failure instead of data, and fail fast
            blocks = [TaskFailure.capture(exc)] * stage.output.partitions
        n = len(msg.placement_slots)
        by_slot: dict[int, dict[int, Any]] = {}
        for r in range(stage.output.partitions):
            by_slot.setdefault(r % n, {})[r] = blocks[r]
        for index, reduce_blocks in by_slot.items():
            worker, slot = msg.placement_workers[index], msg.placement_slots[index]
            if not msg.hold and (worker, slot) == (msg.worker, msg.slot):
                self.file_blocks(msg.group, job, stage_index, p, reduce_blocks)  # stays here
                continue
            payload = cloudpickle.dumps(reduce_blocks)
            size = self.max_block_bytes
            chunks = max(1, -(-len(payload) // size))
            self.pushed_blocks += 1
            self.pushed_bytes += len(payload)
            for chunk in range(chunks):
                notice = MapOutputReady(
                    group=msg.group,
                    job=job,
                    shuffle=stage_index,
                    map_part=p,
                    worker=worker,
                    slot=slot,
                    reduce_parts=sorted(reduce_blocks),
                    hold=msg.hold,
                    chunk=chunk,
                    chunks=chunks,
                )
                piece = payload if chunks == 1 else payload[chunk * size : (chunk + 1) * size]
                self.sender.send(encode_frame(encode_meta(notice), piece))

    def inputs(self, group: int, job: int, stage: StageProgram, p: int) -> Any:
        """The shuffle read for a reduce task, once every map output it needs is here."""
        read = stage.input
        if not isinstance(read, ShuffleRead):
            return None
        per_shuffle: list[list[Any]] = []
        for shuffle, maps in read.shuffles:
            key = (group, job, shuffle, p)
            if len(self.inbox.get(key, ())) < maps:
                have = sorted(self.inbox.pop(key, {}))
                missing = sorted(set(range(maps)) - set(have))
                raise TimeoutError(
                    f"reduce task (job {job}, partition {p}) waited {self.shuffle_timeout:g} s "
                    f"for the outputs of stage {shuffle}: {len(have)} of {maps} map outputs "
                    f"arrived, missing map partitions {missing[:10]}"
                )
            arrived = self.inbox.pop(key)
            blocks = [arrived[m] for m in range(maps)]
            per_shuffle.append(blocks)
        for blocks in per_shuffle:
            for block in blocks:
                if isinstance(block, TaskFailure):
                    raise UpstreamFailure(block)
        return read.read(per_shuffle)


def _ignore_signal(signum: int, frame: object) -> None:
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adrizzle.worker.slot")
    parser.add_argument("fd", type=int)
    parser.add_argument("--shuffle-timeout", type=float, default=60.0)
    parser.add_argument("--max-block-bytes", type=int, default=1 << 30)
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group; the worker decides when its slots stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # So does SIGTERM from managers that signal every process of a job or unit (SLURM's
    # scancel, systemd's stop): it must drain the worker, not kill the slots under it. A
    # handler, not SIG_IGN, so that programs a task starts get the default back at exec.
    signal.signal(signal.SIGTERM, _ignore_signal)
    sock = socket.socket(fileno=args.fd)
    try:
        SlotProcess(sock, args.shuffle_timeout, args.max_block_bytes).serve()
    except (WorkerGone, BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
