"""The offset log keeps a completed batch's ranges until the stream's consumer has taken them."""

from __future__ import annotations

from pathlib import Path

import pytest

from adrizzle.driver.offset_log import OffsetLog
from adrizzle.errors import StateOrderError


def test_a_batch_completed_before_its_delivery_keeps_its_ranges() -> None:
    log = OffsetLog("s")
    for b in range(4):
        log.append(b, {0: (b * 10, b * 10 + 10)})
    # The group of batches 0..2 is acknowledged and completed before the consumer reads them.
    assert log.complete(2) == {0: 30}
    assert log.delivered(0) == {0: (0, 10)}
    assert log.delivered(1) == {0: (10, 20)}
    assert set(log.entries) == {2, 3}  # 0 and 1 are completed and delivered: dropped
    assert log.delivered(2) == {0: (20, 30)}
    assert set(log.entries) == {2, 3}  # 2 is the completion point: a replay starts after it
    assert log.complete(3) == {0: 40}
    assert set(log.entries) == {3}
    assert log.delivered(3) == {0: (30, 40)}
    assert log.complete(4) is None  # nothing logged at 4


def test_delivered_before_completed_is_dropped_at_completion() -> None:
    log = OffsetLog("s")
    for b in range(3):
        log.append(b, {0: (b, b + 1), 1: (b, b + 1)})
    assert log.delivered(0) == {0: (0, 1), 1: (0, 1)}
    assert log.delivered(1) is not None
    assert set(log.entries) == {0, 1, 2}  # nothing completed yet: all replayable
    log.complete(1)
    assert set(log.entries) == {1, 2}
    assert log.delivered(7) is None  # never logged


def test_a_replay_must_read_the_logged_ranges(tmp_path: Path) -> None:
    log = OffsetLog("s", tmp_path)
    log.append(0, {0: (0, 5)})
    log.complete(0)
    log.append(0, {0: (0, 5)})  # the same ranges: fine
    with pytest.raises(StateOrderError, match="other source ranges"):
        log.append(0, {0: (0, 6)})
