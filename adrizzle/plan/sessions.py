"""Session windows: per key, events closer than ``gap`` in event time form one session, which
ends ``gap`` after its last event and is emitted once the watermark passes that end.

Like the fixed windows (``adrizzle.plan.windows``), a micro-batch runs ``assign_sessions`` on
each map partition (``(key, [(time, value)])`` pairs plus one event-time mark per reducer), a
``reduce_by_key`` that concatenates the lists (``merge_marked(extend)``), then
``close_sessions`` as a stateful step on each reduce partition: it adds the events to the key's
open sessions (an event that bridges two sessions merges them), advances the watermark and
emits the sessions that ended. An event whose session would end at or before the watermark is
late (dropped and counted) unless it falls into a session still open.

Pure functions over plain data: no I/O (the idle watermark reads a ``BatchClock``).
"""

from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Any

from adrizzle.plan.windows import (
    EventTime,
    MarkKey,
    WindowResult,
    advance_watermark,
    count_late,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

Session = list[Any]  # [start, last event time, value so far]


def assign_sessions(
    event_time: Callable[[Any], float],
    value_of: Callable[[Any], Any] | None,
    reducers: int,
    items: Iterator[Any],
) -> Iterator[tuple[Any, Any]]:
    """Map side: ``(key, value)`` items -> ``(key, [(event time, value)])``, then the marks."""
    latest: float | None = None
    for item in items:
        t = event_time(item)
        if latest is None or t > latest:
            latest = t
        yield (item[0], [(t, item[1] if value_of is None else value_of(item))])
    if latest is not None:
        mark = EventTime(latest)
        for r in range(reducers):
            yield (MarkKey(r), mark)


def extend(a: list[Any], b: list[Any]) -> list[Any]:
    """Concatenate in place (the map side owns its lists; the reduce side owns what it read)."""
    a.extend(b)
    return a


def _merge(func: Callable[[Any, Any], Any] | None, a: Any, b: Any) -> Any:
    return a + b if func is None else func(a, b)


def _add_event(
    sessions: list[Session],
    t: float,
    value: Any,
    gap: float,
    func: Callable[[Any, Any], Any] | None,
    watermark: float,
) -> bool:
    """Add one event to a key's sessions (sorted by start); False when it is late."""
    touching = [s for s in sessions if s[0] - gap < t < s[1] + gap]
    acc = [(t, value)] if func is None else value
    if not touching:
        if t + gap <= watermark:
            return False  # its session would already have been emitted
        sessions.append([t, t, acc])
    else:
        merged = [t, t, acc]
        for s in touching:
            sessions.remove(s)
            merged = [min(merged[0], s[0]), max(merged[1], s[1]), _merge(func, s[2], merged[2])]
        sessions.append(merged)
    sessions.sort(key=operator.itemgetter(0))
    return True


def close_sessions(
    gap: float,
    func: Callable[[Any, Any], Any] | None,
    lateness: float,
    state: dict[str, Any],
    items: Iterator[tuple[Any, Any]],
    batch: int,
    last: bool,
    *,
    idle_timeout: float | None = None,
    clock: Callable[[int], float] | None = None,
    late: Any = None,
) -> Iterable[WindowResult]:
    """Reduce side, stateful: add a micro-batch's events to the keys' open sessions, advance
    the watermark and return the sessions that ended (by end, then start). A session's value
    is ``func`` over its values (in arrival order), or without ``func`` the list of its
    values in event-time order."""
    open_sessions: dict[Any, list[Session]] = state.setdefault("sessions", {})
    watermark: float = state.get("watermark", -math.inf)
    latest: float | None = None
    late_now = 0
    for k, events in items:
        if type(k) is MarkKey:
            if latest is None or events.value > latest:
                latest = events.value
            continue
        sessions = open_sessions.setdefault(k, [])
        for t, value in sorted(events, key=operator.itemgetter(0)):
            if not _add_event(sessions, t, value, gap, func, watermark):
                late_now += 1
        if not sessions:
            del open_sessions[k]
    now = clock(batch) if clock is not None and idle_timeout is not None else None
    watermark = advance_watermark(state, latest, lateness, idle_timeout, now)
    count_late(state, late, late_now)
    out: list[WindowResult] = []
    for key in list(open_sessions):
        sessions = open_sessions[key]
        ended = [s for s in sessions if last or s[1] + gap <= watermark]
        for start, end_event, acc in ended:
            end = end_event + gap
            value = (
                [v for _t, v in sorted(acc, key=operator.itemgetter(0))] if func is None else acc
            )
            out.append(WindowResult(key, start, end, value, end <= watermark))
        kept = [s for s in sessions if s not in ended]
        if kept:
            open_sessions[key] = kept
        else:
            del open_sessions[key]
    out.sort(key=lambda r: (r.end, r.start))
    return out
