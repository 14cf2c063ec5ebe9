"""Stream state timeouts, session windows, the idle watermark, late counts, the batch number of
a task error, and the adaptive default group size, on real workers (issue 20 item 6).

Every answer is checked against plain Python over the same input.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
import cloudpickle
import pytest
import pytest_asyncio

import adrizzle

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.asyncio(loop_scope="module"),
]

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine() -> AsyncIterator[adrizzle.Engine]:
    async with adrizzle.Engine.local(workers=2, cores=1, status="127.0.0.1:0") as eng:
        yield eng


P = 2
T = 0.02  # batch interval of the paced streams


def keys_of_batch(batch: int) -> list[str]:
    """Key ``k`` has values in the batches where ``batch % (k + 2) == 0`` (and ``z`` once)."""
    return [f"k{k}" for k in range(4) if batch % (k + 2) == 0] + (["z"] if batch == 1 else [])


def timed(batch: int, partition: int) -> list[tuple[str, int]]:
    return [(key, batch) for key in keys_of_batch(batch)][partition::P]


def count_until_timeout(values: list[int], seen: int | None) -> int | None:
    if values is adrizzle.STATE_TIMEOUT:
        return None
    return (seen or 0) + len(values)


def expected_timeouts(batches: int, quiet: int) -> list[dict[str, int | None]]:
    """Per batch, the updates: keys with values, then keys quiet for ``quiet`` batches."""
    state: dict[str, int] = {}
    touched: dict[str, int] = {}
    out = []
    for b in range(batches):
        updates: dict[str, int | None] = {}
        for key in keys_of_batch(b):
            state[key] = state.get(key, 0) + 1
            touched[key] = b
            updates[key] = state[key]
        for key in [k for k, t in touched.items() if k not in updates and b - t >= quiet]:
            updates[key] = None
            del state[key], touched[key]
        out.append(updates)
    return out


async def test_update_state_times_out_quiet_keys(engine: adrizzle.Engine) -> None:
    stream = engine.stream(timed, partitions=P, batch_interval=T)
    # 3 batches without values (2.5 intervals, so float noise cannot tip it either way).
    updated = stream.update_state(count_until_timeout, timeout=2.5 * T, partitions=3)
    want = expected_timeouts(40, 3)
    async for update in updated.run(40, group_size=4, timeout=60):
        assert dict(update.values) == want[update.batch], update.batch
    assert any(None in w.values() for w in want)  # some keys did time out


def session_events(batch: int, partition: int) -> list[tuple[int, int]]:
    """Key ``x % 3``, event time ``x``: runs of 20 ints with gaps of 10 (so sessions)."""
    start = (batch * P + partition) * 10
    return [(x % 3, x) for x in range(start, start + 10) if (x // 20) % 3 != 2]


def expected_sessions(batches: int, gap: int) -> list[tuple[int, int, int, list[int]]]:
    by_key: dict[int, list[int]] = {}
    for b in range(batches):
        for p in range(P):
            for k, x in session_events(b, p):
                by_key.setdefault(k, []).append(x)
    out = []
    for key, times in by_key.items():
        times.sort()
        run = [times[0]]
        for t in times[1:]:
            if t - run[-1] >= gap:
                out.append((key, run[0], run[-1] + gap, run))
                run = []
            run.append(t)
        out.append((key, run[0], run[-1] + gap, run))
    return sorted(out)


async def test_session_windows_equal_plain_python(engine: adrizzle.Engine) -> None:
    stream = engine.stream(session_events, partitions=P, batches=30)
    sessions = stream.window_session(8.0, event_time=lambda kv: float(kv[1]), partitions=3)
    got = []
    async for update in sessions.run(group_size=5, timeout=60):
        for r in update.values:
            assert isinstance(r, adrizzle.WindowResult)
            got.append((r.key, int(r.start), int(r.end), r.value))
            if r.complete:  # emitted once the watermark passed its end
                assert r.end <= max(
                    x for p in range(P) for _k, x in session_events(update.batch, p)
                )
    assert sorted(got) == expected_sessions(30, 8)
    assert engine.statistics()["late_values"][stream.name] == 0


def fading(batch: int, partition: int) -> list[tuple[str, float]]:
    """Events at time ``batch * T`` for the first 10 batches, then nothing."""
    return [("k", batch * T)] if batch < 10 and partition == 0 else []


async def test_the_idle_watermark_closes_windows_of_a_quiet_stream(
    engine: adrizzle.Engine,
) -> None:
    for idle in (None, 3 * T):
        stream = engine.stream(fading, partitions=P, batch_interval=T, batches=40)
        counts = stream.window_count(5 * T, event_time=lambda kv: kv[1], idle_timeout=idle)
        emitted = {}
        async for update in counts.run(group_size=2, timeout=60):
            for r in update.values:
                emitted[round(r.start / T)] = (update.batch, r.value, r.complete)
        if idle is None:  # the last window waits for the source's end
            assert emitted[5] == (39, 5, False)
        else:  # quiet for 3 intervals after its last event at 9T: the watermark moves on
            batch, value, complete = emitted[5]
            assert (value, complete) == (5, True)
            assert batch <= 15
        assert emitted[0][1:] == (5, True)


def with_late(batch: int, partition: int) -> list[tuple[str, float]]:
    """One event per batch at time ``batch``; batch 6 also sends two from window [0, 2)."""
    if partition:
        return []
    return [("k", float(batch))] + ([("k", 0.5), ("k", 1.5)] if batch == 6 else [])


async def test_late_values_show_in_statistics_and_metrics(engine: adrizzle.Engine) -> None:
    stream = engine.stream(with_late, partitions=P, name="late-check")
    counts = stream.window_count(2.0, event_time=lambda kv: kv[1])
    async for _update in counts.run(10, group_size=3, timeout=60):
        pass
    assert engine.statistics()["late_values"]["late-check"] == 2
    assert engine.status_url is not None
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(f"{engine.status_url}/metrics") as response,
    ):
        text = await response.text()
    assert 'adrizzle_late_values_total{stream="late-check"} 2.0' in text


def explode_at_13(x: int) -> int:
    if x == 13 * 10:
        raise RuntimeError("bad event")
    return x


async def test_task_errors_carry_the_stream_batch(engine: adrizzle.Engine) -> None:
    stream = engine.stream(lambda b, p: range(b * 10 + p * 5, b * 10 + p * 5 + 5), partitions=P)
    mapped = stream.map(explode_at_13)
    run = mapped.run(10)  # group_size defaults to "auto"
    async for _update in run:
        pass
    assert run.controller is not None
    with pytest.raises(adrizzle.TaskError) as info:
        async for _update in mapped.run(10):
            pass
    assert info.value.batch == 13
    assert info.value.job == 3  # the second run's fourth micro-batch
    assert "stream batch 13" in str(info.value)
