"""A slot's share of a group, planned by plain calls (adrizzle.worker.slot_tasks)."""

from __future__ import annotations

import pytest

from adrizzle.plan.offsets import WorkerSink
from adrizzle.plan.program import (
    REDUCE,
    BatchSource,
    FunctionSource,
    JobProgram,
    ShippedSource,
    ShuffleRead,
    ShuffleWrite,
    StageProgram,
)
from adrizzle.wire.messages import RunTasks
from adrizzle.worker.slot_tasks import TaskQueue, ready_results, tasks_for


def two_stage() -> JobProgram:
    """4 map partitions -> 2 reducers."""
    maps = StageProgram(4, FunctionSource(1, range), (), ShuffleWrite(2, max))
    reduce = StageProgram(2, ShuffleRead(REDUCE, ((0, 4),), max), (), None)
    return JobProgram((maps, reduce), list)


def launch(
    slot: int, first: int = 0, last: int = 2, group: int = 7, stages: tuple[int, ...] = (0, 1)
) -> RunTasks:
    # Two workers of one slot each: partition p of every stage runs on slot p % 2.
    return RunTasks(
        group=group,
        first_job=first,
        last_job=last,
        stages=list(stages),
        placement_workers=["a", "b"],
        placement_slots=[0, 0],
        worker="ab"[slot],
        slot=0,
        program_len=0,
        release=[],
    )


def test_a_slot_takes_partitions_p_mod_n_lowest_batch_first_then_stage_order() -> None:
    programs = [two_stage(), two_stage()]
    a = tasks_for(launch(0), programs)
    assert a.pending == [(0, 0, 0), (0, 0, 2), (0, 1, 0), (1, 0, 0), (1, 0, 2), (1, 1, 0)]
    assert (a.result_parts, a.result_jobs) == ([0], [0, 1])
    b = tasks_for(launch(1), programs)
    assert b.pending == [(0, 0, 1), (0, 0, 3), (0, 1, 1), (1, 0, 1), (1, 0, 3), (1, 1, 1)]
    assert b.result_parts == [1]


def test_a_reduce_is_ready_once_every_map_output_of_its_attempt_arrived() -> None:
    programs = [two_stage()]
    run = launch(0, last=1)
    inbox: dict[tuple[int, int, int, int], dict[int, object]] = {(7, 0, 0, 0): {0: {}}}
    queue = TaskQueue(run, programs, tasks_for(run, programs), inbox)
    assert [queue.pop(0.0), queue.pop(0.0)] == [(0, 0, 0), (0, 0, 2)]  # the maps
    assert queue.pop(0.0) is None  # the reduce waits: 1 of 4 outputs (filed before it ran)
    queue.arrived((6, 0, 0, 0), 4)  # an aborted attempt's outputs do not count
    queue.arrived((7, 0, 0, 0), 3)
    assert queue.pop(0.0) is None
    queue.arrived((7, 0, 0, 0), 4)
    assert queue.pop(0.0) == (0, 1, 0)
    assert len(queue) == 0


def test_the_first_ready_task_runs_and_a_waiting_reduce_lets_later_maps_go() -> None:
    programs = [two_stage()] * 3
    run = launch(0, last=3)
    queue = TaskQueue(run, programs, tasks_for(run, programs), {})
    assert [queue.pop(0.0) for _ in range(4)] == [(0, 0, 0), (0, 0, 2), (1, 0, 0), (1, 0, 2)]
    queue.arrived((7, 1, 0, 0), 4)  # batch 1's reduce is ready before batch 0's
    assert queue.pop(0.0) == (1, 1, 0)  # it goes before batch 2's maps
    assert queue.pop(0.0) == (2, 0, 0)
    queue.arrived((7, 0, 0, 0), 4)
    assert queue.pop(0.0) == (0, 1, 0)
    assert queue.pop(0.0) == (2, 0, 2)
    assert queue.pop(0.0) is None
    assert len(queue) == 1
    assert queue.due_in(0.0) is None  # reduces wait for data, not for time
    assert queue.pop_waiting() == (2, 1, 0)  # giving up: its read names what is missing
    assert len(queue) == 0


def test_a_paced_source_is_due_at_the_end_of_its_interval() -> None:
    source = BatchSource(3, lambda b, p: [b], first_batch=10, interval=0.5, start=100.0)
    program = JobProgram((StageProgram(2, source, (), None),), list)
    run = launch(0, first=0, last=3, stages=(0,))
    plan = tasks_for(run, [program] * 3)
    assert plan.pending == [(0, 0, 0), (1, 0, 0), (2, 0, 0)]
    queue = TaskQueue(run, [program] * 3, plan, {})
    # Batch 10 covers [105.0, 105.5): its data is due at 105.5.
    assert queue.due_in(105.2) == pytest.approx(0.3)
    assert queue.pop(105.2) is None
    assert queue.pop(105.5) == (0, 0, 0)
    assert queue.due_in(105.5) == pytest.approx(0.5)
    assert queue.pop(200.0) == (1, 0, 0)
    assert queue.due_in(200.0) == 0.0


def one_stage(
    source: ShippedSource | FunctionSource | BatchSource | None = None,
    sink: WorkerSink | None = None,
) -> JobProgram:
    stage = StageProgram(4, source or ShippedSource(3), (), None)
    return JobProgram((stage,), sum, sink)


def test_a_group_of_ready_result_tasks_runs_job_by_job_on_the_slot_s_partitions() -> None:
    programs = [one_stage()] * 3
    assert ready_results(launch(0, last=3, stages=(0,)), programs) == [0, 2]
    assert ready_results(launch(1, last=3, stages=(0,)), programs) == [1, 3]
    generated = [one_stage(FunctionSource(1, range))] * 3
    assert ready_results(launch(1, last=3, stages=(0,)), generated) == [1, 3]


def test_shuffles_paced_sources_and_worker_sinks_take_the_task_queue() -> None:
    assert ready_results(launch(0), [two_stage(), two_stage()]) is None  # two stages
    reduce_only = [two_stage()]
    assert ready_results(launch(0, last=1, stages=(1,)), reduce_only) is None  # a shuffle read
    run = launch(0, last=1, stages=(0,))
    paced = BatchSource(5, lambda batch, p: [batch], 0, interval=0.5, start=1e9)
    assert ready_results(run, [one_stage(paced)]) is None  # its data is not due yet
    unpaced = BatchSource(5, lambda batch, p: [batch], 0)
    assert ready_results(run, [one_stage(unpaced)]) == [0, 2]
    sink = WorkerSink(node_id=9, stream="s", sink=None, first_batch=0)
    assert ready_results(run, [one_stage(sink=sink)]) is None  # commits wait for the log


def test_a_repeated_program_is_checked_once_and_a_different_one_after_it_still_counts() -> None:
    plain = one_stage()
    paced = one_stage(BatchSource(5, lambda batch, p: [batch], 0, interval=0.5, start=1e9))
    assert ready_results(launch(0, last=4, stages=(0,)), [plain] * 4) == [0, 2]
    assert ready_results(launch(0, last=4, stages=(0,)), [plain] * 3 + [paced]) is None
    # equal but not the same object: checked again
    assert ready_results(launch(0, last=2, stages=(0,)), [plain, one_stage()]) == [0, 2]
