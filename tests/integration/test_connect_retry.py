"""``adrizzle-worker --connect-retry`` and ``ADRIZZLE_*`` variables against a real driver.

A worker started before its driver keeps dialing (jittered back-off) and joins once the driver
listens; a wrong token is never retried; a driver that never comes is given up on in time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

import pytest

import adrizzle
from adrizzle.deploy.process import worker_command
from tests.conftest import wait_exit
from tests.integration.test_worker_cli import TOKEN, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def spawn(
    *args: str, token: str = TOKEN, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """A worker CLI process with only these ``ADRIZZLE_*`` variables set."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ADRIZZLE_")}
    return subprocess.Popen(
        [*worker_command(), *args],
        env={**base, "ADRIZZLE_AUTH_TOKEN": token, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_worker_started_before_the_driver_joins_it() -> None:
    port = free_port()
    proc = spawn(f"tcp://127.0.0.1:{port}", "--cores", "1", "--connect-retry", "30")
    try:
        await asyncio.sleep(1.5)  # several failed dials
        assert proc.poll() is None
        async with adrizzle.Engine(listen=f"127.0.0.1:{port}", token=TOKEN) as engine:
            await engine.wait_for_workers(1, timeout=15)
            data = engine.parallelize(range(10), partitions=2)
            assert await engine.run_jobs([data], sum) == [[10, 35]]
    finally:
        code, err = await wait_exit(proc)
    assert code == 0, err
    retries = [line for line in err.splitlines() if "retry" in line]
    assert retries, err
    assert all(line.startswith("adrizzle-worker: INFO cannot connect") for line in retries)
    assert "ERROR" not in err


async def test_wrong_token_is_not_retried() -> None:
    async with adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN) as engine:
        start = time.monotonic()
        proc = spawn(f"tcp://{engine.address}", "--connect-retry", "30", token="wrong-token")
        code, err = await wait_exit(proc)
        assert time.monotonic() - start < 10
    assert code == 1
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1, err
    assert "authentication" in errors[0]
    assert "retry" not in err


async def test_a_driver_that_never_comes_is_given_up_on_in_time() -> None:
    port = free_port()
    start = time.monotonic()
    proc = spawn(f"tcp://127.0.0.1:{port}", "--connect-retry", "1.5", "--cores", "1")
    code, err = await wait_exit(proc)
    elapsed = time.monotonic() - start
    assert code == 1
    assert 1.5 <= elapsed < 15, elapsed  # slot start-up, then 1.5 s of retries
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1, err
    assert f"cannot connect to driver tcp://127.0.0.1:{port}" in errors[0]


async def test_a_worker_configured_by_environment_only() -> None:
    async with adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN) as engine:
        proc = spawn(
            env={
                "ADRIZZLE_DRIVER": f"tcp://{engine.address}",
                "ADRIZZLE_CORES": "2",
                "ADRIZZLE_NAME": "from-env",
                "ADRIZZLE_LOG_JSON": "1",
            }
        )
        await engine.wait_for_workers(1, timeout=30)
        [info] = engine.workers
        assert (info["id"], info["cores"]) == ("from-env", 2)
    code, err = await wait_exit(proc)
    assert code == 0, err
    assert err.lstrip().startswith("{")  # --log-json came from ADRIZZLE_LOG_JSON
