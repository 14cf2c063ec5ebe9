"""``map_async`` on its own (the slot's event loop, no engine): order, bound, failures."""

from __future__ import annotations

import asyncio
import random

import pytest

from adrizzle.plan.async_map import map_async, slot_loop


def test_results_keep_input_order_with_at_most_n_in_flight() -> None:
    rng = random.Random(5)
    delays = [rng.uniform(0, 0.004) for _ in range(40)]
    state = {"now": 0, "peak": 0}

    async def slow(i: int) -> int:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(delays[i])
        state["now"] -= 1
        return i * 10

    assert list(map_async(slow, 6, range(40))) == [i * 10 for i in range(40)]
    assert state["peak"] == 6
    assert state["now"] == 0
    assert list(map_async(slow, 6, [])) == []


def test_a_failure_cancels_the_calls_in_flight_and_the_loop_stays_usable() -> None:
    cancelled = []

    async def call(i: int) -> int:
        try:
            if i == 2:
                raise ValueError("bad item 2")
            await asyncio.sleep(0.05 if i < 2 else 5.0)
            return i
        except asyncio.CancelledError:
            cancelled.append(i)
            raise

    with pytest.raises(ValueError, match="bad item 2"):
        list(map_async(call, 3, range(10)))
    # Items 0 and 1 finished (results come in order); 3 and 4 were in flight: cancelled.
    assert sorted(cancelled) == [3, 4]

    async def quick(i: int) -> int:
        return -i

    assert list(map_async(quick, 2, range(3))) == [0, -1, -2]
    assert not slot_loop().is_running()


def test_a_plain_function_is_refused_when_called() -> None:
    with pytest.raises(TypeError, match="coroutine function"):
        list(map_async(lambda x: x, 2, [1]))  # type: ignore[arg-type, return-value]
