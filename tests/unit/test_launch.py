"""The launch encoder's view of a run's programs as runs of one program repeated (pure)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace
from typing import Any

import pytest

from adrizzle.driver.launch import LaunchEncoder, program_runs

pytestmark = pytest.mark.timeout(30)


def program(name: str) -> Any:
    return SimpleNamespace(stages=[name])


def encoder(programs: list[Any]) -> LaunchEncoder:
    return LaunchEncoder(programs, blocks=None, linger_us=0, pre_schedule=True)  # type: ignore[arg-type]


def test_a_repeated_program_is_one_run() -> None:
    a = program("a")
    assert program_runs([a] * 5) == ([0], [a])
    assert program_runs([]) == ([], [])


def test_runs_split_where_the_object_changes_even_if_equal() -> None:
    a, b = program("a"), program("a")  # equal, not the same object: two runs
    starts, runs = program_runs([a, a, b, a])
    assert starts == [0, 2, 3]
    assert [r is x for r, x in zip(runs, [a, b, a], strict=True)] == [True] * 3


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        (0, 7, [(3, "a"), (2, "b"), (2, "a2")]),
        (1, 3, [(2, "a")]),
        (2, 4, [(1, "a"), (1, "b")]),
        (4, 6, [(1, "b"), (1, "a2")]),
        (6, 7, [(1, "a2")]),
    ],
)
def test_runs_in_a_group_count_its_jobs_per_program(
    first: int, last: int, expected: list[tuple[int, str]]
) -> None:
    a, b, a2 = program("a"), program("b"), program("a2")
    named = {id(a): "a", id(b): "b", id(a2): "a2"}
    enc = encoder([a, a, a, b, b, a2, a2])
    assert [(n, named[id(p)]) for n, p in enc.runs_in(first, last)] == expected
    # Every job of the group is counted once.
    assert sum(n for n, _p in enc.runs_in(first, last)) == last - first


def test_program_blob_is_the_groups_programs_and_reused_for_the_same_runs() -> None:
    a, b = program("a"), program("b")
    enc = encoder([a] * 4 + [b] * 4)
    first = enc.program_blob(SimpleNamespace(first_job=0, last_job=2))  # type: ignore[arg-type]
    again = enc.program_blob(SimpleNamespace(first_job=1, last_job=3))  # type: ignore[arg-type]
    assert again is first  # same runs (2 x a): pickled once
    assert [p.stages for p in pickle.loads(first)] == [["a"], ["a"]]
    mixed = enc.program_blob(SimpleNamespace(first_job=3, last_job=6))  # type: ignore[arg-type]
    assert [p.stages for p in pickle.loads(mixed)] == [["a"], ["b"], ["b"]]
    shorter = enc.program_blob(SimpleNamespace(first_job=6, last_job=7))  # type: ignore[arg-type]
    assert [p.stages for p in pickle.loads(shorter)] == [["b"]]
