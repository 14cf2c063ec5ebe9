"""``SyncDataset`` and ``SyncStream``: a ``LocalEngine``'s datasets and streams, blocking.

Each wraps the async object and the engine's loop thread: transformations build the wrapped
object on that loop and return a wrapper; actions (``collect``, ``count``, ``take``), a
stream's ``run`` (a plain iterator of ``StreamBatch``) and ``drain`` block until done. The
async object is ``.dataset`` / ``.stream``. Stream sinks (callbacks) run on the engine's loop
thread, not the caller's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from adrizzle.api.stream import Stream

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator

    from adrizzle.api.dataset import Dataset
    from adrizzle.api.stream_run import StreamBatch
    from adrizzle.api.sync_engine import LoopThread
    from adrizzle.driver.adaptive import GroupSize
    from adrizzle.plan.windows import WindowResult

T = TypeVar("T")
U = TypeVar("U")
K = TypeVar("K")
V = TypeVar("V")
W = TypeVar("W")
C = TypeVar("C")


def unwrap(ds: Any) -> Any:
    """The async object behind a wrapper (anything else as it is)."""
    if isinstance(ds, SyncDataset):
        return ds.dataset
    if isinstance(ds, SyncStream):
        return ds.stream
    return ds


class SyncDataset(Generic[T]):
    """A ``Dataset`` of a ``LocalEngine``: the same operators; actions block and return."""

    __slots__ = ("_loop", "dataset")

    def __init__(self, dataset: Dataset[T], loop: LoopThread) -> None:
        self.dataset = dataset
        self._loop = loop

    def __repr__(self) -> str:
        return f"<SyncDataset of {self.dataset!r}>"

    def _make(self, build: Callable[[], Dataset[U]]) -> SyncDataset[U]:
        return SyncDataset(self._loop.call(build), self._loop)

    @property
    def partitions(self) -> int:
        return self.dataset.partitions

    @property
    def is_cached(self) -> bool:
        return self.dataset.is_cached

    # -- transformations (see Dataset) ----------------------------------------------------

    def map(self, func: Callable[[T], U]) -> SyncDataset[U]:
        return self._make(lambda: self.dataset.map(func))

    def filter(self, func: Callable[[T], object]) -> SyncDataset[T]:
        return self._make(lambda: self.dataset.filter(func))

    def flat_map(self, func: Callable[[T], Iterable[U]]) -> SyncDataset[U]:
        return self._make(lambda: self.dataset.flat_map(func))

    def map_partitions(self, func: Callable[[Iterator[T]], Iterable[U]]) -> SyncDataset[U]:
        return self._make(lambda: self.dataset.map_partitions(func))

    def map_partitions_with_index(
        self, func: Callable[[int, Iterator[T]], Iterable[U]]
    ) -> SyncDataset[U]:
        return self._make(lambda: self.dataset.map_partitions_with_index(func))

    def map_async(self, func: Callable[[T], Awaitable[U]], concurrency: int = 16) -> SyncDataset[U]:
        return self._make(lambda: self.dataset.map_async(func, concurrency))

    def key_by(self, func: Callable[[T], K]) -> SyncDataset[tuple[K, T]]:
        return self._make(lambda: self.dataset.key_by(func))

    def map_values(
        self: SyncDataset[tuple[K, V]], func: Callable[[V], U]
    ) -> SyncDataset[tuple[K, U]]:
        return self._make(lambda: self.dataset.map_values(func))

    def keys(self: SyncDataset[tuple[K, V]]) -> SyncDataset[K]:
        return self._make(lambda: self.dataset.keys())

    def values(self: SyncDataset[tuple[K, V]]) -> SyncDataset[V]:
        return self._make(lambda: self.dataset.values())

    def union(self, *others: SyncDataset[T]) -> SyncDataset[T]:
        return self._make(lambda: self.dataset.union(*(unwrap(o) for o in others)))

    def reduce_by_key(
        self: SyncDataset[tuple[K, V]], func: Callable[[V, V], V], partitions: int | None = None
    ) -> SyncDataset[tuple[K, V]]:
        return self._make(lambda: self.dataset.reduce_by_key(func, partitions))

    def combine_by_key(
        self: SyncDataset[tuple[K, V]],
        create: Callable[[V], C],
        merge_value: Callable[[C, V], C],
        merge_combiners: Callable[[C, C], C],
        partitions: int | None = None,
    ) -> SyncDataset[tuple[K, C]]:
        return self._make(
            lambda: self.dataset.combine_by_key(create, merge_value, merge_combiners, partitions)
        )

    def aggregate_by_key(
        self: SyncDataset[tuple[K, V]],
        zero: U,
        seq_func: Callable[[U, V], U],
        comb_func: Callable[[U, U], U],
        partitions: int | None = None,
    ) -> SyncDataset[tuple[K, U]]:
        return self._make(
            lambda: self.dataset.aggregate_by_key(zero, seq_func, comb_func, partitions)
        )

    def group_by_key(
        self: SyncDataset[tuple[K, V]], partitions: int | None = None
    ) -> SyncDataset[tuple[K, list[V]]]:
        return self._make(lambda: self.dataset.group_by_key(partitions))

    def join(
        self: SyncDataset[tuple[K, V]],
        other: SyncDataset[tuple[K, W]],
        partitions: int | None = None,
    ) -> SyncDataset[tuple[K, tuple[V, W]]]:
        return self._make(lambda: self.dataset.join(unwrap(other), partitions))

    def left_outer_join(
        self: SyncDataset[tuple[K, V]],
        other: SyncDataset[tuple[K, W]],
        partitions: int | None = None,
    ) -> SyncDataset[tuple[K, tuple[V, W | None]]]:
        return self._make(lambda: self.dataset.left_outer_join(unwrap(other), partitions))

    def right_outer_join(
        self: SyncDataset[tuple[K, V]],
        other: SyncDataset[tuple[K, W]],
        partitions: int | None = None,
    ) -> SyncDataset[tuple[K, tuple[V | None, W]]]:
        return self._make(lambda: self.dataset.right_outer_join(unwrap(other), partitions))

    def full_outer_join(
        self: SyncDataset[tuple[K, V]],
        other: SyncDataset[tuple[K, W]],
        partitions: int | None = None,
    ) -> SyncDataset[tuple[K, tuple[V | None, W | None]]]:
        return self._make(lambda: self.dataset.full_outer_join(unwrap(other), partitions))

    def cogroup(
        self: SyncDataset[tuple[K, V]],
        other: SyncDataset[tuple[K, W]],
        partitions: int | None = None,
    ) -> SyncDataset[tuple[K, tuple[list[V], list[W]]]]:
        return self._make(lambda: self.dataset.cogroup(unwrap(other), partitions))

    def count_by_key(
        self: SyncDataset[tuple[K, Any]], partitions: int | None = None
    ) -> SyncDataset[tuple[K, int]]:
        return self._make(lambda: self.dataset.count_by_key(partitions))

    def distinct(self, partitions: int | None = None) -> SyncDataset[T]:
        return self._make(lambda: self.dataset.distinct(partitions))

    def repartition(self, partitions: int) -> SyncDataset[T]:
        return self._make(lambda: self.dataset.repartition(partitions))

    def sort_by_key(
        self: SyncDataset[tuple[K, V]], ascending: bool = True, partitions: int | None = None
    ) -> SyncDataset[tuple[K, V]]:
        return self._make(lambda: self.dataset.sort_by_key(ascending, partitions))

    def sort_by(
        self, func: Callable[[T], Any], ascending: bool = True, partitions: int | None = None
    ) -> SyncDataset[T]:
        return self._make(lambda: self.dataset.sort_by(func, ascending, partitions))

    def cache(self) -> SyncDataset[T]:
        self._loop.call(self.dataset.cache)
        return self

    def unpersist(self) -> SyncDataset[T]:
        self._loop.call(self.dataset.unpersist)
        return self

    # -- actions (blocking) ----------------------------------------------------------------

    def collect(self, *, timeout: float | None = None) -> list[T]:
        return self._loop.run(self.dataset.collect(timeout=timeout))

    def count(self, *, timeout: float | None = None) -> int:
        return self._loop.run(self.dataset.count(timeout=timeout))

    def take(self, n: int, *, timeout: float | None = None) -> list[T]:
        return self._loop.run(self.dataset.take(n, timeout=timeout))


class SyncStream(Generic[T]):
    """A ``Stream`` of a ``LocalEngine``: per-batch operators as ``Stream``'s (those not
    listed here are forwarded by name); ``run()`` is a plain iterator, ``drain()`` blocks."""

    __slots__ = ("_loop", "stream")

    def __init__(self, stream: Stream[T], loop: LoopThread) -> None:
        self.stream = stream
        self._loop = loop

    def __repr__(self) -> str:
        return f"<SyncStream {self.stream.name}>"

    def _make(self, build: Callable[[], Stream[U]]) -> SyncStream[U]:
        return SyncStream(self._loop.call(build), self._loop)

    @property
    def partitions(self) -> int:
        return self.stream.partitions

    @property
    def name(self) -> str:
        return self.stream.name

    def map(self, func: Callable[[T], U]) -> SyncStream[U]:
        return self._make(lambda: self.stream.map(func))

    def filter(self, func: Callable[[T], object]) -> SyncStream[T]:
        return self._make(lambda: self.stream.filter(func))

    def flat_map(self, func: Callable[[T], Iterable[U]]) -> SyncStream[U]:
        return self._make(lambda: self.stream.flat_map(func))

    def update_state(
        self: SyncStream[tuple[K, V]], func: Callable[[list[V], Any], Any], **options: Any
    ) -> SyncStream[tuple[K, Any]]:
        """See ``Stream.update_state`` (``combine``, ``partitions``, ``timeout``)."""
        return self._make(lambda: self.stream.update_state(func, **options))

    def window_reduce(
        self: SyncStream[tuple[Any, Any]],
        func: Callable[[Any, Any], Any],
        window: float,
        **options: Any,
    ) -> SyncStream[WindowResult]:
        return self._make(lambda: self.stream.window_reduce(func, window, **options))

    def window_count(
        self: SyncStream[tuple[Any, Any]], window: float, **options: Any
    ) -> SyncStream[WindowResult]:
        return self._make(lambda: self.stream.window_count(window, **options))

    def window_session(
        self: SyncStream[tuple[Any, Any]], gap: float, **options: Any
    ) -> SyncStream[WindowResult]:
        return self._make(lambda: self.stream.window_session(gap, **options))

    def sink(self, target: Any) -> SyncStream[T]:
        """See ``Stream.sink``: a callable runs on the engine's loop thread."""
        return self._make(lambda: self.stream.sink(target))

    def __getattr__(self, name: str) -> Callable[..., SyncStream[Any]]:
        """The other per-batch operators of ``Stream`` (``reduce_by_key``, ``join``, ...),
        with wrapped arguments unwrapped."""
        if name.startswith("_") or not callable(getattr(Stream, name, None)):
            raise AttributeError(name)

        def operator(*args: Any, **kwargs: Any) -> SyncStream[Any]:
            plain = [unwrap(a) for a in args]
            return self._make(lambda: getattr(self.stream, name)(*plain, **kwargs))

        return operator

    def run(
        self,
        batches: int | None = None,
        *,
        group_size: GroupSize = "auto",
        timeout: float | None = None,
        pre_schedule: bool = True,
    ) -> Iterator[StreamBatch]:
        """Each micro-batch's ``StreamBatch`` as it is done (see ``Stream.run``)."""
        loop = self._loop
        run = self.stream.run(
            batches, group_size=group_size, timeout=timeout, pre_schedule=pre_schedule
        )
        batches_of = aiter(run)
        try:
            while True:
                try:
                    yield loop.run(anext(batches_of))
                except StopAsyncIteration:
                    return
        finally:
            closing = getattr(batches_of, "aclose", None)
            if closing is not None:
                loop.run(closing())

    def drain(
        self,
        batches: int | None = None,
        *,
        group_size: GroupSize = "auto",
        timeout: float | None = None,
    ) -> int:
        return self._loop.run(self.stream.drain(batches, group_size=group_size, timeout=timeout))
