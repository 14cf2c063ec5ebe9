"""A slot's share of a group, planned by plain calls (adrizzle.worker.slot_tasks)."""

from __future__ import annotations

import pytest

from adrizzle.plan.program import (
    REDUCE,
    BatchSource,
    FunctionSource,
    JobProgram,
    ShuffleRead,
    ShuffleWrite,
    StageProgram,
)
from adrizzle.wire.messages import RunTasks
from adrizzle.worker.slot_tasks import due_in, is_ready, next_ready, tasks_for


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
    reduce_task = (0, 1, 0)
    inbox: dict[tuple[int, int, int, int], dict[int, object]] = {}
    assert not is_ready(programs, run, reduce_task, inbox, now=0.0)
    inbox[(7, 0, 0, 0)] = {0: {}, 1: {}, 2: {}}
    assert not is_ready(programs, run, reduce_task, inbox, now=0.0)
    inbox[(6, 0, 0, 0)] = {3: {}}  # an aborted attempt's output does not count
    assert not is_ready(programs, run, reduce_task, inbox, now=0.0)
    inbox[(7, 0, 0, 0)][3] = {}
    assert is_ready(programs, run, reduce_task, inbox, now=0.0)
    assert is_ready(programs, run, (0, 0, 0), inbox, now=0.0)  # a map of a function source


def test_the_first_ready_task_runs_and_a_waiting_reduce_lets_later_maps_go() -> None:
    pending = [(0, 1, 0), (1, 0, 0), (1, 0, 2)]
    assert next_ready(pending, lambda t: t[1] == 0) == 1
    assert next_ready(pending, lambda t: False) == -1


def test_a_paced_source_is_due_at_the_end_of_its_interval() -> None:
    source = BatchSource(3, lambda b, p: [b], first_batch=10, interval=0.5, start=100.0)
    program = JobProgram((StageProgram(2, source, (), None),), list)
    run = launch(0, first=0, last=3, stages=(0,))
    plan = tasks_for(run, [program] * 3)
    assert plan.pending == [(0, 0, 0), (1, 0, 0), (2, 0, 0)]
    # Batch 10 covers [105.0, 105.5): its data is due at 105.5.
    assert due_in([program] * 3, run, plan.pending, now=105.2) == pytest.approx(0.3)
    assert not is_ready([program] * 3, run, (0, 0, 0), {}, now=105.2)
    assert is_ready([program] * 3, run, (0, 0, 0), {}, now=105.5)
    assert due_in([program], run, [(0, 0, 0)], now=200.0) == 0.0
    two = launch(0, last=1)
    assert due_in([two_stage()], two, [(0, 1, 0)], now=0.0) is None  # reduces wait for data
