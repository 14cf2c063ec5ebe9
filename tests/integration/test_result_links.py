"""Result links: each slot sends its results and acknowledgement part straight to the driver.

Real workers, real slots, real TCP. The answers must be exact whichever way the frames go
(over links, through the worker with ``--no-result-links``, or a BSP group that routes through
the worker because its map outputs are held there); the driver must count one acknowledgement
per worker per group it acknowledges, and refuse a link that names no connected worker or does
not hold the token.
"""

from __future__ import annotations

import asyncio
import operator

import pytest

import adrizzle
from adrizzle.wire.messages import DriverLink
from adrizzle.worker.slot_link import LinkError, open_result_link

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

P, K = 4, 250
EXPECTED = [sum(range(p * K, (p + 1) * K)) for p in range(P)]


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: int(v - before.get(k, 0)) for k, v in after.items() if v != before.get(k, 0)}


@pytest.mark.parametrize(("cores", "links"), [(1, True), (2, True), (2, False)])
async def test_results_are_exact_and_each_worker_acknowledges_a_group_once(
    cores: int, links: bool
) -> None:
    args = () if links else ("--no-result-links",)
    async with adrizzle.Engine.local(workers=2, cores=cores, worker_args=args) as engine:
        data = engine.parallelize(range(P * K), partitions=P).cache()
        # Two partitions: each worker runs its share of a group on one slot.
        pair = engine.parallelize(range(P * K), partitions=2).cache()
        pair_sums = [sum(range(2 * K)), sum(range(2 * K, 4 * K))]
        assert await engine.run_jobs([data] * 5, sum, group_size=5) == [EXPECTED] * 5
        assert await engine.run_jobs([pair] * 5, sum, group_size=5) == [pair_sums] * 5
        # A slot opens its link with the first group it runs alone for its worker: with one
        # slot, the first group; with two, the two-partition run's (one slot per worker).
        assert [w["result_links"] for w in engine.workers] == [1 if links else 0] * 2
        for dataset, want in ((data, EXPECTED), (pair, pair_sums)):
            await engine.wait_settled()
            before = engine.statistics()
            link_frames = sum(w["result_link_frames"] for w in engine.workers)
            results = await engine.run_jobs([dataset] * 40, sum, group_size=10)
            await engine.wait_settled()
            after = engine.statistics()
            assert results == [want] * 40
            received = _delta(before["frames_received"], after["frames_received"])
            # One acknowledgement per worker per group, whichever way it came.
            assert received["group_done"] == 4 * 2
            assert after["groups_acked"] - before["groups_acked"] == 4
            over_links = sum(w["result_link_frames"] for w in engine.workers) - link_frames
            # Over a link when the worker's share of a group runs on one slot: every result
            # frame and the acknowledgement; otherwise nothing (the worker assembles the parts).
            alone = links and (cores == 1 or dataset is pair)
            if alone:
                assert over_links == received["group_done"] + received["batch_result"]
            else:
                assert over_links == 0


async def test_a_pre_scheduled_and_a_bsp_shuffle_are_exact_over_links() -> None:
    async with adrizzle.Engine.local(workers=2, cores=2) as engine:
        pairs = engine.parallelize([(i % 16, 1) for i in range(4000)], partitions=8)
        reduced = pairs.reduce_by_key(operator.add, partitions=4)
        want = [(k, 250) for k in range(16)]
        for pre in (True, False):
            results = await engine.run_jobs(
                [reduced] * 12, list, group_size=4, pre_schedule=pre, timeout=60
            )
            assert all(sorted(x for part in r for x in part) == want for r in results)


async def test_the_driver_refuses_a_link_for_no_connected_worker_or_without_the_token() -> None:
    async with adrizzle.Engine.local(workers=1, cores=1) as engine:
        host, port = engine.address.rsplit(":", 1)
        worker = engine.workers[0]

        def link(**change: object) -> DriverLink:
            fields: dict[str, object] = {
                "host": host,
                "port": int(port),
                "token": engine.token,
                "worker": worker["id"],
                "pid": worker["pid"],
                "slot": 0,
                "handshake_timeout_ms": 5000,
            }
            fields.update(change)
            return DriverLink(**fields)  # type: ignore[arg-type]

        with pytest.raises(LinkError, match="no worker 'nobody'"):
            await asyncio.to_thread(open_result_link, link(worker="nobody"))
        with pytest.raises(LinkError, match=f"with pid {worker['pid'] + 1}"):
            await asyncio.to_thread(open_result_link, link(pid=worker["pid"] + 1))
        with pytest.raises(LinkError, match=r"authentication|closed|refused"):
            await asyncio.to_thread(open_result_link, link(token="not-the-token-" + "x" * 30))
        # A link the driver accepts is counted on its worker; the cluster still serves.
        data = engine.parallelize(range(P * K), partitions=P)
        assert await engine.run_jobs([data] * 3, sum, group_size=3) == [EXPECTED] * 3
        assert engine.workers[0]["result_links"] == 1  # its own slot's (the run used it)
        sock = await asyncio.to_thread(open_result_link, link(slot=5))
        try:
            assert engine.workers[0]["result_links"] == 2
        finally:
            sock.close()
        assert await engine.run_jobs([data] * 3, sum, group_size=3) == [EXPECTED] * 3
