"""Streams on real workers: state on the slots, windows, pacing, live input, adaptive G.

Every answer is checked exactly against plain Python over the same input.
"""

from __future__ import annotations

import asyncio
import collections
import operator
import sys
from typing import Any

import cloudpickle
import pytest

import adrizzle
from adrizzle.api.stream import StreamBatch
from adrizzle.errors import TaskError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# The slots cannot import this test module: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

P = 4  # partitions
K = 50  # ints per partition and batch


def ints(batch: int, partition: int) -> range:
    start = (batch * P + partition) * K
    return range(start, start + K)


def add_values(values: list[int], total: int | None) -> int:
    return (total or 0) + sum(values)


async def test_running_sum_is_exact_for_fixed_and_adaptive_group_sizes(
    engine: adrizzle.Engine,
) -> None:
    for group_size in (1, 5, "auto"):
        totals = (
            engine.stream(ints, partitions=P)
            .map(lambda x: ("total", x))
            .update_state(add_values, combine=operator.add)
        )
        seen = []
        run = totals.run(70, group_size=group_size, timeout=60)
        async for update in run:
            assert update.values == [("total", sum(range((update.batch + 1) * P * K)))]
            seen.append(update.batch)
        assert seen == list(range(70))
        # A second run continues at the source's next batch, with the state where it was.
        async for update in totals.run(10, group_size=group_size, timeout=60):
            last = update
        assert last.batch == 79
        assert last.values == [("total", sum(range(80 * P * K)))]
        sizes = run.group_sizes()
        assert sum(size * n for size, n in sizes.items()) == 70 or group_size == "auto"
        if group_size == "auto":
            assert run.controller is not None
            assert len(sizes) > 1  # it moved away from its initial size
    decisions = engine.statistics()["adaptive_groups"]
    assert decisions
    assert {"size", "overhead", "next_size", "action"} <= decisions[-1].keys()


def key_mod(x: int) -> tuple[int, int]:
    return (x % 7, x)


def keep_stats(values: list[int], state: tuple[int, int] | None) -> tuple[int, int] | None:
    count, total = state or (0, 0)
    return (count + len(values), total + sum(values))


async def test_update_state_keeps_per_key_state_on_the_slots(engine: adrizzle.Engine) -> None:
    stream = engine.stream(ints, partitions=P).filter(lambda x: x % 3 != 0).map(key_mod)
    stats = stream.update_state(keep_stats, partitions=3)  # grouped values, no combine
    expected: dict[int, tuple[int, int]] = {}
    async for update in stats.run(12, group_size=4, timeout=60):
        batch_items = [x for p in range(P) for x in ints(update.batch, p) if x % 3 != 0]
        touched = {x % 7 for x in batch_items}
        for x in batch_items:
            count, total = expected.get(x % 7, (0, 0))
            expected[x % 7] = (count + 1, total + x)
        assert dict(update.values) == {k: expected[k] for k in touched}


def timed_events(batch: int, partition: int) -> list[tuple[str, float]]:
    """Events of batch ``batch`` (interval 0.1 event-time units): keys and times vary."""
    return [
        ("abc"[(batch + partition + i) % 3], round(batch * 0.1 + i * 0.013 + partition * 0.002, 4))
        for i in range(7)
        if (batch * 7 + i + partition) % 5 != 0
    ]


async def test_paced_sliding_windows_are_exact_and_delivered_per_batch(
    engine: adrizzle.Engine,
) -> None:
    batches = 25
    stream = engine.stream(timed_events, partitions=3, batch_interval=0.01, batches=batches)
    windows = stream.window_count(0.3, slide=0.1, event_time=lambda kv: kv[1], partitions=2)
    sunk: list[StreamBatch] = []

    async def sink(batch: StreamBatch) -> None:
        sunk.append(batch)

    found: dict[tuple[str, float], int] = {}
    async for update in windows.sink(sink).run(group_size="auto", timeout=60):
        assert update.due is not None
        assert update.latency is not None
        for r in update.values:
            key = (r.key, round(r.start, 6))
            assert key not in found, "a window was emitted twice"
            found[key] = r.value
    assert [b.batch for b in sunk] == list(range(batches))
    expected: collections.Counter[tuple[str, float]] = collections.Counter()
    for b in range(batches):
        for p in range(3):
            for key, t in timed_events(b, p):
                # In integer units of 1e-4 (the times' precision): an event at 0.3 is in the
                # window starting at 0.3, as written, whatever 3 * 0.1 is in floats.
                ti = round(t * 10_000)
                for w in range(ti // 1000 - 3, ti // 1000 + 2):
                    if w * 1000 <= ti < w * 1000 + 3000:
                        expected[(key, round(w * 0.1, 6))] += 1
    assert found == dict(expected)


async def test_live_input_becomes_micro_batches(engine: adrizzle.Engine) -> None:
    async def arrivals() -> Any:
        for i in range(300):
            yield i
            if i % 25 == 0:
                await asyncio.sleep(0.005)

    counts = (
        engine.stream_from(arrivals(), partitions=2, batch_interval=0.01)
        .map(lambda x: ("n", x))
        .update_state(add_values, combine=operator.add)
    )
    outputs = [update async for update in counts.run(group_size=2, timeout=60)]
    assert len(outputs) >= 2  # the arrivals span several batch intervals
    assert [u.batch for u in outputs] == list(range(len(outputs)))
    assert all(u.latency is not None and u.latency >= 0 for u in outputs)
    final = [v for u in outputs for v in u.values][-1]
    assert final == ("n", sum(range(300)))


def explode(values: list[int], state: int | None) -> int:
    if 777 in values:
        raise RuntimeError("bad value 777")
    return (state or 0) + len(values)


async def test_a_failing_state_function_fails_its_micro_batch(engine: adrizzle.Engine) -> None:
    stream = engine.stream(lambda b, p: [777] if (b, p) == (2, 1) else [b], partitions=2)
    counts = stream.map(lambda x: ("k", x)).update_state(explode)
    seen: list[int] = []

    async def consume() -> None:
        async for update in counts.run(5, group_size=3, timeout=60):
            seen.append(update.batch)

    with pytest.raises(TaskError, match="bad value 777") as info:
        await consume()
    assert seen == [0, 1]
    assert info.value.job == 2
