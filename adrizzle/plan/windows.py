"""Event-time windows for streams: which windows an event falls in, and the per-partition window
state that emits a window's final value once the watermark passes its end.

A window stage of a micro-batch runs as: ``assign_windows`` on each map partition (pairs
``((key, window), value)``, plus one ``EventTime`` mark per reducer carrying the largest event
time the partition saw), ``merge_marked`` as the ``reduce_by_key`` function (combines values,
keeps the largest mark), then ``close_windows`` as a stateful step on each reduce partition.
Every reducer receives every map partition's mark, so all of them compute the same watermark:
``max(event time seen so far) - lateness``. A window ``[start, end)`` is final once
``end <= watermark``; values for a window already emitted are late and dropped (counted in the
state). When the source ends, every open window is emitted with ``complete=False``.

Pure functions over plain data: no I/O, no clock.
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
    """The largest event time a map partition saw in a micro-batch (travels with the data)."""

    value: float


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
    for item in items:
        t = event_time(item)
        if latest is None or t > latest:
            latest = t
        value = item[1] if value_of is None else value_of(item)
        key = item[0]
        if tumbling:
            yield ((key, window_index(t, slide)), value)
        else:
            for w in spec.windows_of(t):
                yield ((key, w), value)
    if latest is not None:
        mark = EventTime(latest)
        for r in range(reducers):
            yield (MarkKey(r), mark)


def merge_marked(func: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """The shuffle's combine function: ``func`` for window values, max for marks."""
    if type(a) is EventTime:
        return a if a.value >= b.value else b
    return func(a, b)


def close_windows(
    spec: WindowSpec,
    func: Callable[[Any, Any], Any],
    state: dict[str, Any],
    items: Iterator[tuple[Any, Any]],
    batch: int,
    last: bool,
) -> Iterable[WindowResult]:
    """Reduce side, stateful: fold a micro-batch's partial values into the open windows, advance
    the watermark, and return the windows that became final (oldest first)."""
    open_windows: dict[int, dict[Any, Any]] = state.setdefault("windows", {})
    watermark: float = state.get("watermark", -math.inf)
    latest: float | None = None
    late = 0
    for k, v in items:
        if type(k) is MarkKey:
            if latest is None or v.value > latest:
                latest = v.value
            continue
        key, w = k
        if spec.end(w) <= watermark:
            late += 1  # its window was already emitted
            continue
        values = open_windows.get(w)
        if values is None:
            values = open_windows[w] = {}
        values[key] = func(values[key], v) if key in values else v
    if latest is not None:
        watermark = max(watermark, latest - spec.lateness)
    state["watermark"] = watermark
    state["late"] = state.get("late", 0) + late
    closing = sorted(w for w in open_windows if last or spec.end(w) <= watermark)
    out: list[WindowResult] = []
    for w in closing:
        start, end = spec.start(w), spec.end(w)
        complete = end <= watermark
        out += [WindowResult(k, start, end, v, complete) for k, v in open_windows.pop(w).items()]
    return out
