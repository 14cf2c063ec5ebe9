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
from typing import TYPE_CHECKING, Any

from adrizzle.errors import SinkError
from adrizzle.plan import shared
from adrizzle.plan.failure import TaskFailure
from adrizzle.plan.offsets import SourceIO
from adrizzle.plan.program import ShuffleRead
from adrizzle.plan.serialize import dumps, load_error
from adrizzle.plan.state import StateStore, restore_states
from adrizzle.wire.framing import FrameDecoder, FrameLimits, encode_frame
from adrizzle.wire.messages import (
    CancelGroups,
    DriverLink,
    DropShared,
    GroupFailed,
    MapOutputReady,
    MapOutputs,
    OffsetsLogged,
    PutShared,
    RunTasks,
    Shutdown,
    SinkFailed,
    SlotNotice,
    SlotReady,
    decode_meta,
    encode_meta,
)
from adrizzle.worker import slot_shared
from adrizzle.worker.slot_checkpoint import checkpoint_frame
from adrizzle.worker.slot_inbox import ShuffleInbox, UpstreamFailure
from adrizzle.worker.slot_link import LinkError, open_result_link
from adrizzle.worker.slot_results import PUSH_BUNDLE_BYTES, ResultSender, takes_link
from adrizzle.worker.slot_sinks import SinkStage
from adrizzle.worker.slot_tasks import SlotTasks, TaskQueue, ready_results, tasks_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from adrizzle.plan.program import (
        BlockStore,
        JobProgram,
        StageProgram,
    )

TRUSTED_LIMITS = FrameLimits(max_meta=1 << 24, max_payload=1 << 34)


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
        self.pushed_blocks = 0  # map output frames sent to other slots (this group)
        self.pushed_bytes = 0
        self.decoder = FrameDecoder(TRUSTED_LIMITS)
        self.sender = ResultSender(sock, min(PUSH_BUNDLE_BYTES, self.max_block_bytes))
        self.store: BlockStore = {}
        # Per-partition state of stateful steps (streams), kept across groups like the store.
        self.states: StateStore = {}
        self.queue: collections.deque[tuple[RunTasks, bytes]] = collections.deque()
        self.inbox = ShuffleInbox()  # map outputs that arrived, by attempt
        self.cancelled: set[int] = set()
        self.io = SourceIO()  # connector readers, kept across groups
        # The last group's programs: the next group of a run usually ships the same bytes.
        self.last_blob = b""
        self.last_programs: list[JobProgram] = []
        self.sinks = SinkStage()  # sink writers and the outputs waiting for offsets_logged
        self.link_offer: DriverLink | None = None  # the worker's offer of a result link
        self.failures = 0  # result tasks that failed, ever (a group counts its difference)

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
            elif isinstance(msg, MapOutputs):
                if msg.group not in self.cancelled:
                    self.inbox.receive_bundle(msg, payload)
            elif isinstance(msg, MapOutputReady):
                if msg.group not in self.cancelled:
                    self.inbox.receive_one(msg, payload)
            elif isinstance(msg, OffsetsLogged):
                self.sink_failures(self.sinks.confirm(msg.stream, msg.through))
            elif isinstance(msg, CancelGroups):
                self.cancel(msg.groups)
            elif isinstance(msg, (PutShared, DropShared)):  # broadcasts, user code
                slot_shared.receive(msg, payload)
            elif isinstance(msg, Shutdown):
                raise WorkerGone
            elif isinstance(msg, DriverLink):
                self.link_offer = msg  # dialed when a group can use it (run_group)

    def open_link(self, msg: DriverLink) -> None:
        """Open this slot's result link to the driver; without one (the driver refused it or
        cannot be reached from here) everything keeps going through the worker."""
        self.link_offer = None  # one try
        try:
            self.sender.link = open_result_link(msg)
        except LinkError as exc:
            notice = SlotNotice(
                f"slot {msg.slot}: no result link, sending through the worker: {exc}"
            )
            self.sender.send(encode_frame(encode_meta(notice)))

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
        self.inbox.drop(self.cancelled)

    # -- running a group -------------------------------------------------------------------

    def run_group(self, msg: RunTasks, payload: bytes) -> None:
        """Run this slot's tasks of a group by priority (``slot_tasks``): lower batch first,
        then stage order; a reduce waiting for map outputs lets later ready tasks run."""
        started = time.perf_counter()
        self.pushed_blocks = self.pushed_bytes = 0
        if self.link_offer is not None and takes_link(msg):
            # The first group that can use a result link opens it: a slot that never runs a
            # worker's whole share of a group never dials (nor does one at shutdown).
            self.open_link(self.link_offer)
        self.sender.route(msg)
        self.release(msg.release)
        programs = self.load(msg, payload)
        if programs is None:
            return
        parts = ready_results(msg, programs)
        if parts is not None:
            self.run_ready(msg, programs, parts, started)
            return
        plan = tasks_for(msg, programs)
        queue = TaskQueue(msg, programs, plan, self.inbox.blocks)
        self.inbox.listener = queue.arrived
        try:
            self.run_tasks(msg, programs, plan, queue, started)
        finally:
            self.inbox.listener = None

    def run_ready(
        self, msg: RunTasks, programs: list[JobProgram], parts: list[int], started: float
    ) -> None:
        """A group whose every task is a result task ready now (``ready_results``): job by
        job, its partitions in order, no task queue (the single-stage hot path: a slot's CPU
        per micro-batch at G=100 went 13.7 -> 11.1 µs without the queue's bookkeeping)."""
        failures, unpicklable_before = self.failures, self.sender.unpicklable
        first, index = msg.first_job, msg.stages[0]
        sender, run_task = self.sender, self.run_ready_task
        last: JobProgram | None = None
        openers: list[Callable[[int], Iterator[Any]]] = []
        for job, program in enumerate(programs, first):
            if program is not last:  # a program repeated over jobs is resolved once
                last, action, stage = program, program.action, program.stages[index]
                openers = [stage.opener(p, self.store, self.states, self.io) for p in parts]
            before = self.failures
            sender.before_task()
            values = [run_task(job, action, opener) for opener in openers]
            if self.io.reads:
                sender.add_positions(msg, self.io.reads)
                self.io.reads = []
            sender.add(msg, parts, job, values, self.failures - before)
        tasks = len(parts) * len(programs)
        self.finish_group(msg, tasks, self.failures - failures, started, 0.0, unpicklable_before)

    def run_tasks(
        self,
        msg: RunTasks,
        programs: list[JobProgram],
        plan: SlotTasks,
        queue: TaskQueue,
        started: float,
    ) -> None:
        results: dict[int, dict[int, Any]] = {job: {} for job in plan.result_jobs}
        tasks = len(queue)
        failures = self.failures
        unpicklable_before = self.sender.unpicklable
        stuck_since: float | None = None
        waited = 0.0  # time spent waiting for stream data to be due: not busy
        while True:
            task = queue.pop(time.time())
            if task is None:
                if not queue:
                    break  # every task ran
                # Out of ready work: what waits goes now (map outputs others need, results).
                self.sender.flush()
                wait = queue.due_in(time.time())
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
                if mono - stuck_since < self.shuffle_timeout:
                    self.receive(self.shuffle_timeout - (mono - stuck_since))
                    if msg.group in self.cancelled:
                        return  # a worker was lost: the driver re-runs these jobs
                    continue
                task = queue.pop_waiting()  # give up: its read raises the timeout error
            stuck_since = None
            self.sender.before_task()
            job, stage_index, p = task
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
                self.sender.add(msg, plan.result_parts, job, values, failed)
        failed_total = self.failures - failures
        self.finish_group(msg, tasks, failed_total, started, waited, unpicklable_before)

    def finish_group(
        self,
        msg: RunTasks,
        tasks: int,
        failed: int,
        started: float,
        waited: float,
        unpicklable_before: int,
    ) -> None:
        """The group's checkpoint, its sinks' commits, then its last results and ack."""
        if msg.checkpoint:
            self.send_checkpoint(msg)
        self.wait_for_sinks(msg)
        busy_us = int((time.perf_counter() - started - waited) * 1e6)
        pushed = (self.pushed_blocks, self.pushed_bytes)
        self.sender.finish_group(
            msg.group, tasks, failed, busy_us, unpicklable_before, pushed, msg.slots
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
            blob = payload[: msg.program_len]  # bytes: compared at C speed, not per item
            if blob != self.last_blob:  # a run repeats its programs group after group
                self.last_programs = pickle.loads(blob)
                self.last_blob = blob
            return self.last_programs
        except Exception as exc:  # e.g. a function pickled by reference to a missing module
            reason = (
                f"worker {msg.worker} slot {msg.slot} cannot load the {what} of jobs "
                f"{msg.first_job}..{msg.last_job - 1}: {load_error(exc)}"
            )
            notice = GroupFailed(msg.group, msg.worker, msg.slot, reason)
            self.sender.send_driver(encode_frame(encode_meta(notice)))
            self.sender.finish_group(msg.group, 0, 0, 0, self.sender.unpicklable, of=msg.slots)
            return None

    def wait_for_sinks(self, msg: RunTasks) -> None:
        """A group is finished only once its sinks committed: its acknowledgement (and the
        checkpoint it completes) then implies them. The driver logs a batch's offsets as soon
        as its results are in, so this waits about one round trip."""
        deadline = time.monotonic() + self.shuffle_timeout
        if self.sinks.pending(msg.group):
            self.sender.flush()  # the driver logs these batches once their results are in
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
            self.sender.send_driver(encode_frame(encode_meta(notice), pickle.dumps(error)))

    def send_checkpoint(self, msg: RunTasks) -> None:
        """Send the stream state changed since the last checkpoint (docs/architecture.md)."""
        frame = checkpoint_frame(self.states, msg)
        if frame is not None:
            self.sender.send_driver(frame)

    def run_ready_task(
        self, job: int, action: Callable[[Iterator[Any]], Any], opener: Callable[[int], Any]
    ) -> Any:
        """A task of ``run_ready``: ``run_result_task`` with no shuffle read and no sink, its
        input from ``StageProgram.opener`` (the interpreter's share of a slot's CPU at G=100 is
        ~17 %, perf: per-task steps count)."""
        try:
            return shared.run_task(action, opener, job)
        except WorkerGone:
            raise
        except Exception as exc:
            self.failures += 1
            return TaskFailure.capture(exc)

    def run_result_task(
        self, group: int, job: int, program: JobProgram, stage: StageProgram, p: int
    ) -> Any:
        shared.begin_task()  # accumulator updates travel with the value (plan/shared.py)
        try:
            shuffled = isinstance(stage.input, ShuffleRead)  # else nothing to wait for
            inputs = self.inputs(group, job, stage, p) if shuffled else None
            it = stage.compute(p, self.store, inputs, self.states, job, self.io)
            value = program.action(it)
            sink = program.sink
            if sink is None:
                return shared.with_updates(value)
            self.sinks.stage(group, sink, sink.first_batch + job, p, value)
            # A replayed batch may be covered by an offsets_logged that came before it was
            # staged: commit what the watermark covers now, not at the next notice.
            self.sink_failures(self.sinks.commit_ready())
            return shared.with_updates([])  # the output went to the sink, not to the driver
        except UpstreamFailure as exc:
            self.failures += 1
            return exc.failure
        except WorkerGone:
            raise
        except Exception as exc:
            self.failures += 1
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
                self.inbox.file(msg.group, job, stage_index, p, reduce_blocks)  # stays here
                continue
            payload = dumps(reduce_blocks)
            self.pushed_blocks += 1
            self.pushed_bytes += len(payload)
            if not msg.hold and len(payload) <= self.max_block_bytes:  # sent by readiness
                self.sender.push(msg, worker, slot, (job, stage_index, p), payload)
                continue
            size = self.max_block_bytes
            chunks = max(1, -(-len(payload) // size))
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
        return self.inbox.take(group, job, stage, p, self.shuffle_timeout)


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
