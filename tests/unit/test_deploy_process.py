"""``adrizzle.deploy.process`` and the SLURM launcher's command lines, without a cluster.

The parent-death trampoline is checked for real: a parent process is SIGKILLed and its child
must get SIGTERM. The command lines the launchers build go through the worker's own parser.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from adrizzle.deploy import process, slurm
from adrizzle.worker.cli import parse_args


def test_the_child_of_a_sigkilled_parent_gets_sigterm(tmp_path: Path) -> None:
    # The parent starts `sleep` through the trampoline, prints its pid, and is SIGKILLed.
    script = (
        "import sys\n"
        "from adrizzle.deploy.process import spawn_worker\n"
        "child = spawn_worker(['/bin/sleep', '60'], token='t')\n"
        "print(child.pid, flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = psutil.Process(int(parent.stdout.readline()))
        deadline = time.monotonic() + 10
        while child.name() != "sleep":  # the trampoline has exec'ed
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert child.environ()["ADRIZZLE_AUTH_TOKEN"] == "t"
        assert "t" not in child.cmdline()[1:]  # the token is not on the command line
        parent.kill()
        parent.wait()
        child.wait(timeout=10)  # SIGTERM from the kernel; reaped by init
        assert not child.is_running()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def test_stop_drains_then_kills() -> None:
    proc = process.spawn_worker(
        [sys.executable, "-c", "import signal, time\n"
         "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
         "time.sleep(60)"],
        token="t",
    )  # fmt: skip
    time.sleep(1)  # the trampoline has exec'ed and SIGTERM is ignored
    start = time.monotonic()
    assert process.stop(proc, grace=0.5) == -signal.SIGKILL
    assert time.monotonic() - start < 5


@pytest.mark.parametrize(
    ("address", "host", "want"),
    [
        ("127.0.0.1:7077", None, "127.0.0.1:7077"),
        ("0.0.0.0:7077", "node-1", "node-1:7077"),
        ("[::]:7000", "fd00::1", "[fd00::1]:7000"),
        ("10.0.0.5:7077", "driver", "driver:7077"),
    ],
)
def test_reachable_address(address: str, host: str | None, want: str) -> None:
    assert process.reachable_address(address, host) == want


def test_wildcard_becomes_this_hosts_name() -> None:
    import socket

    assert process.reachable_address("0.0.0.0:9") == f"{socket.gethostname()}:9"


def test_launched_worker_command_line_parses() -> None:
    argv = process.worker_args(
        "host:7077", name="w-1", cores=3, connect_retry=90, extra=["--log-json"]
    )
    args = parse_args(argv[1:] if argv[0].endswith("adrizzle-worker") else argv[3:], {})
    assert (args.driver, args.name, args.cores) == ("tcp://host:7077", "w-1", 3)
    assert (args.connect_retry, args.log_json) == (90.0, True)


SLURM_BATCH = {"SLURM_JOB_ID": "42", "SLURM_NTASKS": "4", "SLURM_CPUS_PER_TASK": "2"}


def test_slurm_worker_steps_are_real_commands() -> None:
    args = slurm.build_parser().parse_args(["prog.py", "--flag-of-the-program"])
    assert args.args == ["--flag-of-the-program"]
    argv = slurm.worker_step(args, dict(SLURM_BATCH), "tcp://node0:7077", 1)
    assert argv[:6] == [
        "srun", "--ntasks=1", "--nodes=1", "--exact", "--kill-on-bad-exit=0",
        "--job-name=slurm-42-w1",
    ]  # fmt: skip
    worker = argv[6:]
    start = 1 if worker[0].endswith("adrizzle-worker") else 3
    parsed = parse_args(worker[start:], {})
    assert (parsed.driver, parsed.cores, parsed.name) == ("tcp://node0:7077", 2, "slurm-42-w1")
    assert parsed.connect_retry == process.DEFAULT_CONNECT_RETRY


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "not inside a SLURM allocation"),
        ({"SLURM_JOB_ID": "1", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1",
          "SLURM_PROCID": "0"}, "it needs N+1 tasks"),
    ],
)  # fmt: skip
def test_slurm_launcher_refuses_outside_an_allocation(
    env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        slurm.main(["prog.py"], env)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_slurm_batch_needs_a_worker(caplog: pytest.LogCaptureFixture) -> None:
    assert slurm.main(["prog.py"], {"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}) == 2
    assert "no worker to start" in caplog.text


def test_slurm_worker_task_reads_the_rendezvous_and_execs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "3",
           "SLURM_PROCID": "2", "SLURM_SUBMIT_DIR": str(tmp_path)}  # fmt: skip
    rendezvous = tmp_path / ".adrizzle" / "7.0.json"
    rendezvous.parent.mkdir(mode=0o700)
    rendezvous.write_text(json.dumps({"driver": "tcp://node0:5000", "token": "tok"}))
    rendezvous.chmod(0o600)
    calls = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append((argv, env)))
    slurm.main(["--connect-retry", "1", "prog.py"], env)
    [(argv, child_env)] = calls
    start = 1 if argv[0].endswith("adrizzle-worker") else 3
    parsed = parse_args(argv[start:], {})
    assert (parsed.driver, parsed.name, parsed.cores) == ("tcp://node0:5000", "slurm-7.0-2", 1)
    assert child_env["ADRIZZLE_AUTH_TOKEN"] == "tok"
    assert "tok" not in argv


def test_slurm_worker_task_refuses_a_rendezvous_others_may_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "3",
           "SLURM_PROCID": "1", "SLURM_SUBMIT_DIR": str(tmp_path)}  # fmt: skip
    rendezvous = tmp_path / ".adrizzle" / "7.0.json"
    rendezvous.parent.mkdir(mode=0o700)
    rendezvous.write_text(json.dumps({"driver": "tcp://evil:5000", "token": "theirs"}))
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("exec'ed an untrusted driver"))
    rendezvous.chmod(0o644)
    assert slurm.main(["--connect-retry", "1", "prog.py"], env) == 2
    assert "chmod 600" in caplog.text
    rendezvous.chmod(0o600)
    rendezvous.parent.chmod(0o777)
    assert slurm.main(["--connect-retry", "1", "prog.py"], env) == 2
    assert "chmod go-w" in caplog.text
