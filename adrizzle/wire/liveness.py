"""Silence of peers, counted only while we were listening (pure: the caller passes the clock).

A heartbeat timeout must judge the peer, not ourselves. When our own event loop was blocked (a
caller's synchronous code between two ``await``s, a long unpickle, a starved process), frames the
peer sent on time sit unread in the socket, and wall-clock silence would declare a healthy peer
lost. ``SilenceWatch`` is ticked every ``period`` seconds by its owner's timer; a tick that comes
much later than ``period`` after the previous one means we were deaf in between, and that time
is not counted against anyone (the JVM-pause detection of Akka and Cassandra failure detectors).

>>> w = SilenceWatch(period=1.0)
>>> w.heard("w1", now=0.0)
>>> w.tick(now=1.0); w.silent_for("w1", now=1.0)
1.0
>>> w.tick(now=9.0)  # our loop was blocked for 7 s: only 1 s of it counts
>>> w.silent_for("w1", now=9.0)
2.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Hashable


class SilenceWatch:
    """Per peer, the seconds since we last heard from it, minus the time we were deaf.

    ``period``: how often the owner calls ``tick``; a tick more than ``2 * period`` after the
    previous one counts everything beyond one period as deafness. Peers are added by ``heard``
    and removed by ``forget``.
    """

    __slots__ = ("_heard", "_last_tick", "deaf_max", "deaf_total", "period")

    def __init__(self, period: float) -> None:
        if not period > 0:
            raise ValueError(f"period must be > 0, got {period}")
        self.period = period
        self._heard: dict[Hashable, float] = {}
        self._last_tick: float | None = None
        #: Seconds we were deaf in all, and the longest single deaf spell (for monitoring).
        self.deaf_total = 0.0
        self.deaf_max = 0.0

    def heard(self, peer: Hashable, now: float) -> None:
        """A frame from ``peer`` arrived at ``now``."""
        self._heard[peer] = now

    def forget(self, peer: Hashable) -> None:
        self._heard.pop(peer, None)

    def tick(self, now: float) -> None:
        """Called every ``period`` s; forgives the time since the previous tick beyond one
        period when the tick comes late."""
        last, self._last_tick = self._last_tick, now
        if last is None:
            return
        gap = now - last
        if gap <= 2 * self.period:
            return
        deaf = gap - self.period
        self.deaf_total += deaf
        self.deaf_max = max(self.deaf_max, deaf)
        for peer, at in self._heard.items():
            self._heard[peer] = min(now, at + deaf)

    def silent_for(self, peer: Hashable, now: float) -> float:
        """Seconds of our listening time without a frame from ``peer`` (0 for an unknown)."""
        at = self._heard.get(peer)
        return 0.0 if at is None else max(0.0, now - at)

    def silent(self, timeout: float, now: float) -> list[tuple[Hashable, float]]:
        """The peers silent for more than ``timeout`` s, with their silence."""
        out = []
        for peer, at in self._heard.items():
            if now - at > timeout:
                out.append((peer, now - at))
        return out
