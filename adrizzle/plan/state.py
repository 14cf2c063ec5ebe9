"""Per-partition stream state in a slot: ``PartitionState`` cells and the ``StateUpdate`` step.

A stateful step keeps one ``PartitionState`` per (state id, partition) in the slot that owns the
partition (the slot's ``StateStore``), across groups and runs; it is never shipped per batch,
only checkpointed at group boundaries and restored from a checkpoint after a loss or a move.
``update_by_key`` is ``Stream.update_state``'s step, with per-key timeouts measured on a
``BatchClock`` (``STATE_TIMEOUT`` is what the user's function gets for a key that timed out).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from adrizzle.errors import StateOrderError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

StateStore = dict[tuple[int, int], "PartitionState"]


@dataclass(slots=True)
class PartitionState:
    """One partition's state of one stateful step, kept by the slot that owns the partition."""

    data: dict[Any, Any]
    batch: int  # the last micro-batch applied
    dirty: bool = field(default=False, compare=False)  # changed since its last checkpoint


@dataclass(frozen=True, slots=True)
class StateUpdate:
    """A stateful step: for micro-batch ``b = run_first + job``, ``func(state, items, b, last)``
    updates the partition's ``state`` dict in place and returns the step's output items
    (``last``: ``b`` is the stream's last batch, so windows flush what is still open).

    Batches apply in order, each once: the slot runs a partition's micro-batches lowest first,
    and this refuses a batch not after the last one applied. State that should exist but does
    not (the partition moved to a slot that never saw it) is an error, never a silent restart.
    """

    state_id: int
    first_batch: int  # the stream's first batch: the only one that may create the state
    run_first: int  # the batch of the run's job 0
    func: Callable[[dict[Any, Any], Iterator[Any], int, bool], Iterable[Any]]
    last_batch: int | None = None  # the stream's last batch, when it is bounded

    def __call__(
        self, states: StateStore, partition: int, it: Iterator[Any], job: int = 0
    ) -> Iterator[Any]:
        batch = self.run_first + job
        key = (self.state_id, partition)
        cell = states.get(key)
        if cell is None:
            if batch != self.first_batch:
                raise StateOrderError(
                    f"state {self.state_id} of partition {partition} is not on this slot at "
                    f"micro-batch {batch} (the stream started at {self.first_batch}): the "
                    "partition moved or its slot restarted"
                )
            cell = states[key] = PartitionState({}, batch - 1)
        if batch <= cell.batch:
            raise StateOrderError(
                f"state {self.state_id} of partition {partition}: micro-batch {batch} "
                f"arrived after {cell.batch} was applied"
            )
        # Materialized: the state must be updated even if the action reads part of the output.
        out = list(self.func(cell.data, it, batch, batch == self.last_batch))
        cell.batch = batch
        cell.dirty = True
        return iter(out)


def restore_states(states: StateStore, state_ids: Iterable[int], cells: StateStore) -> None:
    """Replace every partition of these states by ``cells`` (a checkpoint's), dropping the
    partitions not in it: what a slot held of them may be ahead of the checkpoint."""
    ids = set(state_ids)
    for key in [k for k in states if k[0] in ids]:
        del states[key]
    for key, cell in cells.items():
        cell.dirty = False
        states[key] = cell


def update_by_key(
    func: Callable[[list[Any], Any], Any],
    combined: bool,
    state: dict[Any, Any],
    items: Iterable[tuple[Any, Any]],
    batch: int,
    last: bool,
) -> list[tuple[Any, Any]]:
    """``Stream.update_state``'s stateful step: per key of the batch, ``func(values, state)``
    becomes the key's new state (None deletes it); emits ``(key, new state)`` per key."""
    # Computed first, applied after: a func that raises leaves the state as it was.
    changes = [(k, func([v] if combined else v, state.get(k))) for k, v in items]
    for k, new in changes:
        if new is None:
            state.pop(k, None)
        else:
            state[k] = new
    return changes


class _StateTimeout(list[Any]):
    """The ``values`` ``update_state``'s function gets for a key whose state timed out: an
    empty, read-only list (``values is adrizzle.STATE_TIMEOUT`` tells it apart)."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("STATE_TIMEOUT is read-only")

    append = extend = insert = remove = pop = clear = sort = reverse = _read_only
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only

    def __repr__(self) -> str:
        return "adrizzle.STATE_TIMEOUT"

    def __reduce__(self) -> str:
        return "STATE_TIMEOUT"  # the one instance, in every process


STATE_TIMEOUT: list[Any] = _StateTimeout()


@dataclass(frozen=True, slots=True)
class BatchClock:
    """Processing time for a stream's stateful steps: a paced stream's batch ``b`` happens at
    its interval's end (``start + (b + 1) * interval``: the same on a replay), any other
    stream's at the slot's wall clock when the batch runs."""

    start: float | None = None
    interval: float | None = None

    def __call__(self, batch: int) -> float:
        if self.start is not None and self.interval is not None:
            return self.start + (batch + 1) * self.interval
        return time.time()


def update_with_timeout(
    func: Callable[[list[Any], Any], Any],
    combined: bool,
    timeout: float,
    clock: BatchClock,
    state: dict[Any, Any],
    items: Iterable[tuple[Any, Any]],
    batch: int,
    last: bool,
) -> list[tuple[Any, Any]]:
    """``update_by_key`` with per-key timeouts: a key with no values for ``timeout`` seconds of
    ``clock`` (since its last update) gets ``func(STATE_TIMEOUT, state)`` once; its result is
    the new state (None drops it) and is emitted as ``(key, result)`` like any update."""
    now = clock(batch)
    values: dict[Any, Any] = state.setdefault("values", {})
    touched: dict[Any, float] = state.setdefault("touched", {})
    # Computed first, applied after: a func that raises leaves the state as it was.
    changes = [(k, func([v] if combined else v, values.get(k))) for k, v in items]
    present = {k for k, _ in changes}
    expired = [k for k, t in touched.items() if k not in present and now - t >= timeout]
    changes += [(k, func(STATE_TIMEOUT, values[k])) for k in expired]
    for k, new in changes:
        if new is None:
            values.pop(k, None)
            touched.pop(k, None)
        else:
            values[k] = new
            touched[k] = now
    return changes
