"""``adrizzle.LocalEngine``: the blocking entry point for scripts and notebooks (issue 20 item 7).

Its loop runs in a background thread, so it works from plain code and from code that already
runs an event loop in its thread (Jupyter; here ``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import inspect
import operator
import sys

import cloudpickle
import pytest

import adrizzle
from adrizzle.errors import AdrizzleError, TaskError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x: int) -> int:
    return x * x


def ints(batch: int, partition: int) -> range:
    return range((batch * 2 + partition) * 10, (batch * 2 + partition + 1) * 10)


def test_blocking_calls_return_values() -> None:
    with adrizzle.LocalEngine(workers=2, cores=1) as engine:
        data = engine.parallelize(range(100), partitions=4)
        assert isinstance(data, adrizzle.SyncDataset)
        assert data.map(square).take(3) == [0, 1, 4]
        assert data.count() == 100
        pairs = data.map(lambda x: (x % 3, x))
        assert sorted(pairs.reduce_by_key(operator.add, 2).collect()) == [
            (k, sum(x for x in range(100) if x % 3 == k)) for k in range(3)
        ]
        assert pairs.sort_by_key(False).keys().take(2) == [2, 2]
        assert engine.run_jobs([data] * 3, sum, group_size=3) == [[300, 925, 1550, 2175]] * 3
        assert [job.index for job in engine.iter_jobs([data] * 4, sum, group_size=2)] == [
            0,
            1,
            2,
            3,
        ]
        offset = engine.broadcast(1000)
        seen = engine.accumulator(0)

        def shift(x: int) -> int:
            seen.add(1)
            return x + offset.value

        assert data.map(shift).take(2) == [1000, 1001]
        assert seen.value == 8  # each of the 4 partitions stops after 2 items
        totals = (
            engine.stream(ints, partitions=2)
            .map(lambda x: ("sum", x))
            .update_state(lambda values, total: (total or 0) + sum(values), combine=operator.add)
        )
        batches = list(totals.run(5, group_size=2))
        assert [b.values for b in batches] == [
            [("sum", sum(range(20 * (b + 1))))] for b in range(5)
        ]
        assert len(engine.statistics()["workers"]) == len(engine.workers) == 2
    with pytest.raises(AdrizzleError, match="not running"):
        engine.parallelize([1])


def test_works_inside_a_running_event_loop() -> None:
    async def notebook_cell() -> list[int]:
        # A loop runs in this thread (as in Jupyter): the engine's own runs in another.
        assert asyncio.get_running_loop() is not None
        with adrizzle.LocalEngine(workers=1, cores=1) as engine:
            return engine.parallelize(range(6), partitions=2).map(square).collect()

    assert asyncio.run(notebook_cell()) == [0, 1, 4, 9, 16, 25]


def test_errors_and_misuse_surface_in_the_callers_thread() -> None:
    with adrizzle.LocalEngine(workers=1, cores=1) as engine:
        data = engine.parallelize(range(10), partitions=2)
        with pytest.raises(TaskError, match="ZeroDivisionError"):
            data.map(lambda x: 1 // (x - 5)).collect()
        assert data.count() == 10  # still usable afterwards

        caught: list[BaseException] = []

        def blocking_sink(batch: adrizzle.StreamBatch) -> None:
            try:
                data.count()  # a blocking call from the engine's own loop thread
            except AdrizzleError as exc:
                caught.append(exc)

        engine.stream(ints, partitions=2).sink(blocking_sink).drain(1)
        assert len(caught) == 1
        assert "engine's own loop" in str(caught[0])


def test_every_dataset_and_stream_operator_has_a_blocking_counterpart() -> None:
    public = {
        name
        for name, member in inspect.getmembers(adrizzle.Dataset)
        if not name.startswith("_") and callable(member)
    }
    internal = {"plan", "shape", "chain", "with_state"}
    assert public - internal - set(dir(adrizzle.SyncDataset)) == set()
    stream_ops = {
        name
        for name, member in inspect.getmembers(adrizzle.Stream)
        if not name.startswith("_") and callable(member)
    } - {"dataset", "from_source", "from_async"}
    with adrizzle.LocalEngine(workers=1, cores=1) as engine:
        stream = engine.stream(ints, partitions=2)
        for name in stream_ops:
            assert callable(getattr(stream, name)), name
