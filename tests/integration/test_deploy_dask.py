"""``adrizzle.deploy.dask`` on a real ``distributed.LocalCluster``: the launcher check.

One adrizzle worker per Dask worker; a shuffle and a stateful stream exact while Dask closes one
of its workers (its adrizzle worker drains); a SIGKILLed Dask worker takes its adrizzle worker
along (parent-death signal) and the one its nanny restarts joins; closing the handle leaves no
process.
"""

from __future__ import annotations

import importlib
import os
import signal

import pytest

import adrizzle
from tests.conftest import adrizzle_processes, wait_gone
from tests.deploy_tools import gone, require_module
from tests.integration import deploy_check

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

distributed = require_module("distributed", "dask")
# Imported once the check above has passed (it needs the optional extra).
start_workers = importlib.import_module("adrizzle.deploy.dask").start_workers

BATCHES = 150  # 3 s of 20 ms batches


def local_cluster(n: int) -> distributed.LocalCluster:
    return distributed.LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        asynchronous=True,
        dashboard_address=":0",
        silence_logs=40,
    )


async def test_shuffle_and_stream_exact_while_dask_closes_a_worker() -> None:
    before = set(adrizzle_processes())
    async with (
        adrizzle.Engine(listen="127.0.0.1:0") as engine,
        local_cluster(3) as cluster,
        distributed.Client(cluster, asynchronous=True) as client,
    ):
        handle = await start_workers(client, engine, cores_per_worker=1)
        assert len(handle.names) == 3 == len(engine.workers)
        [victim, *_] = sorted(await client.nthreads())

        async def close_one() -> None:  # Dask's own means: retire (and close) one worker
            await client.retire_workers(workers=[victim], close_workers=True)

        result = await deploy_check.check(engine, BATCHES, kill_at=30, kill=close_one)
        deploy_check.assert_exact(result, BATCHES, killed=True)
        assert (result["workers_before"], result["workers_after"]) == (3, 2)
        await handle.close()
        assert handle.names == []
        assert engine.workers == []
    assert wait_gone(set(adrizzle_processes()) - before) == set()


async def test_a_sigkilled_dask_worker_takes_its_adrizzle_worker_along() -> None:
    before = set(adrizzle_processes())
    async with (
        adrizzle.Engine(listen="127.0.0.1:0") as engine,
        local_cluster(2) as cluster,
        distributed.Client(cluster, asynchronous=True) as client,
    ):
        handle = await start_workers(client, engine, cores_per_worker=1)
        dask_pids = await client.run(os.getpid)
        victim_pid = sorted(dask_pids.values())[0]
        [ours] = [w for w in engine.workers if w["id"].endswith(f"-{victim_pid}")]
        os.kill(victim_pid, signal.SIGKILL)
        # No orphan: the parent-death signal drains it (the driver is up: it says goodbye).
        assert await gone({ours["pid"]}) == set()
        # The nanny restarts the Dask worker; the plugin starts a new adrizzle worker there.
        await handle.wait_for(2, timeout=60)
        assert ours["id"] not in handle.names
        assert sorted(deploy_check.expected_counts().items()) == sorted(
            (await deploy_check.shuffle(engine)).items()
        )
        await handle.close()
        assert handle.names == []
    assert wait_gone(set(adrizzle_processes()) - before) == set()
