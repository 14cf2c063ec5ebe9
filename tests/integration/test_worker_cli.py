"""The real ``adrizzle-worker`` CLI against a real driver: joining, refusing, exiting."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

import adrizzle
from adrizzle.driver.local import worker_command
from tests.conftest import wait_exit, wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOKEN = "s3cret-token-for-tests"


def spawn(*args: str, token: str | None = TOKEN) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("ADRIZZLE_AUTH_TOKEN", None)
    if token is not None:
        env["ADRIZZLE_AUTH_TOKEN"] = token
    return subprocess.Popen(
        [*worker_command(), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_help_documents_every_flag() -> None:
    out = subprocess.run(
        [*worker_command(), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--cores", "--token-file", "--name", "--connect-timeout", "--log-level",
                 "--log-json", "--max-frame-bytes", "ADRIZZLE_AUTH_TOKEN", "--data-listen",
                 "--handshake-timeout", "--max-connections-per-address", "--tls-ca-file",
                 "--tls-cert", "--tls-key", "--start-timeout"):  # fmt: skip
        assert flag in out


async def test_external_worker_joins_engine_and_runs_jobs() -> None:
    async with adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN) as engine:
        proc = spawn(f"tcp://{engine.address}", "--cores", "2", "--name", "ext-1")
        try:
            await engine.wait_for_workers(1, timeout=30)
            [info] = engine.workers
            assert (info["id"], info["cores"], info["pid"]) == ("ext-1", 2, proc.pid)
            data = engine.parallelize(range(100), partitions=4)
            assert (
                await engine.run_jobs([data] * 3, sum, group_size=3) == [[300, 925, 1550, 2175]] * 3
            )
        finally:
            slots = {c.pid for c in psutil.Process(proc.pid).children()}
        # Closing the engine sends shutdown: the worker exits 0 and takes its slots along.
    code, err = await wait_exit(proc)
    assert code == 0, err
    assert "connected to driver" in err
    assert "exiting" in err
    assert wait_gone(slots) == set()


async def test_wrong_token_exits_nonzero_with_one_clear_line() -> None:
    async with adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN) as engine:
        proc = spawn(f"tcp://{engine.address}", "--cores", "1", token="wrong-token")
        code, err = await wait_exit(proc)
        assert engine.workers == []
        assert engine.statistics()["refused_connections"]
    assert code == 1
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1, err
    assert "authentication" in errors[0]
    assert "does not hold the token" in errors[0]


async def test_unreachable_driver_exits_nonzero_with_one_clear_line() -> None:
    port = free_port()
    proc = spawn(f"tcp://127.0.0.1:{port}", "--cores", "1", "--connect-timeout", "2")
    code, err = await wait_exit(proc)
    assert code == 1
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1, err
    assert f"cannot connect to driver tcp://127.0.0.1:{port}" in errors[0]


async def test_slots_that_do_not_start_in_time_end_the_worker_with_one_clear_line() -> None:
    # No slot process is ready within a millisecond: the worker must say so in one line and
    # exit 1, never with a traceback, and leave no slot behind (the leak check runs after).
    proc = spawn("tcp://127.0.0.1:1", "--cores", "2", "--start-timeout", "0.001")
    code, err = await wait_exit(proc)
    assert code == 1
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1, err
    assert "slot processes [0, 1] did not start within 0.001 s" in errors[0]


async def test_sigterm_while_slots_start_exits_at_once() -> None:
    proc = spawn("tcp://127.0.0.1:1", "--cores", "2", "--start-timeout", "60")
    worker = psutil.Process(proc.pid)
    for _ in range(400):  # until the worker has spawned its slots (they are not ready yet)
        if len(worker.children()) == 2:
            break
        await asyncio.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    code, err = await wait_exit(proc, timeout=10)
    assert code == 0
    assert "Traceback" not in err


async def test_missing_or_exposed_token_is_refused(tmp_path: Path) -> None:
    code, err = await wait_exit(spawn("tcp://127.0.0.1:1", token=None))
    assert code == 2
    assert "no token" in err
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    code, err = await wait_exit(spawn("tcp://127.0.0.1:1", "--token-file", str(token_file)))
    assert code == 2
    assert "chmod 600" in err


async def test_no_token_is_refused_whatever_the_data_port_binds_to() -> None:
    # A public data port without a token would take shuffle blocks (pickles) from anyone.
    proc = spawn("tcp://127.0.0.1:1", "--data-listen", "0.0.0.0:0", token=None)
    code, err = await wait_exit(proc)
    assert code == 2
    assert "no token" in err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--max-connections-per-address", "0", "--max-connections-per-address must be at least 1"),
        ("--handshake-timeout", "0", "--handshake-timeout must be positive"),
        ("--start-timeout", "-1", "--start-timeout must be positive"),
        ("--data-listen", "host:port", "port must be a number"),
    ],
)
async def test_bad_limits_are_refused_at_start(flag: str, value: str, message: str) -> None:
    code, err = await wait_exit(spawn("tcp://127.0.0.1:1", flag, value))
    assert code == 2
    assert message in err


def test_engine_refuses_an_exposed_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ADRIZZLE_AUTH_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o640)
    with pytest.raises(adrizzle.errors.AdrizzleError, match="chmod 600"):
        adrizzle.Engine(listen="10.1.2.3:7077", token_file=str(token_file))
    token_file.chmod(0o600)
    assert adrizzle.Engine(listen="10.1.2.3:7077", token_file=str(token_file)).token == TOKEN
    monkeypatch.setenv("ADRIZZLE_AUTH_TOKEN", "from-env")
    assert adrizzle.Engine(listen="10.1.2.3:7077").token == "from-env"
    monkeypatch.delenv("ADRIZZLE_AUTH_TOKEN")
    with pytest.raises(adrizzle.errors.AdrizzleError, match="without a token"):
        adrizzle.Engine(listen="10.1.2.3:7077")


async def test_token_file_and_json_logs(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    async with adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN) as engine:
        proc = spawn(
            f"tcp://{engine.address}", "--token-file", str(token_file), "--cores", "1",
            "--log-json", token=None,
        )  # fmt: skip
        await engine.wait_for_workers(1, timeout=30)
    code, err = await wait_exit(proc)
    assert code == 0
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any("connected to driver" in rec["msg"] for rec in lines)
    assert all({"ts", "level", "msg"} <= set(rec) for rec in lines)


async def test_sigterm_stops_worker_and_its_slots() -> None:
    async with adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN) as engine:
        proc = spawn(f"tcp://{engine.address}", "--cores", "2")
        await engine.wait_for_workers(1, timeout=30)
        slots = {c.pid for c in psutil.Process(proc.pid).children()}
        assert len(slots) == 2
        proc.send_signal(signal.SIGTERM)
        code, err = await wait_exit(proc)
        assert code == 0, err
        assert "SIGTERM" in err
        assert wait_gone(slots) == set()
        for _ in range(100):  # the driver notices the closed connection at once
            if not engine.workers:
                break
            await asyncio.sleep(0.02)
        assert engine.workers == []


def test_worker_exits_when_the_driver_process_dies(tmp_path: Path) -> None:
    # A driver in another process, SIGKILLed: its workers must notice and exit by themselves.
    script = tmp_path / "driver.py"
    script.write_text(
        "import adrizzle, asyncio, sys\n"
        "async def main():\n"
        "    engine = adrizzle.Engine.local(workers=1, cores=1)\n"
        "    await engine.start()\n"
        "    print(engine.workers[0]['pid'], flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "adrizzle.run(main())\n"
    )
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        worker_pid = int(driver.stdout.readline())
        slots = {c.pid for c in psutil.Process(worker_pid).children()}
        driver.kill()
        driver.wait()
        assert wait_gone({worker_pid} | slots, timeout=15) == set()
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        if driver.stdout is not None:
            driver.stdout.close()


def test_one_log_line_on_connect_on_loss_and_on_exit(tmp_path: Path) -> None:
    # Two workers of a driver in another process: one logging JSON at info, one plain text at
    # --log-level warning. The driver is SIGKILLed: each worker reports the loss once.
    script = tmp_path / "driver.py"
    script.write_text(
        "import adrizzle, asyncio\n"
        "async def main():\n"
        f"    async with adrizzle.Engine(listen='127.0.0.1:0', token={TOKEN!r}) as engine:\n"
        "        print(engine.address, flush=True)\n"
        "        await engine.wait_for_workers(2, timeout=30)\n"
        "        print('ready', flush=True)\n"
        "        await asyncio.sleep(60)\n"
        "adrizzle.run(main())\n"
    )
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = []
    try:
        assert driver.stdout is not None
        address = driver.stdout.readline().strip()
        workers.append(spawn(f"tcp://{address}", "--cores", "1", "--name", "js", "--log-json"))
        workers.append(spawn(f"tcp://{address}", "--cores", "1", "--log-level", "warning"))
        assert driver.stdout.readline().strip() == "ready"
        driver.kill()
        driver.wait()
        results = [asyncio.run(wait_exit(w)) for w in workers]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        if driver.stdout is not None:
            driver.stdout.close()
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()

    (_code, err_json), (_code2, err_plain) = results
    records = [json.loads(line) for line in err_json.splitlines()]  # every line is JSON
    assert all(rec["worker"] == "js" for rec in records)
    connect = [r for r in records if "connected to driver" in r["msg"]]
    lost = [r for r in records if "lost the driver" in r["msg"]]
    exiting = [r for r in records if "exiting" in r["msg"]]
    assert (len(connect), len(lost), len(exiting)) == (1, 1, 1), records
    assert (connect[0]["level"], lost[0]["level"], exiting[0]["level"]) == (
        "info",
        "warning",
        "info",
    )
    # --log-level warning: the loss, and nothing at info level.
    lines = err_plain.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("adrizzle-worker: WARNING lost the driver")


async def test_wildcard_data_listen_advertises_a_reachable_address() -> None:
    # Bound to 0.0.0.0 (a container, a firewall rule on a fixed port), the worker must not
    # tell the others to dial 0.0.0.0, which would connect each of them to itself.
    async with adrizzle.Engine(listen="127.0.0.1:0", token=TOKEN) as engine:
        proc = spawn(f"tcp://{engine.address}", "--cores", "1", "--data-listen", "0.0.0.0:0")
        await engine.wait_for_workers(1, timeout=30)
        [info] = engine.workers
        host, _, port = info["data_address"].rpartition(":")
        assert host == "127.0.0.1"  # the address that reaches this (loopback) driver
        assert int(port) > 0
    code, err = await wait_exit(proc)
    assert code == 0, err


async def test_slots_do_not_inherit_the_token() -> None:
    async with adrizzle.Engine.local(workers=1, cores=1) as engine:
        data = engine.parallelize([0], partitions=1)
        [[seen]] = await engine.run_jobs(
            [data], lambda _it: os.environ.get("ADRIZZLE_AUTH_TOKEN"), timeout=30
        )
        assert seen is None
