"""The driver's per-job bookkeeping (adrizzle.driver.jobs.JobLedger), by plain calls."""

from __future__ import annotations

import pytest

from adrizzle.driver.jobs import JobLedger, per_job
from adrizzle.plan.failure import TaskFailure


def test_a_frame_of_several_jobs_delivers_them_in_job_order_once_all_slots_answered() -> None:
    ledger = JobLedger(n_jobs=3, partitions=4)
    ledger.open(range(0, 3))
    # Slot A holds partitions 0 and 2 of every job; slot B holds 1 and 3.
    out, completed = ledger.record_frame(
        "a", [0, 1, 2], [0, 2], [[0, 2], [10, 12], [20, 22]], [0] * 3
    )
    assert (out, completed) == ([], False)
    out, completed = ledger.record_frame("b", [1, 2], [1, 3], [[11, 13], [21, 23]], [0, 0])
    assert out == []  # job 1 is complete but job 0 is not: delivery is in job order
    assert completed
    out, completed = ledger.record_frame("b", [0], [1, 3], [[1, 3]], [0])
    assert [(o.index, o.values) for o in out] == [
        (0, [0, 1, 2, 3]),
        (1, [10, 11, 12, 13]),
        (2, [20, 21, 22, 23]),
    ]
    # A late duplicate of a finished job is ignored, and counts as complete.
    assert ledger.record_frame("a", [1], [0, 2], [[99, 99]], [0]) == ([], True)


def test_the_lowest_failed_partition_is_reported_whichever_slot_answers_first() -> None:
    ledger = JobLedger(n_jobs=1, partitions=4)
    ledger.open(range(1))
    boom = TaskFailure("ValueError", "bad 3", "")
    ledger.record_frame("b", [0], [1, 3], [[1, boom]], [1])
    out, _ = ledger.record_frame("a", [0], [0, 2], [[0, TaskFailure("KeyError", "bad 2", "")]], [1])
    assert out[0].values is None
    assert out[0].error is not None
    assert (out[0].error.partition, out[0].error.worker) == (2, "a")


def test_a_frame_whose_values_do_not_match_its_partitions_is_refused() -> None:
    ledger = JobLedger(n_jobs=1, partitions=2)
    ledger.open(range(1))
    with pytest.raises(ValueError, match="job 0: 2 partitions but 1 values"):
        ledger.record_frame("a", [0], [0, 1], [[5]], [0])


@pytest.mark.parametrize(
    ("parts", "values"),
    [
        ([0, 2], [0, 2]),  # every other partition: filed by one slice assignment
        ([1, 2], [1, 2]),  # contiguous
        ([0, 1, 3], [0, 1, 3]),  # uneven (a slot with two placement entries): one by one
        ([3], [3]),
    ],
)
def test_a_slot_s_partitions_are_filed_in_place_however_they_are_spaced(
    parts: list[int], values: list[int]
) -> None:
    ledger = JobLedger(n_jobs=1, partitions=4)
    ledger.open(range(1))
    rest = [p for p in range(4) if p not in parts]
    ledger.record_frame("a", [0], parts, [values], [0])
    out, _ = ledger.record_frame("b", [0], rest, [rest], [0])
    assert [o.values for o in out] == [[0, 1, 2, 3]]


@pytest.mark.parametrize("parts", [[2, 3, 4], [3, 5], [-1, 1]])
def test_partitions_out_of_range_are_an_error_not_a_longer_list(parts: list[int]) -> None:
    ledger = JobLedger(n_jobs=1, partitions=4)
    ledger.open(range(1))
    with pytest.raises(ValueError, match=r"partitions .* not in 0..3"):
        ledger.record_frame("a", [0], parts, [list(parts)], [0])
    assert ledger.describe_missing() == "job 0 lacks 4 partitions"


def test_a_connector_batch_waits_for_its_source_ranges_unless_a_read_failed() -> None:
    ledger = JobLedger(n_jobs=2, partitions=2, sources=2)
    ledger.open(range(2))
    boom = TaskFailure("OSError", "the read failed", "")
    out, _ = ledger.record_frame("a", [0, 1], [0, 1], [[1, 2], [3, boom]], [0, 1])
    assert out == []  # job 0 lacks its ranges; job 1 (failed, no ranges) waits behind it
    assert ledger.add_positions([[0, 0, 0, 5]]) == []
    out = ledger.add_positions([[0, 1, 0, 7]])
    assert [(o.index, o.values, o.positions) for o in out] == [
        (0, [1, 2], {0: (0, 5), 1: (0, 7)}),
        (1, None, {}),
    ]
    assert out[1].error is not None
    assert out[1].error.partition == 1
    assert ledger.finished


def test_a_result_payload_is_read_per_job_and_a_wrong_one_is_named() -> None:
    assert per_job([1, 2, 3, 4], jobs=2, parts=2) == [[1, 2], [3, 4]]
    assert per_job([7, 8], jobs=2, parts=1) == [[7], [8]]
    assert per_job([], jobs=2, parts=0) == [[], []]
    with pytest.raises(ValueError, match="2 jobs x 2 partitions but 3 values"):
        per_job([1, 2, 3], jobs=2, parts=2)
    with pytest.raises(ValueError, match="expected a list of values, got dict"):
        per_job({}, jobs=0, parts=0)
