"""SilenceWatch: a peer's silence counts only while we were listening (plain calls)."""

from __future__ import annotations

import pytest

from adrizzle.wire.liveness import SilenceWatch


def test_silence_is_wall_time_while_ticks_are_on_time() -> None:
    w = SilenceWatch(period=1.0)
    w.heard("a", 0.0)
    for t in (1.0, 2.0, 3.0):
        w.tick(t)
    assert w.silent_for("a", 3.0) == 3.0
    assert w.silent(2.5, 3.0) == [("a", 3.0)]
    assert w.silent(3.0, 3.0) == []
    assert w.deaf_total == 0.0


def test_a_late_tick_forgives_our_deafness_beyond_one_period() -> None:
    w = SilenceWatch(period=1.0)
    w.heard("a", 0.0)
    w.tick(0.0)
    w.tick(7.0)  # our loop was blocked: the frames "a" sent meanwhile are still unread
    assert w.silent_for("a", 7.0) == 1.0
    assert w.silent(5.0, 7.0) == []
    assert (w.deaf_total, w.deaf_max) == (6.0, 6.0)


def test_forgiveness_never_puts_a_peer_in_the_future() -> None:
    w = SilenceWatch(period=1.0)
    w.tick(0.0)
    w.heard("a", 6.5)  # read before the late tick (asyncio reads I/O before timers)
    w.tick(7.0)
    assert w.silent_for("a", 7.0) == 0.0  # capped at now, never negative


def test_a_tick_up_to_two_periods_late_is_not_deafness() -> None:
    w = SilenceWatch(period=1.0)
    w.heard("a", 0.0)
    w.tick(0.0)
    w.tick(2.0)
    assert w.silent_for("a", 2.0) == 2.0
    assert w.deaf_total == 0.0


def test_a_silent_peer_is_still_found_after_a_deaf_spell() -> None:
    w = SilenceWatch(period=1.0)
    w.heard("a", 0.0)
    w.tick(0.0)
    w.tick(10.0)  # deaf 9 s: "a" gets 9 s back, silent 1 s
    for t in range(11, 16):
        w.tick(float(t))
    assert w.silent(5.0, 15.0) == [("a", 6.0)]


def test_unknown_and_forgotten_peers_are_not_silent() -> None:
    w = SilenceWatch(period=0.5)
    assert w.silent_for("x", 100.0) == 0.0
    w.heard("x", 0.0)
    w.forget("x")
    assert w.silent(1.0, 100.0) == []


def test_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="period must be > 0"):
        SilenceWatch(0.0)
