"""``adrizzle.deploy.ray`` on a local Ray (2 CPUs): the launcher check.

Workers in Ray actors placed by ``num_cpus``; a shuffle and a stateful stream exact while one
actor is killed with ``ray.kill`` (its worker goes with it); no worker is placed beyond the
CPUs Ray has; closing the handle leaves no process. One Ray for the module: it takes seconds
to start on 2 cores.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest

import adrizzle
from adrizzle.errors import NoWorkersError
from tests.conftest import adrizzle_processes
from tests.deploy_tools import gone, require_module
from tests.integration import deploy_check

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ray = require_module("ray", "ray")
# Imported once the check above has passed (it needs the optional extra).
start_workers = importlib.import_module("adrizzle.deploy.ray").start_workers

BATCHES = 150  # 3 s of 20 ms batches


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


async def test_shuffle_and_stream_exact_while_ray_kills_an_actor() -> None:
    before = set(adrizzle_processes())
    async with adrizzle.Engine(listen="127.0.0.1:0") as engine:
        handle = await start_workers(engine, 2, num_cpus=1)
        assert len(handle.names) == 2 == len(engine.workers)
        assert ray.available_resources().get("CPU", 0) == 0  # each actor holds its CPU
        victim = handle.actors[0]
        [pid] = [w["pid"] for w in engine.workers if w["id"] == f"{handle.prefix}-0"]

        async def kill_one() -> None:  # Ray's own means: kill the actor
            ray.kill(victim)
            assert await gone({pid}) == set()  # its worker went with it

        result = await deploy_check.check(engine, BATCHES, kill_at=30, kill=kill_one)
        deploy_check.assert_exact(result, BATCHES, killed=True)
        assert (result["workers_before"], result["workers_after"]) == (2, 1)
        await handle.close()
        assert handle.names == []
        assert engine.workers == []
    assert await gone(set(adrizzle_processes()) - before) == set()


async def test_no_worker_beyond_the_cpus_ray_has() -> None:
    before = set(adrizzle_processes())
    async with adrizzle.Engine(listen="127.0.0.1:0") as engine:
        with pytest.raises(NoWorkersError, match="Ray placed 2 of 3 actors of 1 CPUs"):
            await start_workers(engine, 3, num_cpus=1, timeout=4)
        # The two Ray could place were stopped with the third.
        assert await gone(set(adrizzle_processes()) - before) == set()
        assert engine.workers == []
