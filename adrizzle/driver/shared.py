"""What every worker keeps for the engine: broadcast values and user code; and accumulators.

Broadcast values are pickled once, here, and sent once to each worker (``put_shared``, which the
worker forwards unopened to each of its slots): to the connected workers when made, and to each
worker that joins later before anything else of a run reaches it (its control connection is
ordered, so a launch never overtakes them). ``unpersist()`` (or the driver dropping every
reference to the ``Broadcast``) sends ``drop_shared``. User code (``py_files``,
``add_module``) travels the same way as zip archives the slots import from, and is never
dropped. Accumulator updates come back with the tasks' results and are applied by ``settle``
once per delivered job (``adrizzle.plan.shared``).
"""

from __future__ import annotations

import asyncio
import logging
import operator
import weakref
from typing import TYPE_CHECKING, Any

import cloudpickle

from adrizzle.errors import SerializationError
from adrizzle.plan.shared import Accumulator, Broadcast, WithUpdates
from adrizzle.wire.messages import DropShared, PutShared

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from adrizzle.driver.cluster import WorkerHandle

log = logging.getLogger("adrizzle.driver")
BROADCAST, FILES = "broadcast", "files"


class SharedVariables:
    """The engine's broadcasts, shipped code and accumulators."""

    def __init__(
        self, new_id: Callable[[], int], workers: Callable[[], Iterable[WorkerHandle]]
    ) -> None:
        self._new_id = new_id
        self._workers = workers
        self._broadcasts: dict[int, bytes] = {}
        self._files: dict[int, tuple[str, bytes]] = {}  # id -> (archive name, zip bytes)
        self._accumulators: weakref.WeakValueDictionary[int, Accumulator[Any]] = (
            weakref.WeakValueDictionary()
        )
        self._late: dict[str, Accumulator[int]] = {}  # per stream, kept for statistics()
        self.bytes_shipped = 0

    # -- broadcasts --------------------------------------------------------------------

    def broadcast(self, value: Any) -> Broadcast[Any]:
        try:
            data = bytes(cloudpickle.dumps(value))
        except Exception as exc:
            raise SerializationError(
                f"cannot pickle the broadcast value ({type(value).__name__}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        bid = self._new_id()
        self._broadcasts[bid] = data
        handle: Broadcast[Any] = Broadcast(bid, (value,), self.unpersist)
        loop = _running_loop()
        if loop is not None:  # dropped with the last reference on the driver
            weakref.finalize(handle, _call_soon, loop, self.unpersist, bid)
        msg = PutShared(kind=BROADCAST, ids=[bid], lens=[len(data)])
        for worker in self._workers():
            self._send(worker, msg, data)
        return handle

    def unpersist(self, bid: int) -> None:
        if self._broadcasts.pop(bid, None) is None:
            return
        for worker in self._workers():
            if worker.channel.is_open:
                worker.channel.send(DropShared(ids=[bid]))

    # -- code ----------------------------------------------------------------------------

    def add_files(self, name: str, archive: bytes) -> None:
        """A zip archive every slot imports from (see ``worker/slot_shared``)."""
        fid = self._new_id()
        self._files[fid] = (name, archive)
        msg = PutShared(kind=FILES, ids=[fid], lens=[len(archive)], names=[name])
        for worker in self._workers():
            self._send(worker, msg, archive)

    # -- workers -------------------------------------------------------------------------

    def joined(self, worker: WorkerHandle) -> None:
        """Everything shared so far goes to a worker that just joined (before any launch)."""
        if self._files:
            ids = list(self._files)
            names = [self._files[i][0] for i in ids]
            parts = [self._files[i][1] for i in ids]
            msg = PutShared(kind=FILES, ids=ids, lens=[len(p) for p in parts], names=names)
            self._send(worker, msg, b"".join(parts))
        if self._broadcasts:
            ids = list(self._broadcasts)
            parts = [self._broadcasts[i] for i in ids]
            msg = PutShared(kind=BROADCAST, ids=ids, lens=[len(p) for p in parts])
            self._send(worker, msg, b"".join(parts))

    def _send(self, worker: WorkerHandle, msg: PutShared, payload: bytes) -> None:
        if worker.channel.is_open:
            worker.channel.send(msg, payload)
            self.bytes_shipped += len(payload)

    # -- accumulators --------------------------------------------------------------------

    def accumulator(
        self, zero: Any, combine: Callable[[Any, Any], Any], name: str | None = None
    ) -> Accumulator[Any]:
        acc: Accumulator[Any] = Accumulator(self._new_id(), combine, zero, driver=True, name=name)
        self._accumulators[acc.id] = acc
        return acc

    def settle(self, values: list[Any], apply: bool = True) -> list[Any]:
        """A delivered job's values without their accumulator updates, which are applied
        (``apply``) or dropped (a replayed batch delivered before)."""
        if WithUpdates not in map(type, values):  # the common case, at C speed
            return values
        out = []
        for v in values:
            if type(v) is WithUpdates:
                if apply:
                    self.apply(v.updates)
                v = v.value
            out.append(v)
        return out

    def apply(self, updates: list[dict[int, Any]]) -> None:
        for update in updates:
            for aid, delta in update.items():
                acc = self._accumulators.get(aid)
                if acc is not None:  # else the driver no longer holds it: nobody reads it
                    try:
                        acc.merge(delta)
                    except Exception as exc:
                        log.warning("accumulator %s: cannot combine an update: %s", aid, exc)

    def late_counter(self, stream: str) -> Accumulator[int]:
        """The count of ``stream``'s late values (window operators add to it; a replayed
        batch's are not counted again), kept as long as the engine."""
        counter = self._late.get(stream)
        if counter is None:
            counter = self._late[stream] = self.accumulator(0, operator.add)
        return counter

    def late_values(self) -> dict[str, int]:
        return {stream: counter.value for stream, counter in sorted(self._late.items())}

    def named(self) -> dict[str, Any]:
        """Accumulators made with a name, by name (their values, for ``statistics()``)."""
        return {a.name: a.value for a in list(self._accumulators.values()) if a.name}

    def statistics(self) -> dict[str, int]:
        return {
            "broadcasts": len(self._broadcasts),
            "broadcast_bytes": sum(len(b) for b in self._broadcasts.values()),
            "code_archives": len(self._files),
            "shared_bytes_shipped": self.bytes_shipped,
            "accumulators": len(self._accumulators),
        }


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _call_soon(loop: asyncio.AbstractEventLoop, func: Callable[[int], None], arg: int) -> None:
    """From a finalizer, which may run in any thread at any bytecode: later, on the loop."""
    try:
        loop.call_soon_threadsafe(func, arg)
    except RuntimeError:  # the loop is closed: the workers are gone as well
        pass
