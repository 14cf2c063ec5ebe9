"""The driver's I/O-free run state, driven by plain calls (no sockets, no loop)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adrizzle.driver.scheduler import (
    RunScheduler,
    SlotRef,
    interleave_slots,
    place_partitions,
)
from adrizzle.errors import WorkerLostError
from adrizzle.plan.failure import TaskFailure


def make(n_jobs: int = 10, partitions: int = 4, group_size: int = 3, window: int = 2):
    slots = interleave_slots([("a", 1), ("b", 1)])
    return RunScheduler(
        n_jobs=n_jobs,
        partitions=partitions,
        group_size=group_size,
        window=window,
        shares=place_partitions(partitions, slots),
        group_ids=itertools.count(),
    )


def finish_group(s: RunScheduler, plan, values=lambda job, p: (job, p)):
    """Every slot of every worker reports every job of ``plan``, then acks."""
    out = []
    for job in plan.jobs:
        for share in plan.shares:
            for parts in share.slot_parts:
                out += s.batch_result(share.worker, job, parts, [values(job, p) for p in parts], 0)
    acked = [s.group_done(share.worker, plan.group)[0] for share in plan.shares]
    return out, acked


def test_interleave_alternates_workers_then_stacks_slots() -> None:
    slots = interleave_slots([("a", 2), ("b", 1), ("c", 3)])
    assert slots == [
        SlotRef("a", 0), SlotRef("b", 0), SlotRef("c", 0),
        SlotRef("a", 1), SlotRef("c", 1), SlotRef("c", 2),
    ]  # fmt: skip


def test_place_partitions_pins_p_mod_slots_grouped_by_worker() -> None:
    shares = place_partitions(5, interleave_slots([("a", 1), ("b", 1)]))
    assert [(s.worker, s.slot_ids, s.slot_parts) for s in shares] == [
        ("a", [0], [[0, 2, 4]]),
        ("b", [0], [[1, 3]]),
    ]
    with pytest.raises(ValueError, match="no slots"):
        place_partitions(3, [])


@given(
    partitions=st.integers(1, 40),
    workers=st.lists(st.integers(1, 4), min_size=1, max_size=5),
)
def test_every_partition_is_placed_exactly_once(partitions: int, workers: list[int]) -> None:
    slots = interleave_slots([(f"w{i}", c) for i, c in enumerate(workers)])
    shares = place_partitions(partitions, slots)
    placed = [p for s in shares for parts in s.slot_parts for p in parts]
    assert sorted(placed) == list(range(partitions))


def test_window_bounds_groups_in_flight_and_acks_open_it() -> None:
    s = make(n_jobs=10, group_size=3, window=2)
    g0 = s.plan_next_group()
    g1 = s.plan_next_group()
    assert g0 is not None
    assert g1 is not None
    assert (g0.first_job, g0.last_job, g1.first_job, g1.last_job) == (0, 3, 3, 6)
    assert s.plan_next_group() is None  # window full
    _out, acked = finish_group(s, g0)
    assert acked == [False, True]  # the group is done once the last worker acks
    g2 = s.plan_next_group()
    assert g2 is not None
    assert (g2.first_job, g2.last_job) == (6, 9)


def test_last_group_is_short_and_run_finishes() -> None:
    s = make(n_jobs=4, group_size=3)
    plans = [s.plan_next_group(), s.plan_next_group()]
    assert [(p.first_job, p.last_job) for p in plans if p] == [(0, 3), (3, 4)]
    assert s.plan_next_group() is None
    delivered = []
    for plan in plans:
        assert plan is not None
        delivered += [o.index for o in finish_group(s, plan)[0]]
    assert delivered == [0, 1, 2, 3]
    assert s.finished


def test_results_are_delivered_in_job_order_as_soon_as_possible() -> None:
    s = make(n_jobs=3, partitions=2, group_size=3)
    plan = s.plan_next_group()
    assert plan is not None
    # Job 1 completes before job 0: it is held back, then both are released at once.
    assert s.batch_result("a", 1, [0], ["a1"], 0) == []
    assert s.batch_result("b", 1, [1], ["b1"], 0) == []
    assert s.batch_result("a", 0, [0], ["a0"], 0) == []
    out = s.batch_result("b", 0, [1], ["b0"], 0)
    assert [(o.index, o.values) for o in out] == [(0, ["a0", "b0"]), (1, ["a1", "b1"])]


def test_task_failure_becomes_task_error_for_the_lowest_partition() -> None:
    s = make(n_jobs=1, partitions=4, group_size=1)
    plan = s.plan_next_group()
    assert plan is not None
    fail = TaskFailure("KeyError", "'x'", "Traceback ...")
    assert s.batch_result("b", 0, [1, 3], [fail, fail], 2) == []
    [outcome] = s.batch_result("a", 0, [0, 2], [1, fail], 1)
    assert outcome.values is None
    assert outcome.error is not None
    assert (outcome.error.partition, outcome.error.worker) == (1, "b")
    assert outcome.error.exc_type == "KeyError"


def test_late_duplicate_results_are_ignored() -> None:
    s = make(n_jobs=1, partitions=2, group_size=1)
    plan = s.plan_next_group()
    assert plan is not None
    finish_group(s, plan)
    assert s.batch_result("a", 0, [0], ["again"], 0) == []
    assert s.group_done("a", plan.group) == (False, None)


def test_mismatched_values_are_rejected() -> None:
    s = make(n_jobs=1, partitions=2, group_size=1)
    s.plan_next_group()
    with pytest.raises(ValueError, match="2 partitions but 1 values"):
        s.batch_result("a", 0, [0, 1], ["x"], 0)


def test_losing_a_worker_with_work_in_flight_is_an_error() -> None:
    s = make(n_jobs=6, group_size=3)
    s.plan_next_group()
    err = s.worker_lost("b")
    assert isinstance(err, WorkerLostError)
    assert "worker b" in str(err)
    assert "jobs 0..2" in str(err)
    assert make().worker_lost("stranger") is None


def test_progress_description_names_waiting_workers() -> None:
    s = make(n_jobs=6, group_size=3)
    s.plan_next_group()
    s.batch_result("a", 0, [0, 2], [0, 0], 0)
    text = s.describe_progress()
    assert "0 of 6 jobs delivered" in text
    assert "['a', 'b']" in text
    assert "job 0 lacks 2 partitions" in text


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError, match="group_size"):
        make(group_size=0)
    with pytest.raises(ValueError, match="window"):
        make(window=0)


def test_bsp_waves_relaunch_after_every_worker_acks_each_wave() -> None:
    slots = interleave_slots([("a", 1), ("b", 1)])
    s = RunScheduler(
        n_jobs=2,
        partitions=2,
        group_size=2,
        window=1,
        shares=place_partitions(2, slots, [4]),
        group_ids=itertools.count(),
        waves=2,
    )
    plan = s.plan_next_group()
    assert plan is not None
    assert plan.wave == 0
    assert s.group_done("a", plan.group) == (False, None)
    finished, next_wave = s.group_done("b", plan.group)
    assert not finished
    assert next_wave is not None
    assert next_wave.wave == 1
    assert next_wave.group == plan.group
    assert s.plan_next_group() is None  # window of one: the group is still in flight
    out, acked = finish_group(s, next_wave)
    assert acked == [False, True]
    assert [o.index for o in out] == [0, 1]


def test_slots_with_only_map_tasks_take_part_in_the_group() -> None:
    # 1 result partition but 4 map partitions: both workers' slots are busy.
    shares = place_partitions(1, interleave_slots([("a", 1), ("b", 1)]), [4])
    assert [(s.worker, s.slot_ids, s.slot_parts) for s in shares] == [
        ("a", [0], [[0]]),
        ("b", [0], [[]]),
    ]


def test_retire_awaiting_drops_only_groups_waiting_for_that_worker() -> None:
    s = make(n_jobs=6, group_size=3, window=2)
    first, second = s.plan_next_group(), s.plan_next_group()
    assert first is not None
    assert second is not None
    for job in [*first.jobs, *second.jobs]:  # every result in: the run is finished
        for share in first.shares:
            for parts in share.slot_parts:
                s.batch_result(share.worker, job, parts, [0] * len(parts), 0)
    assert s.finished
    s.group_done("a", first.group)  # a acked the first group; b's ack was lost
    s.group_done("a", second.group)
    s.group_done("b", second.group)
    assert s.retire_awaiting("a") == []
    assert s.retire_awaiting("b") == [first.group]
    assert s.in_flight == {}
    assert s.redo == []  # nothing is re-run
