"""Streams survive worker loss exactly: state checkpoints, restore and replay (issue 6 item 3).

A worker is SIGKILLed (by pid from ``engine.workers``) at a random micro-batch of a stateful
stream; every batch must be delivered exactly once, in order, with the values a failure-free
run gives: per-key running totals and window counts are checked against plain Python after
every batch, so a batch lost or counted twice shows up where it happens.
"""

from __future__ import annotations

import asyncio
import collections
import operator
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import adrizzle
from adrizzle.driver.checkpoint_files import FILE_PREFIX, read_checkpoint_file
from adrizzle.errors import StateOrderError
from tests.conftest import fast_heartbeat_engine

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

cloudpickle.register_pickle_by_value(sys.modules[__name__])

P = 4  # partitions
K = 40  # ints per partition and batch
KEYS = 6


def ints(batch: int, partition: int) -> range:
    start = (batch * P + partition) * K
    return range(start, start + K)


def keyed(x: int) -> tuple[int, int]:
    return (x % KEYS, x)


def add_values(values: list[int], total: int | None) -> int:
    return (total or 0) + sum(values)


def expected_totals(batches: int) -> list[dict[int, int]]:
    """Per batch: every key's running total after it (plain Python)."""
    totals: dict[int, int] = collections.Counter()
    out = []
    for b in range(batches):
        for p in range(P):
            for x in ints(b, p):
                totals[x % KEYS] += x
        out.append(dict(totals))
    return out


def running_totals(engine: adrizzle.Engine, **stream_kw: Any) -> adrizzle.Stream:
    return (
        engine.stream(ints, partitions=P, **stream_kw)
        .map(keyed)
        .update_state(add_values, combine=operator.add, partitions=3)
    )


async def check_running_totals(
    stream: adrizzle.Stream,
    batches: int,
    group_size: int | str,
    kill: tuple[int, int] | None,
    engine: adrizzle.Engine,
) -> None:
    """Run ``batches``; ``kill = (batch, worker index)`` SIGKILLs that worker after that batch."""
    want = expected_totals(batches)
    seen = []
    async for update in stream.run(batches, group_size=group_size, timeout=90):
        seen.append(update.batch)
        # Every key gets values in every batch, so every key's new total is emitted.
        assert dict(update.values) == want[update.batch], f"batch {update.batch}"
        if kill is not None and update.batch == kill[0]:
            os.kill(engine.workers[kill[1]]["pid"], signal.SIGKILL)
    assert seen == list(range(batches))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_sigkill_during_a_stateful_stream_keeps_running_totals_exact(seed: int) -> None:
    rng = random.Random(seed)
    group_size = rng.choice([1, 3, 8, "auto"])
    batches = 120
    kill = (rng.randrange(5, 90), rng.randrange(3))
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        await check_running_totals(running_totals(engine), batches, group_size, kill, engine)
        stats = engine.statistics()
        assert stats["recoveries"] >= 1
        assert stats["checkpoints"]["restores"] >= 2  # the first placement, and after the loss
        assert stats["checkpoints"]["storage"] == "memory"


async def test_sigkill_before_the_first_checkpoint_replays_from_the_start() -> None:
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        stream = running_totals(engine)
        want = expected_totals(30)
        seen = []
        async for update in stream.run(30, group_size=10, timeout=90):
            if update.batch == 0:  # the first group is still running on the others
                os.kill(engine.workers[0]["pid"], signal.SIGKILL)
            assert dict(update.values) == want[update.batch]
            seen.append(update.batch)
        assert seen == list(range(30))


async def test_two_losses_in_one_stream_and_a_second_run_continue_exactly() -> None:
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        stream = running_totals(engine)
        await check_running_totals(stream, 60, 4, (20, 0), engine)
        # The second run continues from batch 60 with the state restored on the survivors.
        want = expected_totals(100)
        async for update in stream.run(40, group_size=4, timeout=90):
            assert dict(update.values) == want[update.batch]
            if update.batch == 75:
                os.kill(engine.workers[0]["pid"], signal.SIGKILL)
        assert update.batch == 99
        assert len(engine.workers) == 1


def event_time(item: tuple[int, int]) -> float:
    return item[1] / 100.0  # the int itself, read as time in hundredths


def expected_windows(batches: int, window: float) -> collections.Counter[Any]:
    counts: collections.Counter[Any] = collections.Counter()
    for b in range(batches):
        for p in range(P):
            for x in ints(b, p):
                start = (x / 100.0) // window * window
                counts[(x % KEYS, start)] += 1
    return counts


@pytest.mark.parametrize("seed", [5, 6])
async def test_sigkill_during_windowed_counts_keeps_every_window_exact(seed: int) -> None:
    rng = random.Random(seed)
    batches, window = 80, 5.0
    kill_at = rng.randrange(10, 60)
    group_size = rng.choice([2, 5])
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        counts = (
            engine.stream(ints, partitions=P, batches=batches)
            .map(keyed)
            .window_count(window, event_time=event_time, partitions=2)
        )
        got: collections.Counter[Any] = collections.Counter()
        async for update in counts.run(group_size=group_size, timeout=90):
            for result in update.values:
                key = (result.key, result.start)
                assert key not in got, f"window {key} emitted twice"
                got[key] = result.value
            if update.batch == kill_at:
                os.kill(engine.workers[rng.randrange(3)]["pid"], signal.SIGKILL)
        assert got == expected_windows(batches, window)
        assert engine.statistics()["recoveries"] >= 1


async def test_checkpoint_dir_writes_whole_files_and_restores_from_them(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        stream = running_totals(engine, checkpoint_dir=directory)
        await check_running_totals(stream, 80, 5, (40, 2), engine)
        assert await engine.wait_settled()  # the last group's acks commit its checkpoint
        assert engine.session.checkpoints.flush(10.0)  # and the writer thread wrote it
        stats = engine.statistics()["checkpoints"]  # (the registry takes the written files)
        assert stats["storage"] == "directory"
        assert stats["files_written"] >= 1
        assert stats["write_errors"] == 0
        names = sorted(p.name for p in directory.iterdir())
        # Only whole files (a temporary name is renamed, never left), old ones deleted.
        assert names
        assert all(n.startswith(FILE_PREFIX) and n.endswith(".pkl") for n in names)
        assert len(names) <= 3
        cells = read_checkpoint_file(directory / names[-1])
        totals = {}
        for cell in cells.values():
            totals.update(cell.data)
        assert {cell.batch for cell in cells.values()} == {79}
        assert totals == expected_totals(80)[79]


async def test_a_live_stateful_stream_replays_its_kept_batches_after_a_loss() -> None:
    async def numbers() -> Any:
        for i in range(3000):
            yield i
            if i % 50 == 0:
                await asyncio.sleep(0.002)

    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        totals = (
            engine.stream_from(numbers(), partitions=P, batch_interval=0.005)
            .map(keyed)
            .update_state(add_values, combine=operator.add)
        )
        got: dict[int, int] = {}
        killed = False
        batches = []
        async for update in totals.run(group_size=3, timeout=90):
            got.update(dict(update.values))
            batches.append(update.batch)
            if not killed and update.batch >= 10:
                os.kill(engine.workers[1]["pid"], signal.SIGKILL)
                killed = True
        assert killed
        assert batches == list(range(len(batches)))
        want: dict[int, int] = collections.Counter()
        for i in range(3000):
            want[i % KEYS] += i
        assert got == dict(want)
        # Items are kept until a checkpoint covers their batch (pruned at the end of each of
        # the stream's runs): at most the last run's batches are left.
        kept = totals.origin.kept
        assert len(batches) > 20
        assert all(batches[-1] - 64 < b <= batches[-1] for b in kept), sorted(kept)


async def test_a_joining_worker_takes_stream_partitions_with_their_state() -> None:
    async with adrizzle.Engine.local(workers=2, cores=1) as engine:
        stream = running_totals(engine)
        want = expected_totals(150)
        added = False
        async for update in stream.run(150, group_size=4, timeout=90):
            assert dict(update.values) == want[update.batch]
            if update.batch == 20 and not added:
                await engine.add_workers(1)
                added = True
        slots_used = {w["id"]: w["tasks_done"] for w in engine.workers}
        assert len(slots_used) == 3
        assert all(done > 0 for done in slots_used.values()), slots_used
        assert engine.statistics()["checkpoints"]["restores"] >= 2


async def test_a_draining_worker_hands_its_stream_partitions_back() -> None:
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        stream = running_totals(engine)
        want = expected_totals(120)
        removing: asyncio.Task[None] | None = None
        async for update in stream.run(120, group_size=4, timeout=90):
            assert dict(update.values) == want[update.batch]
            if update.batch == 30:
                removing = asyncio.ensure_future(engine.remove_worker(engine.workers[0]["id"]))
        assert removing is not None
        await asyncio.wait_for(removing, 30)
        assert len(engine.workers) == 2
        assert engine.statistics()["recoveries"] == 0


def keep_a_lock(values: list[int], state: Any) -> Any:
    import threading

    return state or {"lock": threading.Lock()}


async def test_state_that_cannot_be_pickled_fails_with_a_clear_error() -> None:
    async with adrizzle.Engine.local(workers=2, cores=1) as engine:
        stream = (
            engine.stream(ints, partitions=P)
            .map(keyed)
            .update_state(keep_a_lock)
            .map(lambda kv: kv[0])  # the output can be pickled, the state cannot
        )
        with pytest.raises(adrizzle.errors.SerializationError, match="cannot checkpoint"):
            async for _update in stream.run(10, group_size=2, timeout=60):
                pass


async def test_a_stopped_worker_rolls_the_stream_back_after_the_heartbeat_timeout() -> None:
    async with fast_heartbeat_engine() as engine:
        stopped = engine.workers[1]
        want = expected_totals(60)
        try:
            async for update in running_totals(engine).run(60, group_size=3, timeout=60):
                assert dict(update.values) == want[update.batch]
                if update.batch == 10:
                    os.kill(stopped["pid"], signal.SIGSTOP)  # connected but silent
        finally:
            os.kill(stopped["pid"], signal.SIGCONT)
        assert stopped["id"] not in {w["id"] for w in engine.workers}
        assert engine.statistics()["recoveries"] >= 1


async def test_a_new_driver_resumes_a_stream_from_its_checkpoint_dir(tmp_path: Path) -> None:
    directory = tmp_path / "totals"
    want = expected_totals(50)
    async with adrizzle.Engine.local(workers=2, cores=1) as engine:
        first = running_totals(engine, checkpoint_dir=directory)
        async for update in first.run(30, group_size=5, timeout=60):
            assert dict(update.values) == want[update.batch]
    # The driver is gone (closing waited for the last checkpoint to reach the disk). A new one
    # that builds the same pipeline on the same directory continues after batch 29.
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        again = running_totals(engine, checkpoint_dir=directory)
        seen = []
        async for update in again.run(20, group_size=5, timeout=60):
            assert dict(update.values) == want[update.batch]
            seen.append(update.batch)
        assert seen == list(range(30, 50))
    # A pipeline with other state cannot take over that directory.
    async with adrizzle.Engine.local(workers=1, cores=1) as engine:
        other = engine.stream(ints, partitions=P, checkpoint_dir=directory).map(keyed)
        other = other.update_state(add_values).update_state(add_values)
        with pytest.raises(StateOrderError, match="another pipeline"):
            async for _update in other.run(1, timeout=60):
                pass


async def test_the_engine_checkpoint_dir_gives_each_stream_its_own_directory(
    tmp_path: Path,
) -> None:
    want = expected_totals(20)
    for driver in range(2):
        async with adrizzle.Engine.local(workers=2, cores=1, checkpoint_dir=tmp_path) as engine:
            for stream, size in ((running_totals(engine), 2), (running_totals(engine), 5)):
                seen = []
                async for update in stream.run(10, group_size=size, timeout=60):
                    assert dict(update.values) == want[update.batch]
                    seen.append(update.batch)
                # The second driver resumes each stream from its own files.
                assert seen == list(range(10 * driver, 10 * driver + 10))
    assert sorted(os.listdir(tmp_path)) == ["stream-0", "stream-1"]


async def test_a_bsp_stateful_stream_checkpoints_its_last_wave_and_survives_a_kill() -> None:
    async with adrizzle.Engine.local(workers=3, cores=1) as engine:
        stream = running_totals(engine)
        want = expected_totals(40)
        async for update in stream.run(40, group_size=4, timeout=60, pre_schedule=False):
            assert dict(update.values) == want[update.batch]
            if update.batch == 21:
                os.kill(engine.workers[2]["pid"], signal.SIGKILL)
        assert update.batch == 39
        stats = engine.statistics()
        assert stats["recoveries"] >= 1
        # The state changes in the second wave; the checkpoint is of the group's last batch.
        assert await engine.wait_settled()
        assert engine.session.checkpoints.covered_through(stream.state_ids) == 39
