"""The adaptive group size controller and the scheduler's size hook, driven by scripted timings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adrizzle.driver.adaptive import (
    AdaptiveGroupSize,
    GroupSizeController,
    GroupTiming,
    resolve_group_size,
)

BATCH = 0.010  # seconds of work per micro-batch in the scripts below


def saturated(group: int, size: int, per_group: float, coordination: float = 0.0) -> GroupTiming:
    """A group that ran back to back with the one before: ``per_group`` seconds of fixed cost
    before its first result, then one result every ``BATCH``."""
    first = per_group + BATCH
    return GroupTiming(
        group, size, 0.0, first, first + (size - 1) * BATCH, coordination_s=coordination
    )


def paced(group: int, size: int, interval: float, coordination: float) -> GroupTiming:
    """A group whose batches wait for their data: one result per ``interval``."""
    return GroupTiming(group, size, 0.0, interval, size * interval, coordination_s=coordination)


def drive(c: GroupSizeController, timing, groups: int) -> list[int]:
    """Observe ``groups`` groups, each planned at the controller's size; sizes as planned."""
    sizes = []
    for g in range(groups):
        size = c.next_size()
        sizes.append(size)
        c.observe(timing(g, size))
    return sizes


def test_grows_multiplicatively_while_overhead_is_above_the_upper_bound() -> None:
    c = GroupSizeController(AdaptiveGroupSize(samples=1, max_size=64))
    # 20 ms fixed per group against 10 ms per batch: 50 % at G=2, 11 % at G=16, 5.9 % at 32.
    sizes = drive(c, lambda g, size: saturated(g, size, per_group=0.02), 8)
    assert sizes == [1, 2, 4, 8, 16, 32, 32, 32]
    assert [d.action for d in c.decisions] == ["grow"] * 5 + ["hold"] * 3


def test_shrinks_additively_below_the_lower_bound_and_holds_in_between() -> None:
    policy = AdaptiveGroupSize(samples=1, initial=20, max_size=64)
    c = GroupSizeController(policy)
    # A fixed cost of 4 % of 20 batches: below 5 %: one step down per group.
    sizes = drive(c, lambda g, size: saturated(g, size, per_group=0.04 * 0.2), 3)
    assert sizes == [20, 19, 18]
    # Overhead between the bounds: the size holds.
    c2 = GroupSizeController(policy)
    drive(c2, lambda g, size: saturated(g, size, per_group=0.07 * 0.2), 5)
    assert c2.size == 20
    assert {d.action for d in c2.decisions} == {"hold"}


def test_settles_between_the_bounds() -> None:
    c = GroupSizeController(AdaptiveGroupSize(samples=1, max_size=1000))
    sizes = drive(c, lambda g, size: saturated(g, size, per_group=0.008), 200)
    # fixed 8 ms: overhead 0.008 / (0.01 G + 0.008) is within [5 %, 10 %] for G in 8..15.
    assert all(8 <= s <= 16 for s in sizes[-50:])
    overhead = [d.overhead for d in list(c.decisions)[-50:]]
    assert all(0.04 <= o <= 0.11 for o in overhead)


def test_bounds_of_the_size_are_respected() -> None:
    up = GroupSizeController(AdaptiveGroupSize(samples=1, max_size=6))
    assert max(drive(up, lambda g, s: saturated(g, s, per_group=1.0), 10)) == 6
    down = GroupSizeController(AdaptiveGroupSize(samples=1, min_size=3, initial=5))
    assert drive(down, lambda g, s: saturated(g, s, per_group=0.0), 6) == [5, 4, 3, 3, 3, 3]


def test_decides_on_the_median_of_samples_at_the_current_size() -> None:
    c = GroupSizeController(AdaptiveGroupSize(samples=3, initial=4))
    quiet = saturated(0, 4, per_group=0.0025)  # 6 %: hold
    spike = saturated(1, 4, per_group=0.5)  # one noisy group
    assert c.observe(quiet).action == "wait"
    assert c.observe(spike).action == "wait"
    assert c.observe(quiet).action == "hold"  # median of (6 %, 93 %, 6 %)
    assert c.size == 4


def test_groups_planned_before_a_change_do_not_count() -> None:
    c = GroupSizeController(AdaptiveGroupSize(samples=1))
    assert c.observe(saturated(0, 1, per_group=0.01)).action == "grow"
    # The window still holds a group planned at size 1; its timing says nothing about 2.
    assert c.observe(saturated(1, 1, per_group=0.0)).action == "stale"
    assert c.size == 2


def test_paced_batches_without_busy_time_are_judged_on_wall_time() -> None:
    """A stream waiting for its data, slots' busy time unknown: results one interval apart and
    little driver time read as little overhead, so the group shrinks."""
    c = GroupSizeController(AdaptiveGroupSize(samples=2, initial=16))
    sizes = drive(c, lambda g, size: paced(g, size, interval=0.01, coordination=0.0002), 60)
    assert sizes[-1] < 16
    assert sizes == sorted(sizes, reverse=True)
    assert c.per_batch_s == pytest.approx(0.01)


def paced_busy(group: int, size: int, work: float, fixed: float) -> GroupTiming:
    """Paced at 10 ms per batch; the slots were busy ``work`` per batch plus ``fixed`` per
    group; the driver spent 1 ms on the group."""
    return GroupTiming(
        group, size, 0.0, 0.01, size * 0.01, coordination_s=0.001, busy_s=fixed + size * work
    )


def test_paced_batches_are_judged_on_the_time_the_slots_worked() -> None:
    # Tiny batches: 1 ms of driver time is a large part of the little work done: grow.
    light = GroupSizeController(AdaptiveGroupSize(samples=1))
    sizes = drive(light, lambda g, size: paced_busy(g, size, work=0.0001, fixed=0.001), 12)
    assert sizes[:6] == [1, 2, 4, 8, 16, 32]
    # Heavy batches (8 of every 10 ms busy): coordination is a sliver of the work: shrink.
    heavy = GroupSizeController(AdaptiveGroupSize(samples=1, initial=8))
    sizes = drive(heavy, lambda g, size: paced_busy(g, size, work=0.008, fixed=0.001), 5)
    assert sizes == [8, 7, 6, 5, 4]
    assert heavy.decisions[0].active_s == pytest.approx(0.001 + 0.064 + 0.001)


def test_dispatch_delay_beyond_one_batch_counts_as_overhead() -> None:
    c = GroupSizeController(AdaptiveGroupSize(samples=1, initial=4))
    d = c.observe(saturated(0, 4, per_group=0.003, coordination=0.001))
    assert d.dispatch_s == pytest.approx(0.003)
    assert d.overhead == pytest.approx(0.004 / 0.043)
    assert d.action == "hold"


def test_summary_lists_sizes_and_recent_decisions() -> None:
    c = GroupSizeController(AdaptiveGroupSize(samples=1))
    drive(c, lambda g, size: saturated(g, size, per_group=0.005), 3)
    summary = c.summary()
    assert summary["groups_per_size"] == {1: 1, 2: 1, 4: 1}
    assert [d["size"] for d in summary["recent"]] == [1, 2, 4]
    assert summary["policy"]["upper"] == 0.10


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lower": 0.2, "upper": 0.1},
        {"upper": 1.5},
        {"min_size": 0},
        {"min_size": 5, "max_size": 4},
        {"initial": 200},
        {"factor": 1.0},
        {"step": 0},
        {"samples": 0},
    ],
)
def test_bad_configuration_is_refused(kwargs) -> None:
    with pytest.raises(ValueError, match="group size"):
        AdaptiveGroupSize(**kwargs)


def test_resolve_group_size() -> None:
    assert resolve_group_size(7) == (7, None)
    size, c = resolve_group_size("auto")
    assert size == 128
    assert c is not None
    assert c.size == 1
    size, c = resolve_group_size(AdaptiveGroupSize(max_size=9, initial=3))
    assert size == 9
    assert c is not None
    assert c.size == 3
    assert resolve_group_size(c) == (9, c)
    for bad in (0, -1, "big", 2.5, True):
        with pytest.raises(ValueError, match="group_size"):
            resolve_group_size(bad)  # type: ignore[arg-type]


@given(st.lists(st.floats(min_value=0.0, max_value=0.2), min_size=1, max_size=60))
def test_size_always_within_bounds(fixed_costs: list[float]) -> None:
    c = GroupSizeController(AdaptiveGroupSize(samples=1, min_size=2, max_size=40))
    for g, cost in enumerate(fixed_costs):
        size = c.next_size()
        assert 2 <= size <= 40
        c.observe(saturated(g, size, per_group=cost))
