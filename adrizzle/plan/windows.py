"""Event-time windows for streams: which windows an event falls in, and the per-partition window
state that emits a window's final value once the watermark passes its end.

A window stage of a micro-batch runs as: ``assign_windows`` on each map partition (pairs
``((key, window), value)``, plus one ``EventTime`` mark per reducer carrying the largest event
time the partition saw), ``merge_marked`` as the ``reduce_by_key`` function (combines values,
keeps the largest mark and sums the marks' item counts), then ``close_windows`` as a stateful
step on each reduce partition. Every reducer receives every map partition's mark, so all of
them compute the same watermark: ``max(event time seen so far) - lateness`` (moved on with
processing time on a quiet stream with ``idle_timeout``). A window ``[start, end)`` is final
once ``end <= watermark``; values for a window already emitted are late and dropped (reducer 0
counts them, one by one, from the item counts per window that travel in its marks). When the
source ends, every open window is emitted with ``complete=False``.

Pure functions over plain data: no I/O (the idle watermark reads a ``BatchClock``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator


def window_index(t: float, slide: float) -> int:
    """``floor(t / slide)``, except that a quotient a few float roundings below an integer
    counts as that integer: an event time meant to be on a window boundary (``21.6`` s with
    0.2 s windows: ``21.6 / 0.2 = 107.99999999999999``) opens the window there."""
    q = t / slide
    w = math.floor(q)
    return w + 1 if q - w >= 1.0 - 8 * math.ulp(q) else w


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Windows of ``size`` starting every ``slide`` (tumbling when ``slide == size``), in the
    unit of the event times (seconds in the examples); ``lateness``: how far behind the largest
    event time seen an event may still arrive."""

    size: float
    slide: float
    lateness: float = 0.0

    def __post_init__(self) -> None:
        if not (self.size > 0 and 0 < self.slide <= self.size):
            raise ValueError(
                f"windows need size > 0 and 0 < slide <= size, got size={self.size}, "
                f"slide={self.slide}"
            )
        if self.lateness < 0:
            raise ValueError(f"lateness must be >= 0, got {self.lateness}")

    @property
    def tumbling(self) -> bool:
        return self.slide == self.size

    def windows_of(self, t: float) -> list[int]:
        """Indices ``w`` of the windows ``[w * slide, w * slide + size)`` that contain ``t``."""
        last = window_index(t, self.slide)
        if self.tumbling:
            return [last]
        # t is in window w iff w <= t / slide and w > (t - size) / slide (end exclusive).
        return list(range(window_index(t - self.size, self.slide) + 1, last + 1))

    def start(self, w: int) -> float:
        return w * self.slide

    def end(self, w: int) -> float:
        return w * self.slide + self.size


class WindowResult(NamedTuple):
    """A window's value for one key. ``complete`` is False when the window was emitted because
    the source ended, before the watermark passed its end."""

    key: Any
    start: float
    end: float
    value: Any
    complete: bool = True


@dataclass(frozen=True, slots=True)
class EventTime:
    """The largest event time a map partition saw in a micro-batch (travels with the data).
    The mark for reducer 0 also counts the partition's items per window (``items``), so that
    late values are counted one by one although the shuffle combines them per key."""

    value: float
    items: dict[int, int] | None = None


class MarkKey:
    """The shuffle key of the event-time mark for reducer ``reducer``: its hash is ``reducer``,
    so ``portable_hash(key) % reducers == reducer`` and each reducer gets exactly its mark."""

    __slots__ = ("reducer",)

    def __init__(self, reducer: int) -> None:
        self.reducer = reducer

    def __hash__(self) -> int:
        return self.reducer

    def __eq__(self, other: object) -> bool:
        return type(other) is MarkKey and other.reducer == self.reducer

    def __reduce__(self) -> tuple[Any, ...]:
        return (MarkKey, (self.reducer,))

    def __repr__(self) -> str:
        return f"MarkKey({self.reducer})"


def assign_windows(
    spec: WindowSpec,
    event_time: Callable[[Any], float],
    value_of: Callable[[Any], Any] | None,
    reducers: int,
    items: Iterator[Any],
) -> Iterator[tuple[Any, Any]]:
    """Map side: ``(key, value)`` items -> ``((key, window), value)`` per window the item's
    event time falls in (``value_of(item)`` instead of ``value`` when given), then the marks."""
    latest: float | None = None
    slide = spec.slide
    tumbling = spec.tumbling
    counts: dict[int, int] = {}
    for item in items:
        t = event_time(item)
        if latest is None or t > latest:
            latest = t
        value = item[1] if value_of is None else value_of(item)
        key = item[0]
        if tumbling:
            w = window_index(t, slide)
            counts[w] = counts.get(w, 0) + 1
            yield ((key, w), value)
        else:
            for w in spec.windows_of(t):
                counts[w] = counts.get(w, 0) + 1
                yield ((key, w), value)
    if latest is not None:
        yield (MarkKey(0), EventTime(latest, counts))
        mark = EventTime(latest)
        for r in range(1, reducers):
            yield (MarkKey(r), mark)


def merge_marked(func: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """The shuffle's combine function: ``func`` for window values, max for marks."""
    if type(a) is EventTime:
        if a.items is None and b.items is None:
            return a if a.value >= b.value else b
        items = dict(a.items or {})
        for w, n in (b.items or {}).items():
            items[w] = items.get(w, 0) + n
        return EventTime(max(a.value, b.value), items)
    return func(a, b)


def advance_watermark(
    state: dict[str, Any],
    latest: float | None,
    lateness: float,
    idle_timeout: float | None = None,
    now: float | None = None,
) -> float:
    """The partition's watermark after a micro-batch whose largest event time was ``latest``:
    ``max(event time seen) - lateness``, never back. With ``idle_timeout``, once no larger
    event time was seen for that many seconds of processing time (``now``, a ``BatchClock``
    reading), event time is taken to pass with processing time since then: the watermark is
    ``latest + (now - when latest was seen) - lateness``, so windows close on a quiet stream.
    """
    watermark: float = state.get("watermark", -math.inf)
    if latest is not None:
        if latest > state.get("latest", -math.inf):
            state["latest"] = latest
            state["seen_at"] = now
        watermark = max(watermark, latest - lateness)
    seen_at = state.get("seen_at")
    if idle_timeout is not None and now is not None and seen_at is not None:
        quiet = now - seen_at
        if quiet >= idle_timeout:
            watermark = max(watermark, state["latest"] + quiet - lateness)
    state["watermark"] = watermark
    return watermark


def close_windows(
    spec: WindowSpec,
    func: Callable[[Any, Any], Any],
    state: dict[str, Any],
    items: Iterator[tuple[Any, Any]],
    batch: int,
    last: bool,
    *,
    idle_timeout: float | None = None,
    clock: Callable[[int], float] | None = None,
    late: Any = None,
) -> Iterable[WindowResult]:
    """Reduce side, stateful: fold a micro-batch's partial values into the open windows, advance
    the watermark, and return the windows that became final (oldest first). Values for a
    window already emitted are late: dropped, and counted by reducer 0 (from the marks' item
    counts) in its state and in ``late`` (an accumulator: the driver's count of the stream's
    late values)."""
    open_windows: dict[int, dict[Any, Any]] = state.setdefault("windows", {})
    watermark: float = state.get("watermark", -math.inf)
    latest: float | None = None
    late_now = 0
    for k, v in items:
        if type(k) is MarkKey:
            if latest is None or v.value > latest:
                latest = v.value
            if v.items:  # reducer 0 counts every map partition's late values
                late_now += sum(n for w, n in v.items.items() if spec.end(w) <= watermark)
            continue
        key, w = k
        if spec.end(w) <= watermark:
            continue  # late: its window was already emitted
        values = open_windows.get(w)
        if values is None:
            values = open_windows[w] = {}
        values[key] = func(values[key], v) if key in values else v
    now = clock(batch) if clock is not None and idle_timeout is not None else None
    watermark = advance_watermark(state, latest, spec.lateness, idle_timeout, now)
    count_late(state, late, late_now)
    closing = sorted(w for w in open_windows if last or spec.end(w) <= watermark)
    out: list[WindowResult] = []
    for w in closing:
        start, end = spec.start(w), spec.end(w)
        complete = end <= watermark
        out += [WindowResult(k, start, end, v, complete) for k, v in open_windows.pop(w).items()]
    return out


def count_late(state: dict[str, Any], late: Any, n: int) -> None:
    """``n`` late values: in the partition's state, and to the driver through ``late``."""
    state["late"] = state.get("late", 0) + n
    if n and late is not None:
        late.add(n)
