"""Broadcast variables and accumulators as tasks see them, and what a slot keeps of both.

A ``Broadcast`` pickles to its id alone: on the driver ``b.value`` is the value it was made
with; in a slot it is the value the driver shipped to that worker once (``put_broadcast``,
unpickled on first use, then kept until ``drop``). An ``Accumulator`` pickles to its id and
combine function: ``acc.add(x)`` in a task folds ``x`` into that task's updates, which travel
with the task's output (``WithUpdates`` around a result value; ``Carrying`` around a map
output's block for reducer 0, which adds them to its own) and are applied on the driver once
per delivered job (``adrizzle.driver.shared``). A task that fails or an attempt that is
dropped (a group re-run after a loss) never delivers its updates, so nothing counts twice.

Plain data and process-global dictionaries (one slot process runs one task at a time).
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from adrizzle.errors import AdrizzleError

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

# -- the slot's side: broadcast values, and the updates of the task running -------------------

_pickled: dict[int, bytes] = {}  # shipped, not yet unpickled
_values: dict[int, Any] = {}
_updates: list[dict[int, Any]] = [{}]  # [this task's own, then those from its map inputs]


def put_broadcast(ids: list[int], lens: list[int], payload: bytes | memoryview) -> None:
    """File broadcast values shipped to this slot (pickled; each opened on first use)."""
    offset = 0
    for bid, n in zip(ids, lens, strict=True):
        _pickled[bid] = bytes(payload[offset : offset + n])
        _values.pop(bid, None)
        offset += n


def drop_broadcast(ids: list[int]) -> None:
    for bid in ids:
        _pickled.pop(bid, None)
        _values.pop(bid, None)


def broadcast_value(bid: int) -> Any:
    if bid in _values:
        return _values[bid]
    data = _pickled.pop(bid, None)
    if data is None:
        raise LookupError(
            f"broadcast {bid} is not on this slot: it was unpersisted, or its engine is gone"
        )
    value = _values[bid] = pickle.loads(data)
    return value


def begin_task() -> None:
    """A task starts: no updates yet."""
    if len(_updates) != 1 or _updates[0]:
        _updates[:] = [{}]


def _task_add(aid: int, combine: Callable[[Any, Any], Any], x: Any) -> None:
    own = _updates[0]
    own[aid] = combine(own[aid], x) if aid in own else x


def take_updates() -> list[dict[int, Any]]:
    """The running task's updates (its own and those it read), now handed over."""
    if len(_updates) == 1 and not _updates[0]:
        return []  # the common case: a task without accumulators
    out = [u for u in _updates if u]
    _updates[:] = [{}]
    return out


@dataclass(frozen=True, slots=True)
class WithUpdates:
    """A task's result value with the accumulator updates of its job on that slot."""

    value: Any
    updates: list[dict[int, Any]]


@dataclass(frozen=True, slots=True)
class Carrying:
    """A map output block carrying its task's updates to the reducer."""

    block: Any
    updates: list[dict[int, Any]]


def with_updates(value: Any) -> Any:
    """A result task's value, wrapped when its task has updates to deliver."""
    if len(_updates) == 1 and not _updates[0]:
        return value  # the common case: a task without accumulators (no call, no list)
    updates = take_updates()
    return WithUpdates(value, updates) if updates else value


def run_task(action: Callable[[Any], Any], opener: Callable[[int], Any], job: int) -> Any:
    """A result task in one call: ``begin_task``, ``action(opener(job))``, ``with_updates``
    (the slot's ready path calls this per task: three Python calls were one in the overhead
    a task pays over its own work, measured here)."""
    if len(_updates) != 1 or _updates[0]:
        _updates[:] = [{}]
    value = action(opener(job))
    if len(_updates) == 1 and not _updates[0]:
        return value
    return with_updates(value)


def attach_updates(blocks: list[Any]) -> list[Any]:
    """A map task's blocks, the first one carrying the task's updates (if any)."""
    updates = take_updates()
    if updates and blocks:
        blocks = [Carrying(blocks[0], updates), *blocks[1:]]
    return blocks


def absorb(block: Any) -> Any:
    """A map output block as read by a task: its updates become that task's."""
    if type(block) is Carrying:
        _updates.extend(block.updates)
        return block.block
    return block


# -- the handles ------------------------------------------------------------------------------


class Broadcast(Generic[T]):
    """A read-only value shipped once to every worker (``engine.broadcast(value)``).

    >>> table = engine.broadcast({"ad-1": "campaign-7"})  # doctest: +SKIP
    >>> campaigns = ads.map(lambda ad: table.value[ad])  # doctest: +SKIP
    >>> table.unpersist()  # doctest: +SKIP
    """

    __slots__ = ("__weakref__", "_drop", "_local", "id")

    def __init__(
        self, bid: int, local: tuple[T] | None = None, drop: Callable[[int], None] | None = None
    ) -> None:
        self.id = bid
        self._local = local  # (value,) on the driver
        self._drop = drop

    @property
    def value(self) -> T:
        if self._local is not None:
            return self._local[0]
        value: T = broadcast_value(self.id)
        return value

    def unpersist(self) -> None:
        """Free the value on the workers (and the driver's copy of its pickle); tasks that
        use it afterwards fail. On the driver ``value`` stays readable."""
        if self._drop is None:
            raise AdrizzleError("unpersist() a broadcast on the driver, not inside a task")
        self._drop(self.id)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Broadcast, (self.id,))

    def __repr__(self) -> str:
        return f"<Broadcast {self.id}>"


class Accumulator(Generic[T]):
    """A value tasks add to and the driver reads (``engine.accumulator(zero, combine=)``).

    ``acc.add(x)`` folds ``x`` in with ``combine`` (default ``+``; it must be associative, and
    ``zero`` its identity). Each task's updates are applied once, when its job is delivered:
    ``acc.value`` is final when the call that ran the tasks returns.

    >>> bad = engine.accumulator(0)  # doctest: +SKIP
    >>> parsed = lines.flat_map(lambda s: parse(s) or (bad.add(1) or []))  # doctest: +SKIP
    >>> await parsed.count(), bad.value  # doctest: +SKIP
    """

    __slots__ = ("__weakref__", "_driver", "_lock", "_value", "combine", "id", "name")

    def __init__(
        self,
        aid: int,
        combine: Callable[[T, T], T],
        zero: T | None = None,
        *,
        driver: bool = False,
        name: str | None = None,
    ) -> None:
        self.id = aid
        self.combine = combine
        self.name = name
        self._value = zero
        self._driver = driver
        self._lock = threading.Lock() if driver else None

    def add(self, x: T) -> None:
        if self._lock is None:
            _task_add(self.id, self.combine, x)
            return
        with self._lock:
            self._value = self.combine(self._value, x)  # type: ignore[arg-type]

    def merge(self, delta: T) -> None:
        """The driver applies a delivered task's update."""
        self.add(delta)

    @property
    def value(self) -> T:
        if self._lock is None:
            raise AdrizzleError("an accumulator's value is read on the driver, not in a task")
        return self._value  # type: ignore[return-value]

    def __reduce__(self) -> tuple[Any, ...]:
        return (Accumulator, (self.id, self.combine))

    def __repr__(self) -> str:
        shown = repr(self._value) if self._driver else "(in a task)"
        return f"<Accumulator {self.name or self.id} {shown}>"
