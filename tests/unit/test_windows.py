"""Event-time windows and slot-resident stream state as plain functions (no engine)."""

from __future__ import annotations

import collections
import functools
import math
import operator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrizzle.errors import StateOrderError
from adrizzle.plan.partitioning import partition_of
from adrizzle.plan.program import BatchSource, ShuffleRead, ShuffleWrite
from adrizzle.plan.state import PartitionState, StateUpdate, update_by_key
from adrizzle.plan.windows import (
    EventTime,
    MarkKey,
    WindowResult,
    WindowSpec,
    assign_windows,
    close_windows,
    merge_marked,
    window_index,
)


def test_tumbling_windows_hold_each_time_once() -> None:
    spec = WindowSpec(10.0, 10.0)
    assert spec.windows_of(0.0) == [0]
    assert spec.windows_of(9.999) == [0]
    assert spec.windows_of(10.0) == [1]
    assert spec.windows_of(-0.5) == [-1]
    assert (spec.start(3), spec.end(3)) == (30.0, 40.0)


@given(
    t=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    slide=st.sampled_from([0.5, 1.0, 2.0, 2.5]),
    per=st.integers(min_value=1, max_value=5),
)
def test_sliding_windows_are_exactly_those_that_contain_t(t: float, slide: float, per: int) -> None:
    spec = WindowSpec(slide * per, slide)
    found = spec.windows_of(t)
    assert found
    # Exact up to float noise: within a few roundings of a boundary, t counts as on it.
    eps = 16 * math.ulp(max(abs(t), spec.size))
    assert all(spec.start(w) - eps <= t < spec.end(w) + eps for w in found)
    # No window just outside the list contains t either.
    for w in (found[0] - 1, found[-1] + 1):
        assert not spec.start(w) + eps <= t < spec.end(w) - eps
    assert found == list(range(found[0], found[-1] + 1))


@pytest.mark.parametrize(
    ("size", "slide", "lateness"), [(0.0, 0.0, 0.0), (1.0, 2.0, 0.0), (1.0, 0.0, 0.0), (1, 1, -1)]
)
def test_bad_window_specs_are_refused(size: float, slide: float, lateness: float) -> None:
    with pytest.raises(ValueError, match=r"size|lateness"):
        WindowSpec(size, slide, lateness)


def test_mark_keys_reach_their_reducer() -> None:
    for n in (1, 2, 3, 7, 16):
        assert [partition_of(MarkKey(r), n) for r in range(n)] == list(range(n))
    assert MarkKey(3) == MarkKey(3)
    assert MarkKey(3) != MarkKey(4)
    assert MarkKey(2) != 2


def test_merge_keeps_the_largest_mark_and_combines_values() -> None:
    assert merge_marked(operator.add, 2, 3) == 5
    assert merge_marked(operator.add, EventTime(4.0), EventTime(9.0)) == EventTime(9.0)
    assert merge_marked(operator.add, EventTime(9.0), EventTime(4.0)) == EventTime(9.0)


def run_windows(
    spec: WindowSpec, batches: list[list[tuple[str, float]]], maps: int = 3, reducers: int = 2
) -> tuple[list[tuple[int, WindowResult]], list[dict]]:
    """The engine's window stage, by hand: per batch, ``maps`` map partitions (round robin),
    the shuffle (ShuffleWrite + ShuffleRead), then the stateful close per reducer."""
    count = functools.partial(merge_marked, operator.add)
    write = ShuffleWrite(reducers, count)
    read = ShuffleRead("reduce_by_key", ((0, maps),), count)
    states = [{} for _ in range(reducers)]
    out: list[tuple[int, WindowResult]] = []
    for b, events in enumerate(batches):
        last = b == len(batches) - 1
        parts = [events[m::maps] for m in range(maps)]
        blocks = [
            write.split(assign_windows(spec, lambda kv: kv[1], lambda kv: 1, reducers, iter(p)))
            for p in parts
        ]
        for r in range(reducers):
            items = read.read([[blocks[m][r] for m in range(maps)]])
            for res in close_windows(spec, operator.add, states[r], items, b, last):
                out.append((b, res))
    return out, states


def plain_counts(spec: WindowSpec, events: list[tuple[str, float]]) -> dict:
    counts: collections.Counter = collections.Counter()
    for key, t in events:
        for w in spec.windows_of(t):
            counts[(key, spec.start(w))] += 1
    return dict(counts)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from("abc"), st.floats(min_value=0, max_value=0.999)),
            max_size=12,
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([(1.0, 1.0), (2.0, 1.0), (1.5, 0.5)]),
)
def test_in_order_batches_give_exact_counts_once_per_window(
    raw: list[list[tuple[str, float]]], shape: tuple[float, float]
) -> None:
    # Batch b holds events of [b, b + 1): event time never goes back across batches.
    batches = [[(k, b + f) for k, f in events] for b, events in enumerate(raw)]
    spec = WindowSpec(*shape)
    out, states = run_windows(spec, batches)
    emitted = [(r.key, r.start) for _b, r in out]
    assert len(emitted) == len(set(emitted)), "a window was emitted twice"
    assert {(r.key, r.start): r.value for _b, r in out} == plain_counts(
        spec, [e for batch in batches for e in batch]
    )
    assert all(s.get("late", 0) == 0 for s in states)
    # A window emitted before the end is complete: its end is at or below the watermark then.
    latest = -math.inf
    for b, batch in enumerate(batches):
        latest = max([latest, *(t for _k, t in batch)])
        for ob, r in out:
            if ob == b and r.complete:
                assert r.end <= latest


def test_windows_close_when_the_watermark_passes_their_end() -> None:
    spec = WindowSpec(10.0, 10.0)
    batches = [[("a", 1.0), ("a", 5.0)], [("a", 9.0), ("b", 12.0)], [("b", 25.0)]]
    out, _ = run_windows(spec, batches, maps=2, reducers=1)
    assert out == [
        (1, WindowResult("a", 0.0, 10.0, 3, True)),  # 12 passed 10
        (2, WindowResult("b", 10.0, 20.0, 1, True)),  # 25 passed 20
        (2, WindowResult("b", 20.0, 30.0, 1, False)),  # flushed: the source ended
    ]


def test_late_values_are_dropped_and_counted_lateness_keeps_windows_open() -> None:
    spec = WindowSpec(10.0, 10.0)
    late = [[("a", 11.0)], [("a", 3.0)], [("a", 30.0)]]
    out, states = run_windows(spec, late, maps=1, reducers=1)
    assert (0, WindowResult("a", 10.0, 20.0, 1, True)) not in out  # 11 does not pass 20
    assert [(b, r.start, r.complete) for b, r in out] == [(2, 10.0, True), (2, 30.0, False)]
    assert states[0]["late"] == 1  # the watermark (11) had passed 3.0's window end (10)
    spec_lateness = WindowSpec(10.0, 10.0, lateness=5.0)
    out, states = run_windows(spec_lateness, [[("a", 12.0)], [("a", 16.0)], [("a", 5.0)]], 1, 1)
    assert [(b, r.start, r.value, r.complete) for b, r in out] == [
        (2, 10.0, 2, False),
    ]
    assert states[0]["late"] == 1  # [0, 10) closed at batch 1 (16 - 5 >= 10): 5.0 is late


# -- StateUpdate: batches in order, state on the slot ---------------------------------------


def counting(state: dict, items, batch: int, last: bool) -> list:
    state["n"] = state.get("n", 0) + sum(1 for _ in items)
    return [(batch, state["n"], last)]


def test_state_update_applies_batches_in_order_and_keeps_state() -> None:
    states: dict = {}
    step = StateUpdate(7, first_batch=0, run_first=0, func=counting, last_batch=2)
    assert list(step(states, 3, iter("ab"), 0)) == [(0, 2, False)]
    assert list(step(states, 3, iter("c"), 1)) == [(1, 3, False)]
    later_run = StateUpdate(7, first_batch=0, run_first=2, func=counting, last_batch=2)
    assert list(later_run(states, 3, iter("d"), 0)) == [(2, 4, True)]
    assert states[(7, 3)] == PartitionState({"n": 4}, 2)
    with pytest.raises(StateOrderError, match="micro-batch 1 arrived after 2"):
        step(states, 3, iter(""), 1)
    with pytest.raises(StateOrderError, match="not on this slot at micro-batch 5"):
        step(states, 4, iter(""), 5)


def test_state_update_output_is_materialized() -> None:
    """The state changes even if the job's action reads none of the step's output."""
    states: dict = {}
    step = StateUpdate(1, first_batch=0, run_first=0, func=counting)
    step(states, 0, iter("xyz"), 0)
    assert states[(1, 0)].data == {"n": 3}


def testupdate_by_key_emits_new_states_and_deletes_on_none() -> None:
    state: dict = {"gone": 5}

    def func(values: list[int], total: int | None) -> int | None:
        return None if sum(values) < 0 else (total or 0) + sum(values)

    out = update_by_key(func, False, state, [("a", [1, 2]), ("gone", [-1])], 0, False)
    assert out == [("a", 3), ("gone", None)]
    assert state == {"a": 3}
    assert update_by_key(func, True, state, [("a", 4)], 1, False) == [("a", 7)]


def testupdate_by_key_leaves_state_alone_when_func_raises() -> None:
    state: dict = {"a": 1}

    def func(values: list[int], total: int | None) -> int:
        if values == ["boom"]:
            raise ValueError("boom")
        return (total or 0) + 1

    with pytest.raises(ValueError, match="boom"):
        update_by_key(func, True, state, [("a", 1), ("b", "boom")], 0, False)
    assert state == {"a": 1}


def test_batch_source_reads_batches_by_job_and_knows_when_they_are_due() -> None:
    src = BatchSource(1, lambda b, p: [(b, p)], first_batch=10, interval=0.5, start=100.0)
    assert list(src.read(2, {}, 3)) == [(13, 2)]
    assert src.ready_at(0) == 100.0 + 11 * 0.5
    unpaced = BatchSource(1, lambda b, p: [b], first_batch=0)
    assert unpaced.ready_at(5) is None


def test_event_times_on_a_window_boundary_open_the_window_there() -> None:
    # Integer milliseconds turned into float seconds: 21.6 / 0.2 == 107.99999999999999.
    assert window_index(21.6, 0.2) == 108
    assert window_index(1795599921600 / 1000, 0.2) == 8977999608
    assert window_index(21.59, 0.2) == 107
    assert window_index(-0.2, 0.2) == -1
    for ms in range(0, 100_000, 37):  # the same answer as integer arithmetic, everywhere
        assert window_index(ms / 1000, 0.2) == ms // 200, ms
        assert window_index(ms / 1000, 0.3) == ms // 300, ms
    sliding = WindowSpec(0.6, 0.2)
    assert sliding.windows_of(21.6) == [106, 107, 108]  # [21.2, 21.8), [21.4, 22.0), [21.6, ...)
    assert sliding.windows_of(21.7) == [106, 107, 108]
