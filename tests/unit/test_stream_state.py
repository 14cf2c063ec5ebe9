"""State timeouts, session windows and the idle watermark as plain functions (no engine)."""

from __future__ import annotations

import functools
import operator
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import adrizzle
from adrizzle.plan.partitioning import partition_of
from adrizzle.plan.program import ShuffleWrite
from adrizzle.plan.sessions import assign_sessions, close_sessions, extend
from adrizzle.plan.state import STATE_TIMEOUT, BatchClock, update_with_timeout
from adrizzle.plan.windows import (
    MarkKey,
    WindowResult,
    WindowSpec,
    assign_windows,
    close_windows,
    merge_marked,
)


class Counter:
    """Stands in for an accumulator: what the steps add to it."""

    def __init__(self) -> None:
        self.value = 0

    def add(self, n: int) -> None:
        self.value += n


def test_state_timeout_marker_is_one_read_only_empty_list() -> None:
    assert adrizzle.STATE_TIMEOUT is STATE_TIMEOUT
    assert pickle.loads(pickle.dumps(STATE_TIMEOUT)) is STATE_TIMEOUT
    assert list(STATE_TIMEOUT) == []
    assert len(STATE_TIMEOUT) == 0
    with pytest.raises(TypeError, match="read-only"):
        STATE_TIMEOUT.append(1)


def test_batch_clock_is_the_batch_interval_end_when_paced() -> None:
    assert BatchClock(100.0, 0.5)(3) == 102.0
    assert BatchClock(None, 0.5)(3) > 1e9  # not paced: the wall clock


def count_or_expire(values: list[int], seen: int | None) -> int | None:
    if values is STATE_TIMEOUT:
        return None if seen is not None and seen >= 3 else -1  # keep small ones, marked
    return (seen or 0) + len(values)


def test_a_key_without_values_for_the_timeout_gets_the_marker_once_per_timeout() -> None:
    step = functools.partial(update_with_timeout, count_or_expire, False, 2.0, BatchClock(0.0, 1.0))
    state: dict[str, Any] = {}
    # batch b happens at time b + 1
    assert step(state, [("a", [1, 2, 3]), ("b", [1])], 0, False) == [("a", 3), ("b", 1)]
    assert step(state, [("b", [5])], 1, False) == [("b", 2)]
    assert step(state, [], 2, False) == [("a", None)]  # 2 s since its update at 1: dropped
    assert state["values"] == {"b": 2}
    assert step(state, [], 3, False) == [("b", -1)]  # timed out and kept (with -1)
    assert step(state, [], 4, False) == []  # its timer restarted at 4
    assert step(state, [], 5, False) == [("b", -1)]
    # A func that raises changes nothing.
    with pytest.raises(TypeError):
        step(state, [("c", None)], 6, False)
    assert state["values"] == {"b": -1}


def session_values(events: list[tuple[Any, float]], gap: float) -> list[WindowResult]:
    """Plain Python: sort each key's events by time, split where the gap is >= ``gap``."""
    by_key: dict[Any, list[float]] = {}
    for key, t in events:
        by_key.setdefault(key, []).append(t)
    out = []
    for key, times in by_key.items():
        times.sort()
        start = prev = times[0]
        values = [times[0]]
        for t in times[1:]:
            if t - prev >= gap:
                out.append(WindowResult(key, start, prev + gap, values, False))
                start, values = t, []
            values.append(t)
            prev = t
        out.append(WindowResult(key, start, prev + gap, values, False))
    return sorted(out, key=repr)


def run_sessions(
    batches: list[list[tuple[Any, float]]], gap: float, maps: int, reducers: int
) -> tuple[list[WindowResult], int]:
    """The operator's map side, shuffle and stateful step over micro-batches, in-process."""
    states: list[dict[str, Any]] = [{} for _ in range(reducers)]
    late = Counter()
    out: list[WindowResult] = []
    write = ShuffleWrite(reducers, functools.partial(merge_marked, extend))
    for b, events in enumerate(batches):
        per_map = [events[m::maps] for m in range(maps)]
        blocks = [
            write.split(
                assign_sessions(
                    operator.itemgetter(1), operator.itemgetter(1), reducers, iter(part)
                )
            )
            for part in per_map
        ]
        for r in range(reducers):
            merged: dict[Any, Any] = {}
            for m in range(maps):
                for k, v in blocks[m][r].items():
                    merged[k] = merge_marked(extend, merged[k], v) if k in merged else v
            out += close_sessions(
                gap, None, 0.0, states[r], iter(merged.items()), b, b == len(batches) - 1,
                late=late,
            )  # fmt: skip
    return out, late.value


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 60).map(float)), max_size=40),
    gap=st.sampled_from([1.0, 3.0, 7.5]),
    maps=st.integers(1, 3),
    reducers=st.integers(1, 3),
)
def test_sessions_equal_plain_python_when_events_arrive_in_order(
    events: list[tuple[str, float]], gap: float, maps: int, reducers: int
) -> None:
    events = sorted(events, key=operator.itemgetter(1))
    batches = [events[i : i + 5] for i in range(0, len(events), 5)] or [[]]
    out, late = run_sessions(batches, gap, maps, reducers)
    assert late == 0
    got = sorted((r._replace(complete=False) for r in out), key=repr)
    assert got == session_values(events, gap)
    watermark = max((t for _k, t in events), default=None)
    for r in out:  # emitted before the end only when the source ended
        assert r.complete == (watermark is not None and r.end <= watermark)


def test_a_late_event_bridging_nothing_is_dropped_and_counted() -> None:
    out, late = run_sessions([[("a", 1.0), ("a", 2.0)], [("a", 20.0)], [("a", 3.0)]], 5.0, 1, 1)
    assert [(r.key, r.start, r.end, r.value) for r in out] == [
        ("a", 1.0, 7.0, [1.0, 2.0]),
        ("a", 20.0, 25.0, [20.0]),
    ]
    assert late == 1  # 3.0's session would end at 8 <= the watermark 20


def test_an_event_bridging_two_open_sessions_merges_them() -> None:
    state: dict[str, Any] = {}

    def step(items: list[tuple[Any, Any]], batch: int, last: bool = False) -> list[WindowResult]:
        # gap 5, lateness 10: nothing closes before the end
        return list(close_sessions(5.0, operator.add, 10.0, state, iter(items), batch, last))

    assert step([("k", [(1.0, 1), (10.0, 10)])], 0) == []
    assert len(state["sessions"]["k"]) == 2
    assert step([("k", [(5.5, 100)])], 1, last=True) == [WindowResult("k", 1.0, 15.0, 111, False)]


def test_the_idle_watermark_closes_windows_on_a_quiet_stream() -> None:
    spec = WindowSpec(10.0, 10.0)
    clock = BatchClock(0.0, 1.0)  # batch b at time b + 1
    step = functools.partial(close_windows, spec, operator.add, idle_timeout=3.0, clock=clock)
    state: dict[str, Any] = {}
    items = dict(assign_windows(spec, operator.itemgetter(1), None, 1, iter([("k", 5.0)])))
    assert list(step(state, iter(items.items()), 0, False)) == []  # seen at time 1, watermark 5
    assert list(step(state, iter([]), 1, False)) == []  # quiet for 1 s
    assert list(step(state, iter([]), 2, False)) == []  # 2 s
    assert list(step(state, iter([]), 3, False)) == []  # 3 s: watermark 5 + 3 = 8 < 10
    assert list(step(state, iter([]), 5, False)) == [WindowResult("k", 0.0, 10.0, 5.0, True)]  # 10
    plain = functools.partial(close_windows, spec, operator.add)  # no idle_timeout
    state = {}
    assert list(plain(state, iter(items.items()), 0, False)) == []
    assert list(plain(state, iter([]), 100, False)) == []  # nothing moves it


def test_late_values_are_counted_for_the_driver() -> None:
    spec = WindowSpec(1.0, 1.0)
    late = Counter()
    state: dict[str, Any] = {}
    for t in (0.5, 3.0, 0.2, 0.7, 2.9):
        items = dict(assign_windows(spec, operator.itemgetter(1), None, 1, iter([("k", t)])))
        list(close_windows(spec, operator.add, state, iter(items.items()), 0, False, late=late))
    # 0.2 and 0.7 after window [0, 1) was emitted, 2.9 after [2, 3): the watermark is 3
    assert late.value == state["late"] == 3
    assert partition_of(MarkKey(0), 1) == 0
