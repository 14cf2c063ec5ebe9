"""A stream's stateful operators: per-key state (``update_state``) and event-time windows.

``StreamState`` is the part of ``Stream`` (a base class) whose operators keep state on the
slots: each adds a stateful step (``adrizzle.plan.state``) after a shuffle by key, so a key's
state lives in the slot that owns its partition, across batches and runs; it is checkpointed
and restored with the stream (see ``adrizzle.api.stream``).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from adrizzle.plan.state import StateUpdate, update_by_key
from adrizzle.plan.windows import WindowSpec, assign_windows, close_windows, merge_marked

if TYPE_CHECKING:
    from adrizzle.api.dataset import Dataset
    from adrizzle.api.stream import Stream
    from adrizzle.api.stream_source import BuildContext, StreamOrigin
    from adrizzle.driver.session import DriverSession
    from adrizzle.plan.windows import WindowResult

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")
S = TypeVar("S")
A = TypeVar("A")

StepFunc = Callable[[dict[Any, Any], Any, int, bool], Iterable[Any]]


class StreamState(Generic[T]):
    """The stateful operators of ``Stream[T]`` (see there)."""

    origin: StreamOrigin
    session: DriverSession
    partitions: int

    def dataset(self, ctx: BuildContext) -> Dataset[T]:
        raise NotImplementedError

    def _derive(
        self,
        build: Callable[[BuildContext], Dataset[Any]],
        partitions: int | None = None,
        state_ids: frozenset[int] = frozenset(),
    ) -> Stream[Any]:
        raise NotImplementedError

    def _stateful(
        self, before: Callable[[Dataset[T]], Dataset[Any]], func: StepFunc, partitions: int
    ) -> Stream[Any]:
        state_id = self.session.new_node_id()
        origin = self.origin
        origin.state_names[state_id] = f"state-{len(origin.state_names)}"
        origin.state_partitions[state_id] = partitions
        first: list[int] = []

        def build(ctx: BuildContext) -> Dataset[Any]:
            if not first:
                first.append(ctx.run_first)
            update = StateUpdate(state_id, first[0], ctx.run_first, func, ctx.last_batch)
            return before(self.dataset(ctx)).with_state(update)

        stream = self._derive(build, partitions, frozenset({state_id}))
        # The slots drop this state once the stream is gone (piggybacked on a later launch),
        # and the driver its checkpoint.
        self.session.release_with(stream, state_id)
        return stream

    def update_state(
        self: StreamState[tuple[K, V]],
        func: Callable[[list[V], S | None], S | None],
        *,
        combine: Callable[[V, V], V] | None = None,
        partitions: int | None = None,
    ) -> Stream[tuple[K, S | None]]:
        """Per-key state: for each key with new values in a micro-batch,
        ``new_state = func(values, state_or_None)``; emits ``(key, new_state)`` for those keys.
        Returning None deletes the key's state. The state stays on the slot that owns the key's
        partition. With ``combine`` the values are pre-combined per key (``reduce_by_key``) and
        ``func`` gets a one-item list.

        >>> totals = stream.map(lambda x: ("sum", x)).update_state(  # doctest: +SKIP
        ...     lambda values, total: (total or 0) + sum(values), combine=operator.add)
        """
        if not callable(func):
            raise TypeError("update_state() needs a callable func(values, state)")
        if combine is not None and not callable(combine):
            raise TypeError("update_state(combine=) needs a callable combine(a, b)")
        n = positive(partitions, self.partitions)

        def before(ds: Dataset[tuple[K, V]]) -> Dataset[Any]:
            return ds.reduce_by_key(combine, n) if combine is not None else ds.group_by_key(n)

        step = functools.partial(update_by_key, func, combine is not None)
        return self._stateful(before, step, n)

    def window_reduce(
        self: StreamState[tuple[K, V]],
        func: Callable[[A, A], A],
        window: float,
        *,
        event_time: Callable[[tuple[K, V]], float],
        slide: float | None = None,
        lateness: float = 0.0,
        partitions: int | None = None,
        value: Callable[[tuple[K, V]], A] | None = None,
    ) -> Stream[WindowResult]:
        """Event-time windows over ``(key, value)`` items: per key and window, the values
        reduced with ``func``, emitted once (a ``WindowResult``) when the watermark (largest
        event time seen minus ``lateness``) passes the window's end. ``event_time(item)`` is in
        the unit of ``window``; ``slide`` < ``window`` makes sliding windows (default tumbling).
        ``value(item)`` replaces the item's value when given."""
        if not callable(func) or not callable(event_time):
            raise TypeError("window_reduce() needs callables func(a, b) and event_time(item)")
        spec = WindowSpec(window, window if slide is None else slide, lateness)
        n = positive(partitions, self.partitions)
        assign = functools.partial(assign_windows, spec, event_time, value, n)
        merge = functools.partial(merge_marked, func)

        def before(ds: Dataset[tuple[K, V]]) -> Dataset[Any]:
            return ds.map_partitions(assign).reduce_by_key(merge, n)

        return self._stateful(before, functools.partial(close_windows, spec, func), n)

    def window_count(
        self: StreamState[tuple[K, V]],
        window: float,
        *,
        event_time: Callable[[tuple[K, V]], float],
        slide: float | None = None,
        lateness: float = 0.0,
        partitions: int | None = None,
    ) -> Stream[WindowResult]:
        """Items per key per event-time window (see ``window_reduce``)."""
        return self.window_reduce(
            operator.add,
            window,
            event_time=event_time,
            slide=slide,
            lateness=lateness,
            partitions=partitions,
            value=_one,
        )


def _one(item: Any) -> int:
    return 1


def positive(partitions: int | None, default: int) -> int:
    """``partitions`` (or ``default``), checked."""
    n = default if partitions is None else partitions
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"partitions must be a positive int, got {n!r}")
    return n
