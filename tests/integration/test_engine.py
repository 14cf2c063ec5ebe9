"""The engine end to end: real worker processes on loopback, results, errors, frame counts."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import psutil
import pytest

import adrizzle
from adrizzle.errors import SerializationError, TaskError
from tests.conftest import adrizzle_processes, wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

P, K = 4, 1000
EXPECTED = [sum(range(p * K, (p + 1) * K)) for p in range(P)]


async def test_issue_example(engine: adrizzle.Engine) -> None:
    data = engine.parallelize(range(P * K), partitions=P).cache()
    per_job = await engine.run_jobs([data] * 100, lambda it: sum(it), group_size=10, timeout=30)
    assert per_job == [EXPECTED] * 100
    seen = []
    async for job in engine.iter_jobs([data.map(lambda x: x * 2)] * 20, sum, group_size=5):
        assert job.values == [2 * v for v in EXPECTED]
        seen.append(job.index)
    assert seen == list(range(20))


async def test_one_launch_and_one_ack_per_worker_per_group(engine: adrizzle.Engine) -> None:
    data = engine.parallelize(range(P * K), partitions=P).cache()
    before = engine.statistics()
    await engine.run_jobs([data] * 100, sum, group_size=10, timeout=30)
    # Acks of the last groups may still be on their way when the last result arrives.
    await engine.wait_settled()
    after = engine.statistics()

    def delta(kind: str, name: str) -> int:
        return int(after[kind].get(name, 0) - before[kind].get(name, 0))

    workers = len(engine.workers)
    assert delta("frames_sent", "launch_group") == 10 * workers
    assert delta("frames_received", "group_done") == 10 * workers
    # Results flow per micro-batch, packed per slot when several finish within the linger
    # time: at least one frame per group and slot, at most one per batch and slot.
    assert 10 * workers <= delta("frames_received", "batch_result") <= 100 * workers
    # During the run the driver sent nothing but launches (cluster views go out on joins).
    sent = {k for k, n in after["frames_sent"].items() if n != before["frames_sent"].get(k, 0)}
    assert sent - {"heartbeat"} == {"launch_group"}  # liveness ticks once a second


async def test_source_data_is_shipped_once_per_slot(engine: adrizzle.Engine) -> None:
    data = engine.parallelize(range(P * K), partitions=P)
    await engine.run_jobs([data] * 30, sum, group_size=3)
    sent_first = engine.statistics()["bytes_sent"]["launch_group"]
    await engine.run_jobs([data] * 30, sum, group_size=3)
    sent_second = engine.statistics()["bytes_sent"]["launch_group"] - sent_first
    # The first run carried 4 partitions of 1000 ints; the second only programs.
    assert sent_second < sent_first / 2
    assert engine.statistics()["blocks"]["source_partitions_shipped"] == P


async def test_group_g_plus_1_launched_before_g_acknowledged(
    engine: adrizzle.Engine, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"

    def wait_for_gate(x: int) -> int:
        import time

        while not gate.exists():
            time.sleep(0.005)
        return x

    data = engine.parallelize(range(P * K), partitions=P)
    blocked = data.map(wait_for_gate)
    free = data.map(lambda x: x)
    window = engine.config.window
    jobs = 2 * (window + 2)  # more groups of 2 than the window holds
    before = engine.statistics()["frames_sent"].get("launch_group", 0)
    run = asyncio.ensure_future(engine.run_jobs([blocked] + [free] * (jobs - 1), sum, group_size=2))
    try:
        for _ in range(500):
            stats = engine.statistics()
            if stats["frames_sent"].get("launch_group", 0) - before >= window * 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # time enough to launch more, were the window not full
        stats = engine.statistics()
        # The window's groups are all out (one launch per worker each) while group 0 cannot
        # finish, and no more.
        assert stats["frames_sent"]["launch_group"] - before == window * 2
        assert stats["groups_in_flight"] == window
    finally:
        gate.touch()
    results = await asyncio.wait_for(run, 30)
    assert results == [EXPECTED] * jobs


async def test_a_batch_is_delivered_before_its_group_finishes(
    engine: adrizzle.Engine, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"

    def wait_for_gate(x: int) -> int:
        import time

        while not gate.exists():
            time.sleep(0.005)
        return x

    data = engine.parallelize(range(P * K), partitions=P)
    free, blocked = data.map(lambda x: x), data.map(wait_for_gate)
    datasets = [free, free, blocked, free, free]  # one group of 5; its 3rd batch blocks
    delivered: list[int] = []
    async with asyncio.timeout(30):
        async for job in engine.iter_jobs(datasets, sum, group_size=5):
            delivered.append(job.index)
            if job.index == 1:
                assert engine.statistics()["groups_in_flight"] == 1
                gate.touch()  # only now can the group finish
    assert delivered == [0, 1, 2, 3, 4]


async def test_user_exception_fails_only_its_job(engine: adrizzle.Engine) -> None:
    data = engine.parallelize(range(P * K), partitions=P)

    def explode(it: object) -> int:
        raise ZeroDivisionError("boom in user code")

    funcs = [sum, sum, explode, sum]
    results = await engine.run_jobs([data] * 4, funcs, group_size=4, return_exceptions=True)
    assert results[0] == results[1] == results[3] == EXPECTED
    err = results[2]
    assert isinstance(err, TaskError)
    assert err.job == 2
    assert err.partition == 0
    assert err.worker in {w["id"] for w in engine.workers}
    assert err.exc_type == "ZeroDivisionError"
    assert "boom in user code" in str(err)
    assert "explode" in err.remote_traceback

    with pytest.raises(TaskError, match="boom in user code"):
        await engine.run_jobs([data] * 4, funcs, group_size=2)
    # The engine is still healthy afterwards.
    assert await engine.run_jobs([data], sum) == [EXPECTED]


async def test_iter_jobs_raises_at_the_failed_job(engine: adrizzle.Engine) -> None:
    data = engine.parallelize(range(8), partitions=2)
    funcs = [sum, lambda it: 1 // 0, sum]
    got = []

    async def consume() -> None:
        async for job in engine.iter_jobs([data] * 3, funcs, group_size=3):
            got.append(job.index)

    with pytest.raises(TaskError) as info:
        await consume()
    assert got == [0]
    assert info.value.job == 1


async def test_unpicklable_function_refused_before_sending(engine: adrizzle.Engine) -> None:
    lock = threading.Lock()
    data = engine.parallelize(range(8), partitions=2)
    before = engine.statistics()["frames_sent"].get("launch_group", 0)
    with pytest.raises(SerializationError, match="cannot serialize") as info:
        await engine.run_jobs([data], lambda it: (lock, sum(it)), group_size=1)
    assert "lock" in str(info.value)
    assert engine.statistics()["frames_sent"].get("launch_group", 0) == before


async def test_unpicklable_result_fails_the_job_with_a_clear_error(engine: adrizzle.Engine) -> None:
    data = engine.parallelize(range(8), partitions=2)
    with pytest.raises(TaskError, match="cannot pickle the task's result"):
        await engine.run_jobs([data], lambda it: threading.Lock())


async def test_shape_mismatch_is_a_value_error(engine: adrizzle.Engine) -> None:
    data = engine.parallelize(range(8), partitions=2)
    with pytest.raises(ValueError, match="stage structure"):
        await engine.run_jobs([data, data.map(str)], sum)
    with pytest.raises(ValueError, match="stage structure"):
        await engine.run_jobs([data, engine.parallelize(range(8), partitions=3)], sum)
    with pytest.raises(ValueError, match="2 datasets but 1 functions"):
        await engine.run_jobs([data, data], [sum])


async def test_narrow_operations_match_plain_python(engine: adrizzle.Engine) -> None:
    words = ["a b", "c", "", "d e f"] * 5
    ds = engine.parallelize(words, partitions=3)
    chain = ds.flat_map(str.split).map(str.upper).filter(lambda w: w != "C")
    out = await engine.run_jobs([chain], list)
    flat = [w for part in out[0] for w in part]
    assert flat == [w.upper() for s in words for w in s.split() if w != "c"]
    counted = await engine.run_jobs([ds.map_partitions(lambda it: [len(list(it))])], list)
    assert sum(v[0] for v in counted[0]) == len(words)
    gen = engine.generate(lambda p: range(p * 10, p * 10 + 10), partitions=3)
    assert await engine.run_jobs([gen], sum) == [[45, 145, 245]]


async def test_cache_keeps_partitions_on_the_slot(engine: adrizzle.Engine, tmp_path: Path) -> None:
    counter = tmp_path / "calls"

    def count_calls(x: int) -> int:
        with open(counter, "a") as f:
            f.write(".")
        return x

    cached = engine.parallelize(range(20), partitions=2).map(count_calls).cache()
    assert await engine.run_jobs([cached] * 5, sum, group_size=5) == [[45, 145]] * 5
    assert counter.read_text() == "." * 20  # computed once, then served from the slot


async def test_no_worker_outlives_its_engine_even_on_error() -> None:
    pids: set[int] = set()

    async def app() -> None:
        async with adrizzle.Engine.local(workers=2, cores=2) as engine:
            for w in engine.workers:
                proc = psutil.Process(w["pid"])
                pids.update({proc.pid} | {c.pid for c in proc.children()})
            assert len(pids) == 2 + 4  # two workers, two slots each
            raise RuntimeError("user error")

    with pytest.raises(RuntimeError, match="user error"):
        await app()
    assert wait_gone(pids) == set()


async def test_no_worker_outlives_a_cancelled_run() -> None:
    started = asyncio.Event()
    pids: set[int] = set()

    async def app() -> None:
        async with adrizzle.Engine.local(workers=2, cores=1) as engine:
            for w in engine.workers:
                proc = psutil.Process(w["pid"])
                pids.update({proc.pid} | {c.pid for c in proc.children()})
            data = engine.parallelize(range(8), partitions=2)
            slow = data.map(lambda x: __import__("time").sleep(0.05) or x)
            started.set()
            await engine.run_jobs([slow] * 1000, sum, group_size=10)

    task = asyncio.ensure_future(app())
    await asyncio.wait_for(started.wait(), 30)
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert wait_gone(pids) == set()


async def test_killed_worker_is_recovered_from(engine: adrizzle.Engine) -> None:
    data = engine.parallelize(range(8), partitions=2)
    slow = data.map(lambda x: __import__("time").sleep(0.002) or x)
    run = asyncio.ensure_future(engine.run_jobs([slow] * 60, sum, group_size=5, timeout=60))
    await asyncio.sleep(0.1)
    os.kill(engine.workers[0]["pid"], 9)
    assert await asyncio.wait_for(run, 60) == [[6, 22]] * 60
    assert engine.statistics()["recoveries"] >= 1


async def test_run_timeout(engine: adrizzle.Engine) -> None:
    data = engine.parallelize(range(2), partitions=2)
    slow = data.map(lambda x: __import__("time").sleep(2) or x)
    with pytest.raises(adrizzle.errors.RunTimeoutError, match=r"within 0\.2 s"):
        await engine.run_jobs([slow], sum, timeout=0.2)


def test_non_loopback_without_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADRIZZLE_AUTH_TOKEN", raising=False)
    with pytest.raises(adrizzle.errors.AdrizzleError, match="without a token"):
        adrizzle.Engine(listen="0.0.0.0:0")


def test_processes_helper_sees_nothing_stale() -> None:
    # Guards the leak checker itself: it must not count this test process.
    assert os.getpid() not in adrizzle_processes()


async def test_function_from_a_module_workers_cannot_import(
    engine: adrizzle.Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cloudpickle pickles functions of importable modules by reference; the workers lack
    # this module, so loading the program fails there. The run fails with a clear error and
    # the worker (and its slot) survive it.
    (tmp_path / "driver_only_mod.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import driver_only_mod  # type: ignore[import-not-found]

    data = engine.parallelize(range(8), partitions=2)
    with pytest.raises(SerializationError, match="No module named 'driver_only_mod'"):
        await engine.run_jobs([data.map(driver_only_mod.double)], sum, timeout=30)
    pids = {w["pid"] for w in engine.workers}
    assert await engine.run_jobs([data], sum, timeout=30) == [[6, 22]]
    assert {w["pid"] for w in engine.workers} == pids
