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

from adrizzle.plan.sessions import assign_sessions, close_sessions, extend
from adrizzle.plan.state import BatchClock, StateUpdate, update_by_key, update_with_timeout
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
        self,
        before: Callable[[Dataset[T]], Dataset[Any]],
        make_step: Callable[[BatchClock], StepFunc],
        partitions: int,
    ) -> Stream[Any]:
        """A stateful step after ``before`` (the shuffle by key); ``make_step(clock)`` is the
        step, given the stream's processing-time clock as of the run being built."""
        state_id = self.session.new_node_id()
        origin = self.origin
        origin.state_names[state_id] = f"state-{len(origin.state_names)}"
        origin.state_partitions[state_id] = partitions
        first: list[int] = []

        def build(ctx: BuildContext) -> Dataset[Any]:
            if not first:
                first.append(ctx.run_first)
            step = make_step(BatchClock(origin.start, origin.batch_interval))
            update = StateUpdate(state_id, first[0], ctx.run_first, step, ctx.last_batch)
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
        timeout: float | None = None,
    ) -> Stream[tuple[K, S | None]]:
        """Per-key state: for each key with new values in a micro-batch,
        ``new_state = func(values, state_or_None)``; emits ``(key, new_state)`` for those keys.
        Returning None deletes the key's state. The state stays on the slot that owns the key's
        partition. With ``combine`` the values are pre-combined per key (``reduce_by_key``) and
        ``func`` gets a one-item list.

        ``timeout`` (seconds of processing time): a key that got no values for that long
        since its state last changed gets ``func(adrizzle.STATE_TIMEOUT, state)`` (an empty,
        read-only list: test ``values is adrizzle.STATE_TIMEOUT``), whose result is its new
        state (None drops it; a state kept times out again after another ``timeout``) and is
        emitted like any update. Processing time is a paced stream's batch time (its
        interval's end, so a replay times out the same keys) or else the slot's clock.

        >>> totals = stream.map(lambda x: ("sum", x)).update_state(  # doctest: +SKIP
        ...     lambda values, total: (total or 0) + sum(values), combine=operator.add)
        >>> def session(values, seen):  # doctest: +SKIP
        ...     return None if values is adrizzle.STATE_TIMEOUT else (seen or 0) + len(values)
        >>> open_users = clicks.update_state(session, timeout=30.0)  # doctest: +SKIP
        """
        if not callable(func):
            raise TypeError("update_state() needs a callable func(values, state)")
        if combine is not None and not callable(combine):
            raise TypeError("update_state(combine=) needs a callable combine(a, b)")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"update_state(timeout=) must be > 0 seconds, got {timeout!r}")
        n = positive(partitions, self.partitions)

        def before(ds: Dataset[tuple[K, V]]) -> Dataset[Any]:
            return ds.reduce_by_key(combine, n) if combine is not None else ds.group_by_key(n)

        combined = combine is not None
        if timeout is None:
            step = functools.partial(update_by_key, func, combined)
            return self._stateful(before, lambda clock: step, n)
        return self._stateful(
            before,
            lambda clock: functools.partial(update_with_timeout, func, combined, timeout, clock),
            n,
        )

    def _windowed(
        self,
        assign: Callable[[Any], Iterable[Any]],
        merge: Callable[[Any, Any], Any],
        close: Callable[..., Iterable[Any]],
        partitions: int,
        idle_timeout: float | None,
    ) -> Stream[WindowResult]:
        """Event times through a shuffle by (key, window) with marks, then ``close`` (stateful;
        given the idle watermark's settings and the stream's late-value counter)."""
        if idle_timeout is not None and not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be > 0 seconds, got {idle_timeout!r}")
        late = self.session.shared.late_counter(self.origin.name)

        def before(ds: Dataset[T]) -> Dataset[Any]:
            return ds.map_partitions(assign).reduce_by_key(merge, partitions)

        def make_step(clock: BatchClock) -> StepFunc:
            return functools.partial(close, idle_timeout=idle_timeout, clock=clock, late=late)

        return self._stateful(before, make_step, partitions)

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
        idle_timeout: float | None = None,
    ) -> Stream[WindowResult]:
        """Event-time windows over ``(key, value)`` items: per key and window, the values
        reduced with ``func``, emitted once (a ``WindowResult``) when the watermark (largest
        event time seen minus ``lateness``) passes the window's end. ``event_time(item)`` is in
        the unit of ``window``; ``slide`` < ``window`` makes sliding windows (default tumbling).
        ``value(item)`` replaces the item's value when given. Values for a window already
        emitted are late: dropped, and counted in ``statistics()["late_values"]`` (and
        ``adrizzle_late_values_total`` on ``/metrics``), per stream.

        ``idle_timeout`` (seconds; event times must then be in seconds too): once no larger
        event time was seen for that long (processing time, see ``update_state``), the
        watermark moves on with processing time as if events had kept coming, so a quiet
        stream still closes its windows. None (default): only events move it."""
        if not callable(func) or not callable(event_time):
            raise TypeError("window_reduce() needs callables func(a, b) and event_time(item)")
        spec = WindowSpec(window, window if slide is None else slide, lateness)
        n = positive(partitions, self.partitions)
        return self._windowed(
            functools.partial(assign_windows, spec, event_time, value, n),
            functools.partial(merge_marked, func),
            functools.partial(close_windows, spec, func),
            n,
            idle_timeout,
        )

    def window_count(
        self: StreamState[tuple[K, V]],
        window: float,
        *,
        event_time: Callable[[tuple[K, V]], float],
        slide: float | None = None,
        lateness: float = 0.0,
        partitions: int | None = None,
        idle_timeout: float | None = None,
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
            idle_timeout=idle_timeout,
        )

    def window_session(
        self: StreamState[tuple[K, V]],
        gap: float,
        *,
        event_time: Callable[[tuple[K, V]], float],
        func: Callable[[A, A], A] | None = None,
        lateness: float = 0.0,
        partitions: int | None = None,
        value: Callable[[tuple[K, V]], A] | None = None,
        idle_timeout: float | None = None,
    ) -> Stream[WindowResult]:
        """Session windows over ``(key, value)`` items: per key, events less than ``gap``
        apart in event time form a session ``[first event, last event + gap)``; one
        ``WindowResult`` per session, emitted when the watermark passes its end (an event
        that bridges two open sessions merges them). Its value is the list of the session's
        values in event-time order, or with ``func`` their reduction (``func`` must be
        associative and commutative: sessions merge in arrival order). An event whose session
        would already have ended is late (dropped and counted, see ``window_reduce``) unless
        it falls into a session still open. ``lateness``, ``value``, ``idle_timeout``: as for
        ``window_reduce``.

        >>> visits = clicks.map(lambda c: (c.user, c.page))  # doctest: +SKIP
        >>> sessions = visits.window_session(30.0, event_time=lambda kv: kv[1].time)
        """
        if not callable(event_time) or (func is not None and not callable(func)):
            raise TypeError("window_session() needs callables event_time(item) (and func(a, b))")
        if not gap > 0 or lateness < 0:
            raise ValueError(
                f"window_session needs gap > 0 and lateness >= 0, got {gap}, {lateness}"
            )
        n = positive(partitions, self.partitions)
        return self._windowed(
            functools.partial(assign_sessions, event_time, value, n),
            functools.partial(merge_marked, extend),
            functools.partial(close_sessions, gap, func, lateness),
            n,
            idle_timeout,
        )


def _one(item: Any) -> int:
    return 1


def positive(partitions: int | None, default: int) -> int:
    """``partitions`` (or ``default``), checked."""
    n = default if partitions is None else partitions
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"partitions must be a positive int, got {n!r}")
    return n
