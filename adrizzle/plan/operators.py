"""The RDD operators beyond reduce, group and join: their reduce sides and map-side helpers.

Reduce sides (``READERS``, by ``ShuffleRead.kind``; ``blocks[i]`` holds the map blocks of the
read's shuffle ``i`` in map-partition order):

- ``cogroup``: per key, one list of values per shuffle, in arrival order.
- ``left_outer_join``, ``right_outer_join``, ``full_outer_join``: as Spark, None stands for the
  missing side.
- ``repartition``: the map tasks tag each item with its reducer (round robin from the map
  partition's index, so the result is balanced and deterministic); blocks are concatenated in
  map-partition order.
- ``sort_by_key`` runs in two shuffles, both inside the job (no driver round trip, so a sort
  stays pre-scheduled and works per stream batch): first every map partition sends a sample of
  its keys to every partition of a ``range_partition`` stage and its items to the partition of
  its own index (on its own slot: partition ``p`` of every stage runs on the same slot); each
  of those computes the same range bounds from the samples (weighted by partition sizes, as
  Spark's ``RangePartitioner``) and tags its items with their range; the ``sort_by_key``
  reducers then sort their range stably. Concatenating the partitions in order gives
  ``sorted(items, key=key, reverse=not ascending)`` exactly.

Pure functions over plain data: no I/O.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import operator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

COGROUP = "cogroup"
LEFT_OUTER, RIGHT_OUTER, FULL_OUTER = "left_outer_join", "right_outer_join", "full_outer_join"
REPARTITION = "repartition"
RANGE_PARTITION = "range_partition"
SORT = "sort_by_key"
UNION = "union"
# A range_partition stage gets at most about this many sampled keys per output partition
# (Spark samples 20 per partition; more keeps the ranges balanced on skewed keys).
SAMPLE_PER_PARTITION = 20


def _lists(blocks: list[Any]) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = {}
    for block in blocks:
        for k, v in block:
            found = out.get(k)
            if found is None:
                out[k] = [v]
            else:
                found.append(v)
    return out


def read_cogroup(func: Any, blocks: list[list[Any]]) -> Iterator[Any]:
    """``(key, (values of shuffle 0, values of shuffle 1, ...))`` per key of any shuffle."""
    sides = [_lists(b) for b in blocks]
    keys: dict[Any, None] = {}
    for side in sides:
        keys.update(dict.fromkeys(side))
    return ((k, tuple(side.get(k, []) for side in sides)) for k in keys)


_NONE = [None]


def read_left_outer(func: Any, blocks: list[list[Any]]) -> Iterator[Any]:
    left, right = _lists(blocks[0]), _lists(blocks[1])
    return ((k, (lv, rv)) for k, lvs in left.items() for lv in lvs for rv in right.get(k, _NONE))


def read_right_outer(func: Any, blocks: list[list[Any]]) -> Iterator[Any]:
    left, right = _lists(blocks[0]), _lists(blocks[1])
    return ((k, (lv, rv)) for k, rvs in right.items() for lv in left.get(k, _NONE) for rv in rvs)


def read_full_outer(func: Any, blocks: list[list[Any]]) -> Iterator[Any]:
    left, right = _lists(blocks[0]), _lists(blocks[1])
    matched = ((k, (lv, rv)) for k, lvs in left.items() for lv in lvs for rv in right.get(k, _NONE))
    right_only = ((k, (None, rv)) for k, rvs in right.items() if k not in left for rv in rvs)
    return itertools.chain(matched, right_only)


def read_concat(func: Any, blocks: list[list[Any]]) -> Iterator[Any]:
    """Direct blocks (lists of values), concatenated in map-partition order."""
    return itertools.chain.from_iterable(blocks[0])


# -- repartition ---------------------------------------------------------------------------


def tag_round_robin(reducers: int, partition: int, items: Iterable[Any]) -> Iterator[Any]:
    """Item ``i`` of map partition ``m`` goes to reducer ``(m + i) % reducers``."""
    for i, item in enumerate(items, partition):
        yield (i % reducers, item)


# -- sort ----------------------------------------------------------------------------------


def sample_keys(
    reducers: int, maps: int, partition: int, items: Iterable[Any]
) -> Iterator[tuple[int, Any]]:
    """Map side of a sort's first shuffle: to every ``range_partition`` partition a sample of
    this partition's keys (evenly spaced, deterministic) and its size; to the partition of its
    own index the items themselves."""
    pairs = list(items)
    for kv in pairs:
        if not isinstance(kv, tuple) or len(kv) != 2:
            raise TypeError(f"sort_by_key needs (key, value) pairs, got {type(kv).__name__}")
    n = len(pairs)
    # About 3x the keys a balanced share of the total sample needs (Spark's oversampling).
    size = min(n, max(1, -(-3 * SAMPLE_PER_PARTITION * reducers // maps)))
    sample = [pairs[(i * n) // size][0] for i in range(size)] if n else []
    note = ("sample", n, sample)
    for r in range(maps):
        yield (r, note)
    yield (partition, ("items", pairs))


def range_bounds(samples: list[tuple[int, list[Any]]], reducers: int) -> list[Any]:
    """``reducers - 1`` ascending bounds that split the sampled keys into ranges of nearly
    equal weight (each sampled key weighs its partition's size over its sample's size)."""
    weighted = [(key, count / len(sample)) for count, sample in samples if sample for key in sample]
    try:
        weighted.sort(key=operator.itemgetter(0))
    except TypeError as exc:
        raise TypeError(f"sort_by_key needs keys that compare with '<': {exc}") from exc
    total = sum(w for _k, w in weighted)
    bounds: list[Any] = []
    if not weighted or reducers < 2:
        return bounds
    step = total / reducers
    cumulative = 0.0
    target = step
    for key, weight in weighted:
        cumulative += weight
        if cumulative >= target:
            if not bounds or bounds[-1] < key:
                bounds.append(key)
            target += step
            if len(bounds) == reducers - 1:
                break
    return bounds


def read_range_partition(spec: tuple[int, bool], blocks: list[list[Any]]) -> Iterator[Any]:
    """Reduce side of a sort's first shuffle: the bounds from every map partition's sample,
    then this partition's items tagged with their range (descending: ranges reversed)."""
    reducers, ascending = spec
    samples: list[tuple[int, list[Any]]] = []
    items: list[Any] = []
    for block in blocks[0]:
        for kind, *rest in block:
            if kind == "sample":
                samples.append((rest[0], rest[1]))
            else:
                items = rest[0]
    bounds = range_bounds(samples, reducers)
    last = reducers - 1
    place = bisect.bisect_left
    try:
        if ascending:
            return iter([(place(bounds, kv[0]), kv) for kv in items])
        return iter([(last - place(bounds, kv[0]), kv) for kv in items])
    except TypeError as exc:
        raise TypeError(f"sort_by_key needs keys that compare with '<': {exc}") from exc


def read_sorted(ascending: bool, blocks: list[list[Any]]) -> Iterator[Any]:
    """This range's items sorted by key, stably (ties keep their order in the input)."""
    items = list(itertools.chain.from_iterable(blocks[0]))
    try:
        items.sort(key=operator.itemgetter(0), reverse=not ascending)
    except TypeError as exc:
        raise TypeError(f"sort_by_key needs keys that compare with '<': {exc}") from exc
    return iter(items)


# -- combine helpers -----------------------------------------------------------------------


def create_from_zero(zero: Any, seq_func: Callable[[Any, Any], Any], value: Any) -> Any:
    """``aggregate_by_key``: a key's first value folds into its own deep copy of ``zero``."""
    return seq_func(copy.deepcopy(zero), value)


def keep_first(a: Any, b: Any) -> Any:
    return a


def pair_none(x: Any) -> tuple[Any, None]:
    return (x, None)


def key_of(kv: tuple[Any, Any]) -> Any:
    return kv[0]


def value_of(kv: tuple[Any, Any]) -> Any:
    return kv[1]


def keyed_by(func: Callable[[Any], Any], x: Any) -> tuple[Any, Any]:
    return (func(x), x)


def map_value(func: Callable[[Any], Any], kv: tuple[Any, Any]) -> tuple[Any, Any]:
    return (kv[0], func(kv[1]))


def first_n(n: int, it: Iterator[Any]) -> list[Any]:
    return list(itertools.islice(it, n))


def count_items(it: Iterator[Any]) -> int:
    return sum(1 for _ in it)


READERS: dict[str, Callable[[Any, list[list[Any]]], Iterator[Any]]] = {
    COGROUP: read_cogroup,
    LEFT_OUTER: read_left_outer,
    RIGHT_OUTER: read_right_outer,
    FULL_OUTER: read_full_outer,
    REPARTITION: read_concat,
    RANGE_PARTITION: read_range_partition,
    SORT: read_sorted,
}
