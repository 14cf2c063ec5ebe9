"""``python -m adrizzle.deploy.slurm`` on a real single-node SLURM (Debian's slurmctld, slurmd
and munge, started by the fixture): the launcher check.

- ``srun -n 3``: task 0 the driver program, tasks 1-2 workers (rendezvous file); exact results.
- ``sbatch workers/slurm/adrizzle.sbatch`` (the example batch script, ``-n 3``): the driver in
  the batch step, each worker its own step; the program kills
  worker step 0 mid-stream with ``scancel --signal=KILL JOB.0`` (a loss: exact results after
  a recovery) or stops it with ``scancel --signal=TERM JOB.0`` (it drains, nothing to recover;
  a plain ``scancel JOB.0`` SIGKILLs a step at once).
- ``scancel`` of a running job: everything stops, no slot killed under its worker, nothing
  left.

The node has this machine's 2 CPUs: jobs of 3 tasks ask for ``--overcommit``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import adrizzle_processes, wait_gone
from tests.deploy_tools import missing, require_commands
from tests.integration import deploy_check
from tests.integration.slurm_cluster import COMMANDS, SlurmCluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PROGRAM = str(Path(deploy_check.__file__))
LAUNCHER = [sys.executable, "-m", "adrizzle.deploy.slurm"]
SBATCH = Path(__file__).resolve().parents[2] / "workers" / "slurm" / "adrizzle.sbatch"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    require_commands(*COMMANDS, package="slurmctld slurmd munge")
    if os.geteuid() != 0:
        missing("the SLURM test runs its daemons as root (SlurmUser=root)")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
    assert cluster.step_daemons() == []


def last_json(text: str) -> dict[str, object]:
    [line, *_] = [ln for ln in reversed(text.splitlines()) if ln.startswith("{")]
    result = json.loads(line)
    assert isinstance(result, dict)
    return result


def submit(slurm: SlurmCluster, out: Path, program: list[str]) -> str:
    """``sbatch workers/slurm/adrizzle.sbatch PROGRAM...``: the example script itself, its
    #SBATCH lines overridden for a 2-CPU node (3 tasks of 1 CPU, overcommitted)."""
    job = slurm.run(
        "sbatch", "--parsable", "-n", "3", "-c", "1", "--overcommit", "--time=5",
        f"--output={out}", f"--chdir={out.parent}", str(SBATCH), *program,
        env={"ADRIZZLE_PYTHON": sys.executable},
    )  # fmt: skip
    return job.strip().split(";")[0]


@pytest.mark.timeout(120)
def test_srun_n3_runs_driver_and_workers_exactly(slurm: SlurmCluster, tmp_path: Path) -> None:
    before = set(adrizzle_processes())
    rendezvous = tmp_path / "rendezvous"
    out = slurm.run(
        "srun", "-n", "3", "--overcommit", "--kill-on-bad-exit=0", f"--chdir={tmp_path}",
        *LAUNCHER, "--rendezvous", str(rendezvous), PROGRAM, "--batches", "100",
        timeout=100,
    )  # fmt: skip
    result = last_json(out)
    deploy_check.assert_exact(result, 100, killed=False)
    assert (result["workers_before"], result["workers_after"]) == (2, 2)
    assert not rendezvous.exists()  # the driver task removed its file and directory
    assert wait_gone(set(adrizzle_processes()) - before) == set()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signal", ["KILL", "TERM"])
def test_sbatch_one_step_per_worker_survives_scancel_of_a_step(
    slurm: SlurmCluster, tmp_path: Path, signal: str
) -> None:
    before = set(adrizzle_processes())
    out = tmp_path / "job.out"
    program = [PROGRAM, "--batches", "150", "--kill-step", "0", "--kill-at", "30"]
    job = submit(slurm, out, [*program, "--kill-signal", signal])
    info = slurm.wait_job(job)
    text = out.read_text()
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), text
    result = last_json(text)
    deploy_check.assert_exact(result, 150, killed=True)
    assert (result["workers_before"], result["workers_after"]) == (2, 1), text
    # SLURM numbers the steps in the order their sruns registered: JOB.0 is either worker.
    if signal == "KILL":  # a loss, recovered
        assert result["recoveries"] >= 1
        assert text.count("ended (its srun exited 137)") == 1, text  # 128 + SIGKILL
    else:  # SIGTERM: the worker drains, nothing to recover
        assert result["recoveries"] == 0
        assert text.count("received SIGTERM: draining") == 1, text
        assert text.count("exiting: the driver asked us to shut down") == 2, text
        assert text.count("ended (its srun exited 0)") == 1, text
    assert "died" not in text
    assert wait_gone(set(adrizzle_processes()) - before) == set()


@pytest.mark.timeout(120)
def test_scancel_of_the_job_stops_everything(slurm: SlurmCluster, tmp_path: Path) -> None:
    before = set(adrizzle_processes())
    out = tmp_path / "job.out"
    job = submit(slurm, out, [PROGRAM, "--batches", "100000"])  # ~30 min

    def output() -> str:
        return out.read_text() if out.exists() else ""

    deadline = time.monotonic() + 60
    while output().count("connected to driver") < 2:  # both workers joined: the stream runs
        assert time.monotonic() < deadline, output()
        assert job in slurm.jobs(), output()
        time.sleep(0.2)
    slurm.run("scancel", job)
    info = slurm.wait_job(job, timeout=60)
    assert info["JobState"] == "CANCELLED"
    text = out.read_text()
    # Every process of the job gets SIGTERM, the driver program too: each worker drains or
    # sees its driver go, whichever comes first. Its slots, signalled as well, stay until
    # the worker lets them go.
    assert text.count("exiting: ") == 2, text
    assert "died" not in text, text
    assert wait_gone(set(adrizzle_processes()) - before, timeout=20) == set()
