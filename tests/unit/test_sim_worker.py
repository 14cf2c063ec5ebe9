"""Simulated workers (adrizzle_bench.sim_plans, sim_worker) against a fake driver speaking the
real wire: the handshake, what a launch is answered with, packing, cancel, shutdown."""

from __future__ import annotations

import asyncio
import os
import pickle
from collections.abc import AsyncIterator

import cloudpickle
import msgspec
import pytest

from adrizzle.errors import RemoteProtocolError
from adrizzle.plan.program import (
    REDUCE,
    FunctionSource,
    JobProgram,
    ShuffleRead,
    ShuffleWrite,
    StageProgram,
)
from adrizzle.wire.messages import (
    BatchResult,
    CancelGroups,
    ClusterView,
    GroupDone,
    LaunchGroup,
    RunTasks,
    Shutdown,
)
from adrizzle.worker.slot_tasks import tasks_for
from adrizzle_bench.sim_plans import Plans, derive_share, expected_values, push_bytes, sim_value
from adrizzle_bench.sim_worker import SimCounters, SimSettings, SimWorker
from tests.fake_driver import TOKEN, FakeDriver

pytestmark = pytest.mark.timeout(30)


def single_stage(partitions: int = 4) -> JobProgram:
    return JobProgram((StageProgram(partitions, FunctionSource(1, range), (), None),), sum)


def two_stage() -> JobProgram:
    """4 map partitions -> 2 reducers."""
    maps = StageProgram(4, FunctionSource(1, range), (), ShuffleWrite(2, max))
    reduce = StageProgram(2, ShuffleRead(REDUCE, ((0, 4),), max), (), None)
    return JobProgram((maps, reduce), list)


def launch(
    program: JobProgram,
    *,
    group: int = 1,
    first: int = 0,
    jobs: int = 2,
    workers: tuple[str, ...] = ("w", "x"),
    hold: int = 0,
) -> tuple[LaunchGroup, bytes]:
    """Worker ``w``'s launch: one slot per worker, ``w`` first."""
    blob = cloudpickle.dumps([program] * jobs)
    msg = LaunchGroup(
        group=group,
        first_job=first,
        last_job=first + jobs,
        stages=list(range(len(program.stages))),
        placement_workers=list(workers),
        placement_slots=[0] * len(workers),
        slot_ids=[0],
        slot_data=[0],
        program_len=len(blob),
        release=[],
        linger_us=200_000,
        hold=hold,
    )
    return msg, blob


# -- planning (pure) ------------------------------------------------------------------------


def test_a_share_is_what_tasks_for_plans_for_the_slot() -> None:
    msg, blob = launch(two_stage(), first=5, jobs=2)
    share = derive_share(msg, pickle.loads(blob), "w", 0)
    real = tasks_for(
        RunTasks(1, 5, 7, [0, 1], ["w", "x"], [0, 0], "w", 0, len(blob), []),
        [two_stage()] * 2,
    )
    assert share.tasks == len(real.pending) == 6  # 2 maps + 1 reduce per job
    assert share.result_parts == real.result_parts == [0]
    assert [(b.offset, b.tasks, b.result) for b in share.batches] == [(0, 3, True), (1, 3, True)]
    # Each map task keeps reducer 0's block (its own slot) and pushes reducer 1's to x.
    assert [b.pushes for b in share.batches] == [2, 2]
    assert share.push_bytes == 4 * push_bytes([1])


def test_bsp_holds_every_block_so_every_reducer_slot_counts_as_a_push() -> None:
    msg, blob = launch(two_stage(), jobs=1, hold=1)
    share = derive_share(msg, pickle.loads(blob), "w", 0)
    assert share.pushes == 4  # 2 map tasks x 2 reducer slots, its own included


def test_shares_are_derived_once_per_placement_and_shape_not_per_group() -> None:
    plans = Plans()
    for group, first in ((1, 0), (2, 2), (3, 4)):
        msg, blob = launch(single_stage(), group=group, first=first)
        share = plans.share(msg, blob, plans.placement(msg), "w", 0)
        assert share.result_parts == [0, 2]
    assert (plans.derived, plans.unpickled) == (1, 1)
    moved, blob = launch(single_stage(), group=4, first=6, workers=("x", "w"))
    share = plans.share(moved, blob, plans.placement(moved), "w", 0)
    assert share.result_parts == [1, 3]  # a new placement is planned anew
    assert plans.derived == 2


def test_expected_values_name_job_and_partition() -> None:
    assert expected_values(2, 3) == [[sim_value(0, p) for p in range(3)], [65536, 65537, 65538]]
    assert len({sim_value(j, p) for j in range(50) for p in range(50)}) == 2500


# -- against a fake driver on the real wire ------------------------------------------------


@pytest.fixture
async def driver() -> AsyncIterator[tuple[FakeDriver, str, int]]:
    async with FakeDriver() as fake:
        yield fake, fake.host, fake.port


async def join(
    driver: tuple[FakeDriver, str, int], **options: object
) -> tuple[SimWorker, SimCounters]:
    fake, host, port = driver
    settings = SimSettings(host=host, port=port, token=TOKEN, data_address="127.0.0.1:9", **options)  # type: ignore[arg-type]
    counters = SimCounters()
    worker = SimWorker("w", settings, Plans(), counters)
    await worker.connect()
    for _ in range(100):
        if fake.channel is not None:
            break
        await asyncio.sleep(0.01)
    return worker, counters


async def test_the_handshake_is_the_real_one_with_a_worker_hello(
    driver: tuple[FakeDriver, str, int],
) -> None:
    worker, _ = await join(driver, cores=2)
    hello = driver[0].hello
    assert hello is not None
    assert (hello.role, hello.id, hello.cores, hello.pid) == ("worker", "w", 2, os.getpid())
    assert hello.data_address == "127.0.0.1:9"
    worker.close()


async def test_a_wrong_token_is_refused(driver: tuple[FakeDriver, str, int]) -> None:
    _fake, host, port = driver
    settings = SimSettings(host=host, port=port, token="not-the-token")
    with pytest.raises(RemoteProtocolError, match="does not hold the token"):
        await SimWorker("w", settings, Plans(), SimCounters()).connect()


async def test_a_launch_is_answered_per_batch_then_acknowledged_once(
    driver: tuple[FakeDriver, str, int],
) -> None:
    fake = driver[0]
    worker, counters = await join(driver, results="batch")
    assert fake.channel is not None
    fake.channel.send(ClusterView(["w", "x"], ["a:1", "b:2"]))  # counted, not decoded
    msg, blob = launch(single_stage(), group=7, first=10, jobs=3)
    shipped = msgspec.structs.replace(msg, slot_data=[len(b"source blocks")])
    fake.channel.send(shipped, blob + b"source blocks")  # length-checked, then dropped
    answers = [await fake.next() for _ in range(4)]
    for k, (result, payload) in enumerate(answers[:3]):
        assert isinstance(result, BatchResult)
        assert (result.group, result.jobs, result.parts) == (7, [10 + k], [0, 2])
        assert pickle.loads(payload) == [sim_value(10 + k, 0), sim_value(10 + k, 2)]
    done = answers[3][0]
    assert isinstance(done, GroupDone)
    assert (done.group, done.tasks, done.failed) == (7, 6, 0)
    assert counters.cluster_views == 1
    worker.close()


async def test_a_launch_whose_payload_does_not_add_up_breaks_the_connection(
    driver: tuple[FakeDriver, str, int],
) -> None:
    fake = driver[0]
    worker, _ = await join(driver)
    assert fake.channel is not None
    msg, blob = launch(single_stage())
    fake.channel.send(msg, blob + b"unannounced bytes")
    await asyncio.wait_for(fake.closed.wait(), 5)
    assert worker.gone


async def test_slot_packing_sends_a_group_that_finishes_at_once_in_one_frame(
    driver: tuple[FakeDriver, str, int],
) -> None:
    fake = driver[0]
    worker, _ = await join(driver)  # results="slot", the default
    assert fake.channel is not None
    msg, blob = launch(single_stage(), jobs=5)
    fake.channel.send(msg, blob)
    # ResultSender's rule: results wait while the slot has ready work; here it runs out at
    # the group's end, so the group's five batches leave together, before its acknowledgement.
    result, payload = await fake.next()
    assert isinstance(result, BatchResult)
    assert result.jobs == [0, 1, 2, 3, 4]
    assert pickle.loads(payload) == [sim_value(j, p) for j in range(5) for p in (0, 2)]  # flat
    assert isinstance((await fake.next())[0], GroupDone)
    worker.close()


async def test_slot_packing_sends_what_waited_the_linger_time(
    driver: tuple[FakeDriver, str, int],
) -> None:
    fake = driver[0]
    # A batch every 20 ms (2 tasks of 10 ms), a linger of 50 ms: packs of about 3 batches.
    worker, _ = await join(driver, results="slot", task_cost_us=10_000)
    assert fake.channel is not None
    msg, blob = launch(single_stage(), jobs=12)
    fake.channel.send(msgspec.structs.replace(msg, linger_us=50_000), blob)
    packs: list[list[int]] = []
    while True:
        result = (await fake.next())[0]
        if isinstance(result, GroupDone):
            break
        assert isinstance(result, BatchResult)
        packs.append(result.jobs)
    assert [j for pack in packs for j in pack] == list(range(12))
    assert 2 <= len(packs) <= 8  # neither one frame per batch nor one per group
    worker.close()


async def test_a_cancelled_group_sends_nothing_more_and_the_next_one_runs(
    driver: tuple[FakeDriver, str, int],
) -> None:
    fake = driver[0]
    # 2 tasks per batch at 100 ms each: a batch every 200 ms.
    worker, counters = await join(driver, results="batch", task_cost_us=100_000)
    assert fake.channel is not None
    first, blob = launch(single_stage(), group=1, jobs=10)
    fake.channel.send(first, blob)
    result = (await fake.next())[0]
    assert isinstance(result, BatchResult)
    assert result.jobs == [0]
    fake.channel.send(CancelGroups([1]))
    after_cancel = await fake.quiet(1.0)  # the group would have sent 5 more batches by now
    assert all(getattr(m, "group", None) != 1 for m in after_cancel), after_cancel
    assert counters.cancelled_groups == 1
    assert counters.dropped_batches == 9
    second, blob = launch(single_stage(), group=2, first=10, jobs=1)
    fake.channel.send(second, blob)
    assert [type(m) for m in await fake.quiet(0.5)] == [BatchResult, GroupDone]
    worker.close()


async def test_shutdown_closes_the_connection(driver: tuple[FakeDriver, str, int]) -> None:
    fake = driver[0]
    worker, _ = await join(driver)
    assert fake.channel is not None
    fake.channel.send(Shutdown())
    await asyncio.wait_for(fake.closed.wait(), 5)
    assert worker.gone
