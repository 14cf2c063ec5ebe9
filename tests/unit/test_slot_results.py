"""How a slot sends what it produces (adrizzle.worker.slot_results), over a real socketpair."""

from __future__ import annotations

import pickle
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from adrizzle.driver.jobs import per_job
from adrizzle.plan.failure import TaskFailure
from adrizzle.wire.checks import check_map_outputs
from adrizzle.wire.framing import FrameDecoder, FrameLimits
from adrizzle.wire.messages import (
    BatchResult,
    MapOutputs,
    Message,
    RunTasks,
    SlotDone,
    decode_meta,
)
from adrizzle.worker.slot_results import ResultSender, dump_values

pytestmark = pytest.mark.timeout(30)


def run(linger_ms: float = 2.0, group: int = 5) -> RunTasks:
    return RunTasks(
        group=group,
        first_job=0,
        last_job=100,
        stages=[0],
        placement_workers=["a", "b"],
        placement_slots=[0, 0],
        worker="a",
        slot=0,
        program_len=0,
        release=[],
        linger_us=int(linger_ms * 1000),
    )


class Peer:
    """The worker's end of the slot's socket: the frames the sender wrote, decoded."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder(FrameLimits(max_meta=1 << 20, max_payload=1 << 30))

    def frames(self, wait: float = 0.0) -> list[tuple[Message, bytes]]:
        """What arrived within ``wait`` s (and anything right behind it)."""
        out: list[tuple[Message, bytes]] = []
        while select.select([self.sock], [], [], wait)[0]:
            data = self.sock.recv(1 << 20)
            out += [(decode_meta(m), bytes(p)) for m, p in self.decoder.feed(data)]
            wait = 0.05 if not out else 0.0
        return out


@pytest.fixture
def pair() -> Iterator[tuple[ResultSender, Peer]]:
    ours, theirs = socket.socketpair()
    try:
        yield ResultSender(ours, bundle_bytes=64), Peer(theirs)
    finally:
        ours.close()
        theirs.close()


def values(frame: tuple[Message, bytes]) -> Any:
    """A ``batch_result``'s values per job, as the driver reads them."""
    msg = frame[0]
    assert isinstance(msg, BatchResult)
    return per_job(pickle.loads(frame[1]), len(msg.jobs), len(msg.parts))


def test_results_wait_while_the_slot_has_ready_work_and_leave_in_one_frame(
    pair: tuple[ResultSender, Peer],
) -> None:
    sender, peer = pair
    msg = run()
    for job in range(3):
        sender.add(msg, [0, 2], job, [job, 10 * job], 0)
    assert peer.frames() == []  # nothing was written yet
    sender.flush()
    frames = peer.frames(wait=5.0)
    assert len(frames) == 1
    result = frames[0][0]
    assert isinstance(result, BatchResult)
    assert (result.group, result.jobs, result.parts) == (5, [0, 1, 2], [0, 2])
    assert values(frames[0]) == [[0, 0], [1, 10], [2, 20]]
    assert pickle.loads(frames[0][1]) == [0, 0, 1, 10, 2, 20]  # on the wire: one flat list
    sender.flush()
    assert peer.frames(wait=0.1) == []  # nothing twice


def test_the_last_results_and_slot_done_leave_in_one_write(
    pair: tuple[ResultSender, Peer],
) -> None:
    sender, peer = pair
    sender.add(run(), [1], 7, ["v"], 0)
    sender.finish_group(5, tasks=4, failed=0, busy_us=10, unpicklable_before=0)
    frames = peer.frames(wait=5.0)
    assert [type(m) for m, _ in frames] == [BatchResult, SlotDone]
    done = frames[1][0]
    assert isinstance(done, SlotDone)
    assert (done.group, done.tasks) == (5, 4)


def test_a_result_waiting_behind_a_long_task_leaves_at_the_linger_time(
    pair: tuple[ResultSender, Peer],
) -> None:
    sender, peer = pair
    msg = run(linger_ms=20)
    for attempt in range(2):  # the clock parks between the two and wakes again
        sender.add(msg, [0], attempt, [attempt], 0)
        sender.before_task()  # the slot starts a task that runs 2 s (this test's wait)
        frames = peer.frames(wait=2.0)
        assert [type(m) for m, _ in frames] == [BatchResult]
        assert values(frames[0]) == [[attempt]]
        time.sleep(0.2)  # a tick with nothing to time: the clock parks


def test_a_batch_flushed_when_the_slot_runs_out_of_work_never_wakes_the_clock(
    pair: tuple[ResultSender, Peer],
) -> None:
    sender, peer = pair
    msg = run(linger_ms=20)
    sender.add(msg, [0], 0, [1], 0)
    time.sleep(0.2)  # no task runs behind it: it waits for the slot's flush, not the clock
    assert peer.frames() == []
    sender.flush()
    assert len(peer.frames(wait=5.0)) == 1


def test_pushes_are_bundled_per_destination_slot_and_go_before_results(
    pair: tuple[ResultSender, Peer],
) -> None:
    sender, peer = pair  # bundle_bytes=64
    msg = run()
    blob = pickle.dumps({1: [(3, 4)]})
    assert len(blob) < 32
    sender.push(msg, "b", 0, (0, 0, 0), blob)
    sender.push(msg, "b", 0, (1, 0, 0), blob)
    sender.push(msg, "a", 1, (0, 0, 2), blob)
    sender.add(msg, [0], 0, ["r"], 0)
    sender.flush()
    frames = peer.frames(wait=5.0)
    assert [type(m) for m, _ in frames] == [MapOutputs, MapOutputs, BatchResult]
    by_dest = {}
    for m, payload in frames[:2]:
        assert isinstance(m, MapOutputs)
        check_map_outputs(m, len(payload))
        by_dest[(m.worker, m.slot)] = m.outputs
    assert by_dest == {
        ("b", 0): [[0, 0, 0, len(blob)], [1, 0, 0, len(blob)]],
        ("a", 1): [[0, 0, 2, len(blob)]],
    }


def test_a_bundle_is_sent_before_it_would_pass_the_bundle_size(
    pair: tuple[ResultSender, Peer],
) -> None:
    sender, peer = pair  # bundle_bytes=64
    msg = run()
    blob = b"x" * 40
    sender.push(msg, "b", 0, (0, 0, 0), blob)
    assert peer.frames() == []
    sender.push(msg, "b", 0, (1, 0, 0), blob)  # 80 > 64: the first bundle goes now
    first = peer.frames(wait=5.0)
    assert len(first) == 1
    assert isinstance(first[0][0], MapOutputs)
    assert first[0][0].outputs == [[0, 0, 0, 40]]
    sender.flush()
    second = peer.frames(wait=5.0)
    assert isinstance(second[0][0], MapOutputs)
    assert second[0][0].outputs == [[1, 0, 0, 40]]


def test_a_value_that_cannot_be_pickled_becomes_a_failure_of_its_own_job() -> None:
    lock = threading.Lock()  # neither pickle nor cloudpickle can carry it
    payload, replaced = dump_values([1, 2, 3, lock, 5, 6], batches=3)
    assert replaced == [0, 1, 0]
    out = per_job(pickle.loads(payload), 3, 2)
    assert out[0] == [1, 2]
    assert out[2] == [5, 6]
    assert out[1][0] == 3
    assert isinstance(out[1][1], TaskFailure)
    assert "cannot pickle" in out[1][1].message
