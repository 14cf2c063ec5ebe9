"""A throwaway single-node SLURM for tests: munged, slurmctld and slurmd from Debian, no systemd.

Everything lives in one temporary directory (munge key and socket, ``slurm.conf``, state,
spool, logs, pid files); the node is this host with its real CPU count and memory, tracked with
``proctrack/linuxproc`` and ``task/none``; the daemons run in the foreground as children of the
test process, on free ports. ``stop()`` cancels every job, waits for them, then stops and reaps
the daemons and any ``slurmstepd`` of this cluster (found by its socket in our spool dir).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import psutil

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = (*DAEMONS, "srun", "sbatch", "squeue", "scancel", "sinfo", "scontrol")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlurmCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = socket.gethostname().split(".")[0]  # hostname -s
        self.conf = root / "slurm.conf"
        self.spool = root / "spool"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.daemons: list[subprocess.Popen[bytes]] = []

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30, env: dict[str, str] | None = None
    ) -> str:
        """A SLURM client command against this cluster (more ``env`` if given); its stdout."""
        done = subprocess.run(
            argv,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr}")
        return done.stdout

    def start(self) -> None:
        root = self.root
        munge = root / "munge"
        for d in (munge, root / "state", self.spool, root / "log"):
            d.mkdir(mode=0o700, parents=True)
        key = munge / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        socket_path = munge / "munge.socket"
        self._spawn(
            "munged",
            "--foreground",
            "--force",  # root, and a socket directory only root can enter: fine here
            f"--socket={socket_path}",
            f"--key-file={key}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={root / 'log' / 'munged.log'}",
            f"--seed-file={munge / 'munged.seed'}",
        )
        self._wait(socket_path.exists, 10, "munged did not create its socket")
        memory_mb = int(psutil.virtual_memory().total / 2**20 * 0.9)
        self.conf.write_text(
            f"""\
ClusterName=adrizzletest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={socket_path}
StateSaveLocation={root / "state"}
SlurmdSpoolDir={self.spool}
SlurmctldPidFile={root / "slurmctld.pid"}
SlurmdPidFile={root / "slurmd.pid"}
SlurmctldLogFile={root / "log" / "slurmctld.log"}
SlurmdLogFile={root / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=5
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )
        self._spawn("slurmctld", "-D", "-f", str(self.conf))
        self._wait(self._controller_answers, 30, "slurmctld did not answer")
        self._spawn("slurmd", "-D", "-f", str(self.conf))
        self._wait(
            lambda: self.run("sinfo", "-h", "-o", "%T", check=False).strip() == "idle",
            30,
            "the node did not become idle",
        )

    def _controller_answers(self) -> bool:
        try:
            self.run("sinfo", "-h", timeout=5)
            return True
        except (RuntimeError, subprocess.TimeoutExpired):
            return False

    def _spawn(self, *argv: str) -> None:
        log = (self.root / "log" / f"{argv[0]}.out").open("wb")
        with log:
            self.daemons.append(
                subprocess.Popen(
                    argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
                )
            )

    def _wait(self, ready: object, timeout: float, what: str) -> None:
        assert callable(ready)
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p.args for p in self.daemons if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(
                    f"== {f.name}\n{f.read_text(errors='replace')[-2000:]}"
                    for f in sorted((self.root / "log").glob("*"))
                )
                raise RuntimeError(f"{what} (exited: {dead})\n{logs}")
            time.sleep(0.1)

    def jobs(self) -> list[str]:
        return self.run("squeue", "-h", "-o", "%i", check=False).split()

    def wait_job(self, job: str, timeout: float = 90) -> dict[str, str]:
        """Wait until ``job`` left the queue; its ``scontrol show job`` fields."""
        deadline = time.monotonic() + timeout
        while job in self.jobs():
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job} still in the queue after {timeout:g} s")
            time.sleep(0.2)
        out = self.run("scontrol", "show", "job", job, "-o")
        return dict(field.split("=", 1) for field in out.split() if "=" in field)

    def stop(self) -> None:
        """Cancel every job, stop the daemons and every step daemon of ours; always reaps."""
        try:
            if self.daemons and self.daemons[-1].poll() is None:
                with contextlib.suppress(Exception):
                    self.run("scancel", "--user", str(os.getuid()), check=False)
                    deadline = time.monotonic() + 20
                    while self.jobs() and time.monotonic() < deadline:
                        time.sleep(0.2)
        finally:
            for proc in reversed(self.daemons):  # slurmd, slurmctld, munged
                if proc.poll() is None:
                    proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for step in self.step_daemons():
                with contextlib.suppress(psutil.NoSuchProcess):
                    step.kill()

    def step_daemons(self) -> list[psutil.Process]:
        """``slurmstepd`` processes of this cluster: they listen on a socket in its spool."""
        found = []
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] != "slurmstepd":
                continue
            with contextlib.suppress(psutil.Error):
                paths = [c.laddr for c in proc.net_connections(kind="unix")]
                if any(str(p).startswith(str(self.spool)) for p in paths):
                    found.append(proc)
        return found
