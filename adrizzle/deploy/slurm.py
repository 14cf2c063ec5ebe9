"""SLURM launcher: ``python -m adrizzle.deploy.slurm PROGRAM.py [ARGS]`` in an allocation.

One driver program and N ``adrizzle-worker`` processes, started by SLURM itself, in either of
two layouts (chosen from the environment SLURM gives the launcher):

- **One step, N+1 tasks** (``srun -n N+1 python -m adrizzle.deploy.slurm PROGRAM.py``): task 0
  runs PROGRAM.py, tasks 1..N exec ``adrizzle-worker``. Task 0 publishes the driver's
  ``host:port`` in a rendezvous file (``--rendezvous DIR``, default
  ``$SLURM_SUBMIT_DIR/.adrizzle``: it must be on a file system every node sees); the workers
  wait for it, then dial with ``--connect-retry``.
- **One step per worker** (the launcher run directly by an ``sbatch`` script or in an
  ``salloc`` shell, not under ``srun``): the launcher runs PROGRAM.py itself and starts each
  worker as its own job step (``srun --ntasks=1 --exact``), N = ``SLURM_NTASKS`` - 1. One worker
  can then be stopped with ``scancel JOBID.STEPID`` (SIGTERM: it drains) or killed with
  ``scancel --signal=KILL JOBID.STEPID``; the driver recovers from the loss.

The driver program builds its engine with ``adrizzle.deploy.driver_engine()`` (it listens on
``$ADRIZZLE_LISTEN``, expects ``$ADRIZZLE_WORKERS`` workers). The token is
``$ADRIZZLE_AUTH_TOKEN`` when the job has it (SLURM passes the environment to every task),
else a fresh one made by the launcher: it reaches the workers through the environment (one
step per worker) or the rendezvous file (mode 600 in a mode 700 directory, removed when the
driver exits). Workers get ``--cores $SLURM_CPUS_PER_TASK`` (default 1); any other worker flag
can be set as ``ADRIZZLE_*`` in the job's environment. ``scancel`` of the job sends SIGTERM
everywhere: workers drain, the driver program gets it too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from adrizzle.deploy.driver import LISTEN_ENV, WORKERS_ENV
from adrizzle.deploy.process import DEFAULT_CONNECT_RETRY, worker_args
from adrizzle.wire.auth import TOKEN_ENV, new_token

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import FrameType

log = logging.getLogger("adrizzle.deploy.slurm")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adrizzle.deploy.slurm",
        description="Run PROGRAM.py as the adrizzle driver of this SLURM allocation and the "
        "other tasks as its workers. Under `srun -n N+1`: task 0 is the driver, tasks 1..N "
        "workers. Run directly in an sbatch script or salloc shell: the driver runs here and "
        "each of the SLURM_NTASKS-1 workers is its own job step.",
    )
    p.add_argument("program", metavar="PROGRAM.py", help="the driver program")
    p.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="workers to start (one step per worker only; default SLURM_NTASKS - 1)",
    )
    p.add_argument(
        "--cores",
        type=int,
        default=None,
        help="slot processes per worker (default SLURM_CPUS_PER_TASK, else 1)",
    )
    p.add_argument("--listen", default="0.0.0.0", help="driver listen host (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=0, help="driver control port (default: a free one)")
    p.add_argument(
        "--advertise",
        default=None,
        metavar="HOST",
        help="the driver host the workers dial (default: this node's host name)",
    )
    p.add_argument(
        "--rendezvous",
        default=None,
        metavar="DIR",
        help="where task 0 publishes the driver address under srun (default "
        "$SLURM_SUBMIT_DIR/.adrizzle; shared by every node)",
    )
    p.add_argument(
        "--connect-retry",
        type=float,
        default=DEFAULT_CONNECT_RETRY,
        metavar="SECONDS",
        help=f"how long workers wait for the driver (default {DEFAULT_CONNECT_RETRY:g})",
    )
    return p


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(format="adrizzle.deploy.slurm: %(message)s", level=logging.INFO)
    parser = build_parser()
    args = parser.parse_args(argv)
    env = dict(os.environ if environ is None else environ)
    if "SLURM_JOB_ID" not in env:
        parser.error("not inside a SLURM allocation: run it under srun, sbatch or salloc")
    if "SLURM_STEP_ID" in env:
        if int(env.get("SLURM_STEP_NUM_TASKS", "1")) < 2:
            parser.error("under srun it needs N+1 tasks: srun -n N+1 (task 0 is the driver)")
        if int(env["SLURM_PROCID"]) == 0:
            return driver_task(args, env)
        return worker_task(args, env)
    return batch(args, env)


# -- shared ------------------------------------------------------------------------------


def cores(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return int(args.cores or env.get("SLURM_CPUS_PER_TASK") or 1)


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def driver_endpoint(args: argparse.Namespace) -> tuple[str, str]:
    """(listen ``host:port`` for the engine, ``tcp://host:port`` for the workers)."""
    port = args.port or free_port(args.listen)
    host = args.advertise or socket.gethostname()
    return f"{args.listen}:{port}", f"tcp://{host}:{port}"


def run_program(
    args: argparse.Namespace, env: dict[str, str], listen: str, token: str, workers: int
) -> subprocess.Popen[bytes]:
    program_env = {**env, LISTEN_ENV: listen, TOKEN_ENV: token, WORKERS_ENV: str(workers)}
    return subprocess.Popen(
        [sys.executable, args.program, *args.args], env=program_env, stdin=subprocess.DEVNULL
    )


def forward_signals(children: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM and SIGINT (``scancel``, Ctrl-C on srun) go on to the driver program: it
    decides (by default it exits, and its workers leave)."""

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)


def exit_code(code: int) -> int:
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says


# -- one step, N+1 tasks -----------------------------------------------------------------


def rendezvous_file(args: argparse.Namespace, env: Mapping[str, str]) -> Path:
    base = Path(args.rendezvous or Path(env.get("SLURM_SUBMIT_DIR", ".")) / ".adrizzle")
    return base / f"{env['SLURM_JOB_ID']}.{env['SLURM_STEP_ID']}.json"


def exposed(path: Path) -> str | None:
    """Why ``path`` cannot be trusted with the driver's address and token (someone else
    owns it, or others may write it: they could point the workers at their own driver), or
    None."""
    st = path.stat()
    if st.st_uid != os.getuid():
        return f"{path} belongs to uid {st.st_uid}, not to this job's user"
    if st.st_mode & (0o077 if path.is_file() else 0o022):
        return f"{path} has mode {st.st_mode & 0o777:o}: run chmod go-w (a file: chmod 600)"
    return None


def driver_task(args: argparse.Namespace, env: dict[str, str]) -> int:
    workers = int(env["SLURM_STEP_NUM_TASKS"]) - 1
    listen, driver = driver_endpoint(args)
    token = env.get(TOKEN_ENV) or new_token()
    record = {"driver": driver, "workers": workers}
    if not env.get(TOKEN_ENV):  # the workers' environment lacks it: they read it here
        record["token"] = token
    path = rendezvous_file(args, env)
    created = not path.parent.exists()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if problem := exposed(path.parent):
        log.error("rendezvous directory refused: %s", problem)
        return 2
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    tmp.replace(path)
    log.info("driver %s for %d workers (rendezvous %s)", driver, workers, path)
    try:
        program = run_program(args, env, listen, token, workers)
        forward_signals([program])
        return exit_code(program.wait())
    finally:
        path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):  # not empty: another step's file is there
                path.parent.rmdir()


def worker_task(args: argparse.Namespace, env: dict[str, str]) -> int:
    path = rendezvous_file(args, env)
    deadline = time.monotonic() + args.connect_retry
    while True:
        try:
            record = json.loads(path.read_text())
            break
        except (FileNotFoundError, ValueError):  # not there yet, or being replaced
            if time.monotonic() > deadline:
                log.error("no driver address in %s after %g s", path, args.connect_retry)
                return 1
            time.sleep(0.1)
    if problem := exposed(path.parent) or exposed(path):
        log.error("rendezvous refused: %s", problem)
        return 2
    token = record.get("token") or env.get(TOKEN_ENV)
    if not token:
        log.error("no token: neither %s nor the rendezvous file has one", TOKEN_ENV)
        return 2
    name = f"slurm-{env['SLURM_JOB_ID']}.{env['SLURM_STEP_ID']}-{env['SLURM_PROCID']}"
    argv = worker_args(
        record["driver"], name=name, cores=cores(args, env), connect_retry=args.connect_retry
    )
    # exec: the task *is* the worker, so scancel's SIGTERM reaches it directly (it drains).
    os.execve(argv[0], argv, {**env, TOKEN_ENV: token})
    return 1  # pragma: no cover - execve does not return


# -- one step per worker -----------------------------------------------------------------


def worker_name(env: Mapping[str, str], k: int) -> str:
    return f"slurm-{env['SLURM_JOB_ID']}-w{k}"


def worker_step(args: argparse.Namespace, env: dict[str, str], driver: str, k: int) -> list[str]:
    """The ``srun`` command line of worker ``k``: one task, its own step, only the CPUs it
    asks for (``--exact``), the job left running when it fails (``--kill-on-bad-exit=0``)."""
    name = worker_name(env, k)
    argv = worker_args(driver, name=name, cores=cores(args, env), connect_retry=args.connect_retry)
    return [
        "srun",
        "--ntasks=1",
        "--nodes=1",
        "--exact",
        "--kill-on-bad-exit=0",
        f"--job-name={name}",
        *argv,
    ]


def batch(args: argparse.Namespace, env: dict[str, str]) -> int:
    workers = args.workers or int(env.get("SLURM_NTASKS", "1")) - 1
    if workers < 1:
        log.error("no worker to start: allocate N+1 tasks (sbatch -n N+1) or pass --workers N")
        return 2
    listen, driver = driver_endpoint(args)
    token = env.get(TOKEN_ENV) or new_token()
    step_env = {**env, TOKEN_ENV: token}  # srun passes its environment to the step
    log.info("driver %s; starting %d worker steps", driver, workers)
    program = run_program(args, env, listen, token, workers)
    steps = [
        subprocess.Popen(worker_step(args, env, driver, k), env=step_env, stdin=subprocess.DEVNULL)
        for k in range(workers)
    ]
    # Not to the sruns: SLURM signals the steps itself (scancel), and srun turns a signal of
    # its own into a forced termination of its step, which would cut a drain short.
    forward_signals([program])
    reported: set[int] = set()
    try:
        while program.poll() is None:
            for k, step in enumerate(steps):
                if k not in reported and step.poll() is not None:
                    reported.add(k)
                    name = worker_name(env, k)
                    log.info("worker %s ended (its srun exited %s)", name, step.returncode)
            time.sleep(0.1)
        return exit_code(program.returncode)
    finally:
        stop_steps(steps)


def stop_steps(steps: Sequence[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """After the driver exited: its workers leave on their own (the engine's shutdown frame,
    or the driver going silent); then SIGTERM to srun (passed on to the worker: it drains),
    then SIGKILL. Always reaped."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + grace
        for step in steps:
            if sig is not None and step.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    step.send_signal(sig)
        while any(step.poll() is None for step in steps) and time.monotonic() < deadline:
            time.sleep(0.05)
    for step in steps:
        step.wait()


if __name__ == "__main__":
    raise SystemExit(main())
