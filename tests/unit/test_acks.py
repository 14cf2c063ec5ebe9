"""AckTally: a worker's acknowledgement of a group, assembled from its slots' parts."""

from __future__ import annotations

from adrizzle.wire.acks import AckTally
from adrizzle.wire.messages import GroupDone, SlotDone


def test_a_single_part_is_the_whole_acknowledgement() -> None:
    tally = AckTally()
    whole = tally.add(SlotDone(7, tasks=4, failed=1, busy_us=90))
    assert whole == GroupDone(7, 4, 1, 90, 0, 0)
    assert len(tally) == 0


def test_parts_are_summed_and_the_last_one_completes_the_group() -> None:
    tally = AckTally()
    assert tally.add(SlotDone(3, 2, 0, 10, 1, 100, of=3)) is None
    assert tally.add(SlotDone(3, 5, 1, 20, 2, 200, of=3)) is None
    assert len(tally) == 1
    whole = tally.add(SlotDone(3, 1, 0, 30, 0, 0, of=3))
    assert whole == GroupDone(3, tasks=8, failed=1, busy_us=60, pushed_blocks=3, pushed_bytes=300)
    assert len(tally) == 0


def test_groups_are_tallied_apart() -> None:
    tally = AckTally()
    assert tally.add(SlotDone(1, 1, 0, 1, of=2)) is None
    assert tally.add(SlotDone(2, 1, 0, 1, of=2)) is None
    done = tally.add(SlotDone(2, 1, 0, 1, of=2))
    assert done is not None
    assert (done.group, done.tasks) == (2, 2)
    assert len(tally) == 1  # group 1 still lacks a part


def test_a_forgotten_group_drops_its_parts_and_ignores_late_ones() -> None:
    tally = AckTally()
    assert tally.add(SlotDone(5, 1, 0, 1, of=2)) is None
    tally.forget([5])
    assert len(tally) == 0
    # The other slot's part arrives after the cancel: no acknowledgement, nothing kept.
    assert tally.add(SlotDone(5, 1, 0, 1, of=2)) is None
    assert tally.add(SlotDone(5, 1, 0, 1)) is None
    assert len(tally) == 0


def test_forgotten_ids_are_bounded() -> None:
    tally = AckTally()
    tally.forget(range(20_000))
    # The newest ids are still remembered; memory stays bounded.
    assert tally.add(SlotDone(19_999, 1, 0, 1)) is None
    assert tally.add(SlotDone(20_000, 1, 0, 1)) is not None
