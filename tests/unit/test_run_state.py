"""The run state machine, driven by plain calls: events in, instructions out (no loop, no I/O).

Every recovery path is parametrized over *when* the loss happens: before the group's launch
(the worker was already gone), mid-group (some results in), after all results but before the
acknowledgement, and after the run finished (only acknowledgements outstanding).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adrizzle.driver.adaptive import GroupDecision, GroupTiming
from adrizzle.driver.checkpoint_files import Piece
from adrizzle.driver.jobs import StatePolicy
from adrizzle.driver.placement import GroupPlan, SlotRef, interleave_slots, place_partitions
from adrizzle.driver.run_events import (
    Broken,
    Cancel,
    CheckpointArrived,
    Closed,
    Commit,
    Consumed,
    Deliver,
    Fail,
    Forget,
    GroupAcked,
    Launch,
    Launched,
    LinkLost,
    LoadFailed,
    NoWorkersTimeout,
    Observed,
    PlacementChanged,
    Recovered,
    ResultsArrived,
    Rollback,
    Stalled,
    Start,
    WaitForWorkers,
    WorkerLost,
)
from adrizzle.driver.run_state import RunScheduler
from adrizzle.errors import (
    NoWorkersError,
    SerializationError,
    StateRollback,
    WorkerLostError,
)
from adrizzle.plan.failure import TaskFailure

AB = interleave_slots([("a", 1), ("b", 1)])
ABC = interleave_slots([("a", 1), ("b", 1), ("c", 1)])


def make(
    n_jobs: int = 10,
    partitions: int = 4,
    group_size: int = 3,
    window: int = 2,
    slots: list[SlotRef] = AB,
    **kw: Any,
) -> RunScheduler:
    return RunScheduler(
        n_jobs=n_jobs,
        partitions=partitions,
        group_size=group_size,
        window=window,
        slots=slots,
        group_ids=itertools.count(),
        **kw,
    )


def of(kind: type, out: list[Any]) -> list[Any]:
    return [i for i in out if isinstance(i, kind)]


def launches(out: list[Any]) -> list[GroupPlan]:
    return [i.plan for i in of(Launch, out)]


def start(s: RunScheduler, now: float = 0.0) -> list[GroupPlan]:
    return launches(s.handle(Start(now)))


def report(
    s: RunScheduler, plan: GroupPlan, job: int, now: float = 0.0, worker: str | None = None
) -> list[Any]:
    """Every slot (of ``worker``, or of all workers) reports ``job`` of ``plan``."""
    out: list[Any] = []
    for share in plan.shares:
        if worker is not None and share.worker != worker:
            continue
        for parts in share.slot_parts:
            values = [[(job, p) for p in parts]]
            out += s.handle(
                ResultsArrived(share.worker, plan.group, [job], parts, values, [0], now)
            )
    return out


def ack(s: RunScheduler, plan: GroupPlan, worker: str, now: float = 0.0) -> list[Any]:
    return s.handle(GroupAcked(worker, plan.group, 0.0, now))


def delivered(out: list[Any]) -> list[int]:
    return [o.index for d in of(Deliver, out) for o in d.outcomes]


def finish_group(s: RunScheduler, plan: GroupPlan) -> tuple[list[Any], list[bool]]:
    """Every slot reports every job of ``plan``, then every worker acks; returns all
    instructions and, per ack, whether it finished the group."""
    out: list[Any] = []
    for job in plan.jobs:
        out += report(s, plan, job)
    acked = []
    for share in plan.shares:
        got = ack(s, plan, share.worker)
        acked.append(Forget(plan.group, acked=True) in got)
        out += got
    return out, acked


# -- placement (pure) --------------------------------------------------------------------------


def test_interleave_alternates_workers_then_stacks_slots() -> None:
    slots = interleave_slots([("a", 2), ("b", 1), ("c", 3)])
    assert slots == [
        SlotRef("a", 0), SlotRef("b", 0), SlotRef("c", 0),
        SlotRef("a", 1), SlotRef("c", 1), SlotRef("c", 2),
    ]  # fmt: skip


def test_place_partitions_pins_p_mod_slots_grouped_by_worker() -> None:
    shares = place_partitions(5, AB)
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


def test_slots_with_only_map_tasks_take_part_in_the_group() -> None:
    # 1 result partition but 4 map partitions: both workers' slots are busy.
    shares = place_partitions(1, AB, [4])
    assert [(s.worker, s.slot_ids, s.slot_parts) for s in shares] == [
        ("a", [0], [[0]]),
        ("b", [0], [[]]),
    ]


# -- planning and delivery ---------------------------------------------------------------------


def test_window_bounds_groups_in_flight_and_acks_open_it() -> None:
    s = make(n_jobs=10, group_size=3, window=2)
    g0, g1 = start(s)
    assert (g0.first_job, g0.last_job, g1.first_job, g1.last_job) == (0, 3, 3, 6)
    out, acked = finish_group(s, g0)
    assert acked == [False, True]  # the group is done once the last worker acks
    [g2] = launches(out)
    assert (g2.first_job, g2.last_job) == (6, 9)


def test_last_group_is_short_and_run_finishes() -> None:
    s = make(n_jobs=4, group_size=3)
    plans = start(s)
    assert [(p.first_job, p.last_job) for p in plans] == [(0, 3), (3, 4)]
    got = []
    for plan in plans:
        out, _acked = finish_group(s, plan)
        assert launches(out) == []
        got += delivered(out)
    assert got == [0, 1, 2, 3]
    assert s.finished


def test_results_are_delivered_in_job_order_as_soon_as_possible() -> None:
    s = make(n_jobs=3, partitions=2, group_size=3)
    [plan] = start(s)
    g = plan.group
    # Job 1 completes before job 0: it is held back, then both are released at once.
    assert s.handle(ResultsArrived("a", g, [1], [0], [["a1"]], [0], 0.0)) == []
    assert s.handle(ResultsArrived("b", g, [1], [1], [["b1"]], [0], 0.0)) == []
    assert s.handle(ResultsArrived("a", g, [0], [0], [["a0"]], [0], 0.0)) == []
    [deliver] = s.handle(ResultsArrived("b", g, [0], [1], [["b0"]], [0], 0.0))
    assert isinstance(deliver, Deliver)
    assert [(o.index, o.values) for o in deliver.outcomes] == [(0, ["a0", "b0"]), (1, ["a1", "b1"])]


def test_one_frame_may_carry_several_jobs() -> None:
    s = make(n_jobs=2, partitions=2, group_size=2)
    [plan] = start(s)
    s.handle(ResultsArrived("a", plan.group, [0, 1], [0], [["a0"], ["a1"]], [0, 0], 0.0))
    out = s.handle(ResultsArrived("b", plan.group, [0, 1], [1], [["b0"], ["b1"]], [0, 0], 0.0))
    assert delivered(out) == [0, 1]


def test_task_failure_becomes_task_error_for_the_lowest_partition() -> None:
    s = make(n_jobs=1, partitions=4, group_size=1)
    [plan] = start(s)
    fail = TaskFailure("KeyError", "'x'", "Traceback ...")
    g = plan.group
    assert s.handle(ResultsArrived("b", g, [0], [1, 3], [[fail, fail]], [2], 0.0)) == []
    [deliver] = s.handle(ResultsArrived("a", g, [0], [0, 2], [[1, fail]], [1], 0.0))
    [outcome] = deliver.outcomes
    assert outcome.values is None
    assert outcome.error is not None
    assert (outcome.error.partition, outcome.error.worker) == (1, "b")
    assert outcome.error.exc_type == "KeyError"


def test_late_duplicate_results_are_ignored() -> None:
    s = make(n_jobs=1, partitions=2, group_size=1)
    [plan] = start(s)
    finish_group(s, plan)
    assert s.handle(ResultsArrived("a", plan.group, [0], [0], [["again"]], [0], 0.0)) == []
    assert ack(s, plan, "a") == []


def test_mismatched_values_fail_the_run_naming_the_mismatch() -> None:
    s = make(n_jobs=1, partitions=2, group_size=1)
    [plan] = start(s)
    [fail] = s.handle(ResultsArrived("a", plan.group, [0], [0, 1], [["x"]], [0], 0.0))
    assert isinstance(fail, Fail)
    assert "2 partitions but 1 values" in str(fail.error)
    assert "from a" in str(fail.error)
    out = s.handle(ResultsArrived("a", plan.group, [0, 1], [0], [["x"]], [0], 0.0))
    assert out == []  # failed once; nothing more is launched or delivered


def test_a_lost_worker_is_described_with_the_jobs_it_held() -> None:
    s = make(n_jobs=6, group_size=3, window=1)
    start(s)
    err = s.loss_of("b")
    assert isinstance(err, WorkerLostError)
    assert "worker b" in str(err)
    assert "jobs 0..2" in str(err)
    assert make().loss_of("stranger") is None


def test_progress_description_names_waiting_workers() -> None:
    s = make(n_jobs=6, group_size=3)
    [plan, _] = start(s)
    report(s, plan, 0, worker="a")
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
    s = make(n_jobs=2, partitions=2, group_size=2, window=1, stage_partitions=(4,), waves=2)
    [plan] = start(s)
    assert plan.wave == 0
    assert ack(s, plan, "a") == []
    [again] = ack(s, plan, "b")
    assert isinstance(again, Launch)
    next_wave = again.plan
    assert (next_wave.wave, next_wave.group) == (1, plan.group)
    out, acked = finish_group(s, next_wave)
    assert acked == [False, True]
    assert delivered(out) == [0, 1]


def test_backpressure_stops_launching_until_the_caller_consumes() -> None:
    s = make(n_jobs=20, partitions=2, group_size=2, window=2, max_buffered=4)
    g0, g1 = start(s)
    out, _ = finish_group(s, g0)
    [g2] = launches(out)  # two outcomes wait: below the bound, planning goes on
    out, _ = finish_group(s, g1)
    assert launches(out) == []  # four outcomes wait for the caller: nothing more is planned
    out, _ = finish_group(s, g2)
    assert delivered(out) == [4, 5]
    assert launches(out) == []
    relaunched = launches(s.handle(Consumed(6, 0.0)))
    assert [(p.first_job, p.last_job) for p in relaunched] == [(6, 8), (8, 10)]


def test_the_group_size_hook_is_asked_per_group() -> None:
    class Hook:
        def __init__(self, answers: list[int]) -> None:
            self.answers = iter(answers)

        def next_size(self) -> int:
            return next(self.answers)

    s = make(n_jobs=20, partitions=2, group_size=8, window=4, controller=Hook([1, 3, 50, 2]))
    plans = start(s)
    assert [(p.first_job, p.last_job) for p in plans] == [(0, 1), (1, 4), (4, 12), (12, 14)]
    bad = make(n_jobs=5, partitions=1, group_size=4, controller=Hook([0]))
    with pytest.raises(ValueError, match="hook"):
        bad.handle(Start(0.0))


# -- the adaptive group size's clock -----------------------------------------------------------


class Recorder:
    """A controller that plans groups of ``size`` and records the timings it observes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.timings: list[GroupTiming] = []

    def next_size(self) -> int:
        return self.size

    def observe(self, timing: GroupTiming) -> GroupDecision:
        self.timings.append(timing)
        return GroupDecision(timing.group, timing.size, 0, 0, 0, 0, 0, "hold", self.size)


def test_clock_starts_a_group_at_its_launch_or_the_previous_result() -> None:
    rec = Recorder(2)
    s = make(n_jobs=4, partitions=2, group_size=8, controller=rec)
    g0, g1 = start(s, now=1.0)  # pipelined: both launched before 0 is done
    s.handle(Launched(g0.group, 0.001))
    s.handle(Launched(g1.group, 0.002))
    report(s, g0, 0, now=1.010)
    report(s, g0, 1, now=1.020)
    s.handle(GroupAcked("a", g0.group, 0.0, 1.021))
    out = s.handle(GroupAcked("b", g0.group, 0.0, 1.021, cost_s=0.0005))
    assert of(Observed, out)
    # Every ack reports its worker's busy time (here 0): the busiest slot's is kept.
    assert rec.timings[0] == GroupTiming(0, 2, 1.0, 1.010, 1.020, pytest.approx(0.0015), 0.0)
    report(s, g1, 2, now=1.030)
    report(s, g1, 3, now=1.040)
    for worker in ("a", "b"):
        ack(s, g1, worker, now=1.041)
    # Group 1 could not produce before group 0's last result at 1.020.
    assert rec.timings[1] == GroupTiming(1, 2, 1.020, 1.030, 1.040, 0.002, 0.0)


def test_clock_keeps_the_busiest_slot_of_the_group() -> None:
    rec = Recorder(4)
    slots = interleave_slots([("a", 2), ("b", 1)])
    s = make(n_jobs=4, partitions=3, group_size=4, slots=slots, controller=rec)
    [plan] = start(s)
    for job in plan.jobs:
        report(s, plan, job, now=0.01)
    s.handle(GroupAcked("a", plan.group, 0.030, 0.02))  # two slots: 15 ms each on average
    s.handle(GroupAcked("b", plan.group, 0.020, 0.02))
    assert rec.timings[0].busy_s == pytest.approx(0.020)


def test_clock_ignores_groups_without_results_and_aborted_ones() -> None:
    rec = Recorder(1)
    s = make(n_jobs=3, partitions=2, group_size=1, window=3, controller=rec)
    g0, g1, _g2 = start(s)
    finish_acks = [ack(s, g0, w) for w in ("a", "b")]  # acknowledged with no result
    assert not of(Observed, [i for out in finish_acks for i in out])
    report(s, g1, 1, worker="a", now=0.1)
    s.handle(WorkerLost("b", interleave_slots([("a", 1)]), 0.1))  # g1 is aborted
    assert s.handle(ResultsArrived("b", g1.group, [1], [1], [[0]], [0], 0.2)) == []
    assert rec.timings == []
    # A BSP group's waves add their launch costs; its start stays at the first launch.
    rec2 = Recorder(1)
    b = make(n_jobs=1, partitions=2, group_size=1, window=1, waves=2, controller=rec2)
    [plan] = start(b, now=0.0)
    b.handle(Launched(plan.group, 0.001))
    ack(b, plan, "a", now=0.5)
    [wave] = launches(ack(b, plan, "b", now=0.5))
    b.handle(Launched(plan.group, 0.002))
    report(b, wave, 0, now=0.6)
    for worker in ("a", "b"):
        ack(b, wave, worker, now=0.6)
    [timing] = rec2.timings
    assert timing.start == 0.0
    assert timing.coordination_s == pytest.approx(0.003)


# -- recovery, parametrized over when the loss happens ----------------------------------------

WHEN = ["before_launch", "mid_group", "after_results", "after_finish"]


def run_until(s: RunScheduler, when: str) -> list[GroupPlan]:
    """Start a run of 4 jobs in groups of 2 on a, b (window 2) and go as far as ``when``:
    ``mid_group``: job 0 done, job 1 half done; ``after_results``: the first group's results
    are all in (its acks are not), the second group has none; ``after_finish``: every result
    is in and only b's acks are outstanding."""
    plans = start(s)
    if when == "before_launch":
        return plans
    g0, g1 = plans
    report(s, g0, 0)
    report(s, g0, 1, worker="a")
    if when == "mid_group":
        return plans
    report(s, g0, 1, worker="b")
    if when == "after_results":
        return plans
    for job in g1.jobs:
        report(s, g1, job)
    assert s.finished
    ack(s, g0, "a")
    ack(s, g1, "a")
    return plans


@pytest.mark.parametrize("when", WHEN)
def test_a_lost_worker_reruns_unfinished_jobs_on_the_others(when: str) -> None:
    s = make(n_jobs=4, partitions=2, group_size=2, slots=ABC)
    plans = run_until(s, when)
    survivors = interleave_slots([("a", 1), ("c", 1)])
    out = s.handle(WorkerLost("b", survivors, 1.0))
    forgotten = {i.group for i in of(Forget, out)}
    assert forgotten == {p.group for p in plans}  # nothing awaits b any more
    if when == "after_finish":
        assert of(Cancel, out) == []  # done: nothing to re-run, only stop awaiting its acks
        assert of(Recovered, out) == []
        assert s.in_flight == {}
        return
    [cancel] = of(Cancel, out)
    assert (sorted(cancel.groups), cancel.lost) == (sorted(forgotten), "b")
    [recovered] = of(Recovered, out)
    rerun = {"before_launch": [0, 1, 2, 3], "mid_group": [1, 2, 3], "after_results": [2, 3]}[when]
    assert recovered.jobs == rerun
    # Re-run one job per group, on the survivors only, lowest job first.
    relaunched = launches(out)
    assert [(p.first_job, p.last_job) for p in relaunched] == [(j, j + 1) for j in rerun[:2]]
    assert all(p.workers <= {"a", "c"} for p in relaunched)
    # Finish everything on the survivors: each job is delivered exactly once.
    got = {"before_launch": [], "mid_group": [0], "after_results": [0, 1]}[when]
    pending = list(relaunched)
    while pending:
        plan = pending.pop(0)
        more, _ = finish_group(s, plan)
        got += delivered(more)
        pending += launches(more)
    assert sorted(got) == [0, 1, 2, 3]
    assert len(got) == len(set(got))
    assert s.finished


@pytest.mark.parametrize("when", WHEN)
def test_a_lost_worker_rolls_a_stateful_run_back(when: str) -> None:
    s = make(n_jobs=4, partitions=2, group_size=2, stateful=StatePolicy())
    plans = run_until(s, when)
    out = s.handle(WorkerLost("b", interleave_slots([("a", 1)]), 1.0))
    if when == "after_finish":
        assert [type(i) for i in out] == [Forget, Forget]  # retire: the output is complete
        assert s.failure is None
        return
    assert launches(out) == []
    [cancel] = of(Cancel, out)
    assert sorted(cancel.groups) == sorted(p.group for p in plans)
    assert of(Rollback, out)
    [fail] = of(Fail, out)
    assert isinstance(fail.error, StateRollback)
    assert "worker b was lost" in str(fail.error)
    assert s.in_flight == {}


def test_a_stateful_run_checkpoints_per_its_interval_and_commits_on_the_last_ack() -> None:
    s = make(n_jobs=6, partitions=2, group_size=2, window=1, stateful=StatePolicy(1.0, True))
    [first] = launches(s.handle(Start(0.0)))
    launch = of(Launch, s.handle(Consumed(0, 0.0)))
    assert launch == []  # window of one
    # The first group ships the restore and is checkpointed.
    assert s.in_flight[first.group].pieces == []
    piece = Piece([(7, 0)], [1], b"blob", "a", 0)
    s.handle(CheckpointArrived(first.group, piece))
    for job in first.jobs:
        report(s, first, job, now=0.5)
    ack(s, first, "a", now=0.5)
    out = ack(s, first, "b", now=0.5)
    assert Commit([piece]) in out
    [second] = launches(out)
    assert s.in_flight[second.group].pieces is None  # 0.5 s after the last: not checkpointed
    out, _ = finish_group(s, second)
    assert of(Commit, out) == []
    [third] = launches(out)
    assert third.first_job == 4


@pytest.mark.parametrize("when", WHEN)
def test_a_lost_data_link_reruns_the_groups_on_both_workers(when: str) -> None:
    s = make(n_jobs=4, partitions=2, group_size=2)
    run_until(s, when)
    out = s.handle(LinkLost("a", "b", 1.0))
    if when == "after_finish":
        assert out == []
        return
    [recovered] = of(Recovered, out)
    assert recovered.reason == "data link a <-> b lost"
    rerun = {"before_launch": [0, 1, 2, 3], "mid_group": [1, 2, 3], "after_results": [2, 3]}[when]
    assert recovered.jobs == rerun
    assert [p.first_job for p in launches(out)] == rerun[:2]
    assert of(Fail, out) == []


def test_a_link_between_workers_of_no_group_changes_nothing() -> None:
    s = make(n_jobs=4, partitions=2, group_size=2)
    start(s)
    assert s.handle(LinkLost("a", "z", 1.0)) == []


@pytest.mark.parametrize("when", WHEN)
def test_a_stall_reruns_what_lacks_results_and_retires_what_lacks_acks(when: str) -> None:
    s = make(n_jobs=4, partitions=2, group_size=2)
    plans = run_until(s, when)
    out = s.handle(Stalled(61.0, 1.0))
    forgotten = {i.group for i in of(Forget, out)}
    assert forgotten == {p.group for p in plans}
    if when == "after_finish":
        assert of(Cancel, out) == []  # every result is in: only acks were lost
        assert launches(out) == []
        return
    [cancel] = of(Cancel, out)
    rerun = {"before_launch": [0, 1, 2, 3], "mid_group": [1, 2, 3], "after_results": [2, 3]}[when]
    # A group with every result in is retired, not re-run (only its acks were lost).
    assert len(cancel.groups) == (1 if when == "after_results" else 2)
    [recovered] = of(Recovered, out)
    assert recovered.reason.startswith("no progress for 61.0 s (groups in flight: [0, 1])")
    assert recovered.jobs == rerun


def test_a_stall_after_an_ack_without_its_results_reruns_the_orphans() -> None:
    s = make(n_jobs=2, partitions=2, group_size=2, window=1)
    [plan] = start(s)
    report(s, plan, 0)
    for worker in ("a", "b"):  # acked, but job 1's result frames were lost
        ack(s, plan, worker)
    out = s.handle(Stalled(61.0, 1.0))
    [recovered] = of(Recovered, out)
    assert recovered.jobs == [1]
    [again] = launches(out)
    assert (again.first_job, again.last_job) == (1, 2)


def test_a_stateful_stall_rolls_back() -> None:
    s = make(n_jobs=4, partitions=2, group_size=2, stateful=StatePolicy())
    start(s)
    out = s.handle(Stalled(61.0, 1.0))
    [fail] = of(Fail, out)
    assert isinstance(fail.error, StateRollback)


def test_joining_workers_take_new_groups_and_a_stateful_run_stops_planning() -> None:
    s = make(n_jobs=8, partitions=2, group_size=2)
    start(s)
    out = s.handle(PlacementChanged(ABC, 0.0))
    assert out == []  # window full; the next groups use the new slots
    assert s.slots == ABC
    stateful = make(n_jobs=8, partitions=2, group_size=2, stateful=StatePolicy())
    g0, g1 = start(stateful)
    assert stateful.handle(PlacementChanged(ABC, 0.0)) == []
    for plan in (g0, g1):
        out, _ = finish_group(stateful, plan)
        assert launches(out) == []  # ends after the groups launched: the stream moves state
    assert stateful.finished
    assert stateful.n_jobs == 4


def test_losing_every_worker_waits_then_fails_naming_the_loss() -> None:
    s = make(n_jobs=4, partitions=2, group_size=2, no_workers_timeout=7.0)
    start(s)
    s.handle(WorkerLost("a", interleave_slots([("b", 1)]), 0.0))
    out = s.handle(WorkerLost("b", [], 0.0))
    assert WaitForWorkers(7.0) in out
    [fail] = of(Fail, s.handle(NoWorkersTimeout()))
    assert isinstance(fail.error, NoWorkersError)
    assert "worker b was lost" in str(fail.error)
    assert "none joined within 7 s" in str(fail.error)


def test_a_worker_joining_in_time_cancels_the_wait() -> None:
    s = make(n_jobs=4, partitions=2, group_size=2)
    start(s)
    s.handle(WorkerLost("a", interleave_slots([("b", 1)]), 0.0))
    s.handle(WorkerLost("b", [], 0.0))
    out = s.handle(PlacementChanged(interleave_slots([("c", 1)]), 0.0))
    assert WaitForWorkers(None) in out
    assert all(p.workers == {"c"} for p in launches(out))
    assert s.handle(NoWorkersTimeout()) == []


def test_a_run_started_without_workers_waits_for_one() -> None:
    s = make(n_jobs=2, partitions=2, slots=[], no_workers_timeout=3.0)
    assert s.handle(Start(0.0)) == [WaitForWorkers(3.0)]


def test_load_failures_and_broken_frames_fail_the_run_once() -> None:
    s = make()
    start(s)
    [fail] = s.handle(LoadFailed("slot 0 cannot load the program"))
    assert isinstance(fail.error, SerializationError)
    assert s.handle(Broken(RuntimeError("x"))) == []
    assert s.handle(Consumed(1, 0.0)) == []  # a failed run launches nothing more


def test_a_closed_run_launches_nothing_but_still_retires_its_groups() -> None:
    s = make(n_jobs=10, partitions=2, group_size=2)
    g0, _g1 = start(s)
    s.handle(Closed())
    out, _ = finish_group(s, g0)
    assert Forget(g0.group, acked=True) in out
    assert launches(out) == []
    out = s.handle(WorkerLost("b", interleave_slots([("a", 1)]), 0.0))
    assert [type(i) for i in out] == [Forget]


@given(
    losses=st.dictionaries(st.integers(0, 40), st.sampled_from(["a", "b", "c"]), max_size=2),
    group_size=st.integers(1, 4),
)
def test_every_job_is_delivered_exactly_once_whatever_is_lost_when(
    losses: dict[int, str], group_size: int
) -> None:
    """Worker losses at random points among the results (one worker always remains)."""
    s = make(n_jobs=8, partitions=3, group_size=group_size, slots=ABC)
    alive = {"a", "b", "c"}
    got: list[int] = []
    pending: list[GroupPlan] = []

    def run(out: list[Any]) -> None:
        got.extend(delivered(out))
        pending.extend(launches(out))
        gone = {i.group for i in of(Forget, out) if not i.acked}
        pending[:] = [p for p in pending if p.group not in gone]

    run(s.handle(Start(0.0)))
    step = 0
    while pending:
        plan = pending.pop(0)
        for job, share in itertools.product(plan.jobs, plan.shares):
            step += 1
            lost = losses.get(step)
            if lost in alive and len(alive) > 1:
                alive.discard(lost)
                survivors = interleave_slots([(w, 1) for w in sorted(alive)])
                run(s.handle(WorkerLost(lost, survivors, 0.0)))
            if plan.group not in s.in_flight:
                break  # aborted by that loss: its jobs run again in new groups
            run(report(s, plan, job, worker=share.worker))
        else:
            for share in plan.shares:
                run(ack(s, plan, share.worker))
    assert sorted(got) == list(range(8))
    assert s.finished
