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
import time
from typing import Any

import cloudpickle

from adrizzle.errors import SinkError
from adrizzle.plan import shared
from adrizzle.plan.failure import TaskFailure
from adrizzle.plan.offsets import SourceIO
from adrizzle.plan.program import (
    BlockStore,
    JobProgram,
    ShuffleRead,
    StageProgram,
)
from adrizzle.plan.state import StateStore, restore_states
from adrizzle.wire.framing import FrameDecoder, FrameLimits, encode_frame
from adrizzle.wire.messages import (
    CancelGroups,
    DropShared,
    GroupFailed,
    MapOutputReady,
    OffsetsLogged,
    PutShared,
    RunTasks,
    Shutdown,
    SinkFailed,
    SlotReady,
    StateCheckpoint,
    decode_meta,
    encode_meta,
)
from adrizzle.worker import slot_shared
from adrizzle.worker.slot_results import ResultSender
from adrizzle.worker.slot_sinks import SinkStage
from adrizzle.worker.slot_tasks import Inbox, Task, due_in, is_ready, next_ready, tasks_for

TRUSTED_LIMITS = FrameLimits(max_meta=1 << 24, max_payload=1 << 34)


class UpstreamFailure(Exception):
    """A map task this task depends on failed; carries that original failure."""

    def __init__(self, failure: TaskFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class WorkerGone(Exception):
    """The worker closed our socket (or asked us to shut down)."""


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
        self.inbox: Inbox = {}  # shuffle blocks by attempt (see slot_tasks.Inbox)
        self.cancelled: set[int] = set()
        self.io = SourceIO()  # connector readers, kept across groups
        self.sinks = SinkStage()  # sink writers and the outputs waiting for offsets_logged

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
            elif isinstance(msg, OffsetsLogged):
                self.sink_failures(self.sinks.confirm(msg.stream, msg.through))
            elif isinstance(msg, CancelGroups):
                self.cancel(msg.groups)
            elif isinstance(msg, (PutShared, DropShared)):  # broadcasts, user code
                slot_shared.receive(msg, payload)
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
        self.sinks.cancel(set(groups))
        for key in [k for k in self.inbox if k[0] in self.cancelled]:
            del self.inbox[key]
        for chunk_key in [k for k in self.partial if k[0] in self.cancelled]:
            del self.partial[chunk_key]

    # -- running a group -------------------------------------------------------------------

    def run_group(self, msg: RunTasks, payload: bytes) -> None:
        """Run this slot's tasks of a group by priority (``slot_tasks``): lower batch first,
        then stage order; a reduce waiting for map outputs lets later ready tasks run."""
        started = time.perf_counter()
        self.pushed_blocks = self.pushed_bytes = 0
        self.release(msg.release)
        programs = self.load(msg, payload)
        if programs is None:
            return
        plan = tasks_for(msg, programs)
        pending = plan.pending
        results: dict[int, dict[int, Any]] = {job: {} for job in plan.result_jobs}
        result_jobs_left = len(results)
        tasks = len(pending)
        failed_total = 0
        unpicklable_before = self.sender.unpicklable
        stuck_since: float | None = None
        waited = 0.0  # time spent waiting for stream data to be due: not busy
        inbox = self.inbox

        def ready(task: Task, now: float) -> bool:
            return is_ready(programs, msg, task, inbox, now)

        while pending:
            now = time.time()
            index = next_ready(
                pending,
                lambda t, now=now: is_ready(programs, msg, t, inbox, now),  # type: ignore[misc]
            )
            if index < 0:
                wait = due_in(programs, msg, pending, now)
                if wait is not None:  # waiting for data to exist is not being stuck
                    stuck_since = None
                    wait_from = time.perf_counter()
                    self.receive(min(wait, self.shuffle_timeout))
                    waited += time.perf_counter() - wait_from
                    if msg.group in self.cancelled:
                        return
                    continue
                mono = time.monotonic()
                stuck_since = stuck_since or mono
                if mono - stuck_since >= self.shuffle_timeout:
                    index = 0  # give up on the head task: inputs() raises the timeout error
                else:
                    self.receive(self.shuffle_timeout - (mono - stuck_since))
                    if msg.group in self.cancelled:
                        return  # a worker was lost: the driver re-runs these jobs
                    continue
            stuck_since = None
            job, stage_index, p = pending.pop(index)
            program = programs[job - msg.first_job]
            stage = program.stages[stage_index]
            if stage.output is not None:
                self.run_map_task(msg, job, stage_index, stage, p)
                if self.io.reads:
                    self.sender.add_positions(msg, self.io.reads)
                    self.io.reads = []
                continue
            results[job][p] = self.run_result_task(msg.group, job, program, stage, p)
            if self.io.reads:
                self.sender.add_positions(msg, self.io.reads)
                self.io.reads = []
            if self.sinks.staged:
                self.receive(0)  # an offsets_logged notice may let staged batches commit
            if len(results[job]) == len(plan.result_parts):
                done = results.pop(job)
                values = [done[q] for q in plan.result_parts]
                failed = sum(isinstance(v, TaskFailure) for v in values)
                failed_total += failed
                result_jobs_left -= 1
                self.sender.add(msg, plan.result_parts, job, values, failed, result_jobs_left == 0)
        if msg.checkpoint:
            self.send_checkpoint(msg)
        self.wait_for_sinks(msg)
        busy_us = int((time.perf_counter() - started - waited) * 1e6)
        self.sender.finish_group(
            msg.group,
            tasks,
            failed_total,
            busy_us,
            unpicklable_before,
            (self.pushed_blocks, self.pushed_bytes),
        )

    def release(self, node_ids: list[int]) -> None:
        """Drop the blocks, state, readers and writers of nodes the driver no longer holds."""
        self.sinks.release(node_ids)
        for node_id in node_ids:
            self.io.release(node_id)
            for key in [k for k in self.store if k[0] == node_id]:
                del self.store[key]
            for state_key in [k for k in self.states if k[0] == node_id]:
                del self.states[state_key]

    def load(self, msg: RunTasks, payload: bytes) -> list[JobProgram] | None:
        """File the group's source data and state to restore, then unpickle its programs;
        None (after telling the driver why) when something cannot be loaded."""
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
            return programs
        except Exception as exc:  # e.g. a function pickled by reference to a missing module
            reason = (
                f"worker {msg.worker} slot {msg.slot} cannot load the {what} of jobs "
                f"{msg.first_job}..{msg.last_job - 1}: {type(exc).__name__}: {exc}"
            )
            if isinstance(exc, ImportError):
                reason += (
                    " (functions from modules the workers cannot import are pickled by "
                    "reference: ship the module with engine.add_module(...) or "
                    "Engine(py_files=[...]), install it on the workers, or use "
                    "cloudpickle.register_pickle_by_value)"
                )
            notice = GroupFailed(msg.group, msg.worker, msg.slot, reason)
            self.sender.send(encode_frame(encode_meta(notice)))
            self.sender.finish_group(msg.group, 0, 0, 0, self.sender.unpicklable)
            return None

    def wait_for_sinks(self, msg: RunTasks) -> None:
        """A group is finished only once its sinks committed: its acknowledgement (and the
        checkpoint it completes) then implies them. The driver logs a batch's offsets as soon
        as its results are in, so this waits about one round trip."""
        deadline = time.monotonic() + self.shuffle_timeout
        while self.sinks.pending(msg.group):
            left = deadline - time.monotonic()
            if left <= 0:
                waiting = self.sinks.waiting_streams(msg.group)
                error = SinkError(
                    "the driver",
                    f"offsets of {waiting} were not confirmed within {self.shuffle_timeout:g} s",
                )
                self.sinks.cancel({msg.group})
                self.sink_failures([(msg.group, error)])
                return
            self.receive(left)
            if msg.group in self.cancelled:
                return

    def sink_failures(self, failures: list[tuple[int, SinkError]]) -> None:
        for group, error in failures:
            notice = SinkFailed(group)
            self.sender.send(encode_frame(encode_meta(notice), pickle.dumps(error)))

    def send_checkpoint(self, msg: RunTasks) -> None:
        """Send the stream state changed since the last checkpoint (docs/architecture.md)."""
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

    def run_result_task(
        self, group: int, job: int, program: JobProgram, stage: StageProgram, p: int
    ) -> Any:
        shared.begin_task()  # accumulator updates travel with the value (plan/shared.py)
        try:
            inputs = self.inputs(group, job, stage, p)
            it = stage.compute(p, self.store, inputs, self.states, job, self.io)
            value = program.action(it)
            sink = program.sink
            if sink is None:
                return shared.with_updates(value)
            self.sinks.stage(group, sink, sink.first_batch + job, p, value)
            return shared.with_updates([])  # the output went to the sink, not to the driver
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
        shared.begin_task()
        try:
            blocks: list[Any] = stage.output.split(
                stage.compute(
                    p, self.store, self.inputs(msg.group, job, stage, p), self.states, job, self.io
                )
            )
            blocks = shared.attach_updates(blocks)  # to reducer 0, which adds them to its own
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
            blocks = [shared.absorb(arrived[m]) for m in range(maps)]  # accumulator updates
            per_shuffle.append(blocks)
        for blocks in per_shuffle:
            for block in blocks:
                if isinstance(block, TaskFailure):
                    raise UpstreamFailure(block)
        return read.read(per_shuffle)


def _ignore_signal(signum: int, frame: object) -> None:
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adrizzle.worker.slot_process")
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
