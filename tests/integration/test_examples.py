"""examples/single_stage.py and examples/running_sum.py as a user runs them: real subprocesses
with real local clusters, results checked exactly against plain Python, no process left over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TAG = "ADRIZZLE_TEST_EXAMPLE_TAG"

# Each run starts a cluster (about a second on a busy 2-core machine): a few examples each.
few = settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Live processes that inherited ``TAG=tag``: the example, its workers and their slots."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(TAG) == tag:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def reap(tag: str, what: str) -> None:
    """Fail if a process started under ``tag`` is still alive; kill it so nothing leaks."""
    commands = []
    for proc in tagged_processes(tag):
        try:
            commands.append(" ".join(proc.cmdline()))
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    assert not commands, f"{what} left processes running after it exited: {commands}"


def example_env(tag: str) -> dict[str, str]:
    return {**os.environ, TAG: tag}


def run_example(name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` with ``args``; fail if any process it started outlives it."""
    tag = uuid.uuid4().hex
    try:
        out = subprocess.run(
            [sys.executable, str(EXAMPLES / name), *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=example_env(tag),
        )
    finally:
        # The engine stops and reaps its workers (which reap their slots) before the example
        # exits, so none may be alive at this point.
        reap(tag, name)
    if check:
        assert out.returncode == 0, f"{name} {' '.join(args)} failed:\n{out.stderr}"
    return out


def summary_of(out: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON object on the last line of stdout."""
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert isinstance(summary, dict)
    return summary


def cli_args(shape: tuple[int, int, int, int, int, int]) -> list[str]:
    batches, group_size, workers, cores, partitions, records = shape
    return [
        str(batches),
        str(group_size),
        "--workers",
        str(workers),
        "--cores",
        str(cores),
        "--partitions",
        str(partitions),
        "--records",
        str(records),
        "--json",
    ]


def check_single_stage(
    summary: dict[str, Any], batches: int, group_size: int, partitions: int, records: int
) -> None:
    k = records
    partition_sums = [sum(range(p * k, (p + 1) * k)) for p in range(partitions)]
    assert summary["batches"] == batches
    assert summary["group_size"] == group_size
    assert summary["distinct_batch_results"] == 1
    assert summary["partition_sums"] == partition_sums
    assert summary["result"] == batches * sum(range(partitions * k))
    assert summary["ms_per_batch"] > 0


def check_running_sum(
    summary: dict[str, Any], batches: int, group_size: int, partitions: int, records: int
) -> None:
    total = 0
    for b in range(batches):
        for p in range(partitions):
            start = (b * partitions + p) * records
            total += sum(range(start, start + records))
    assert summary["batches"] == batches
    assert summary["group_size"] == group_size
    assert summary["batches_completed"] == batches
    assert summary["final_sum"] == total
    assert summary["ms_per_batch"] > 0


# (batches, group_size, workers, cores, partitions, records). Group sizes may exceed the number
# of batches (one short group); zero records makes every partition an empty sum.
Shape = tuple[int, int, int, int, int, int]
shapes = st.integers(1, 12).flatmap(
    lambda batches: st.tuples(
        st.just(batches),
        st.integers(1, batches + 2),
        st.integers(1, 2),
        st.integers(1, 2),
        st.integers(1, 5),
        st.integers(0, 300),
    )
)


@few
@given(shape=shapes)
def test_single_stage_sums_exactly(shape: Shape) -> None:
    batches, group_size, workers, _cores, partitions, records = shape
    summary = summary_of(run_example("single_stage.py", *cli_args(shape)))
    check_single_stage(summary, batches, group_size, partitions, records)
    # Coordination is per group: one launch and one ack per group for each worker holding a
    # partition (partitions are spread across workers first, so min(workers, P) of them).
    groups = -(-batches // group_size)
    launches = round(summary["launch_frames_per_batch"] * batches)
    acks = round(summary["ack_frames_per_batch"] * batches)
    assert launches == acks == min(workers, partitions) * groups


@few
@given(shape=shapes)
def test_running_sum_totals_exactly(shape: Shape) -> None:
    batches, group_size, _workers, _cores, partitions, records = shape
    summary = summary_of(run_example("running_sum.py", *cli_args(shape)))
    check_running_sum(summary, batches, group_size, partitions, records)


def test_running_sum_defaults_and_progress() -> None:
    """Drizzle's invocation shape with the defaults (4 partitions x 1000 ints, 2 workers):
    one progress line per micro-batch, as each arrives, then the summary."""
    out = run_example("running_sum.py", "15", "4")
    lines = out.stdout.strip().splitlines()
    batch_lines = [line for line in lines if line.startswith("batch ")]
    assert [int(line.split()[1].rstrip(":")) for line in batch_lines] == list(range(15))
    expected = sum(range(15 * 4 * 1000))
    assert f"running total {expected:>18d}" in batch_lines[-1]
    assert f"final sum {expected}," in lines[-1]


def test_single_stage_defaults_json_with_two_cores() -> None:
    summary = summary_of(run_example("single_stage.py", "20", "10", "--cores", "2", "--json"))
    check_single_stage(summary, 20, 10, partitions=4, records=1000)
    assert summary["workers"] == 2
    assert summary["cores"] == 2
    # 2 groups of 10, each launched to and acknowledged by both workers: 0.2 frames per batch.
    assert summary["launch_frames_per_batch"] == summary["ack_frames_per_batch"] == 0.2


@pytest.mark.parametrize("name", ["single_stage.py", "running_sum.py"])
@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["0", "1"], "must be >= 1, got 0"),
        (["10", "ten"], "not an integer: 'ten'"),
        (["10", "2", "--records", "-1"], "must be >= 0, got -1"),
        (["10"], "the following arguments are required: group_size"),
    ],
)
def test_bad_arguments_are_refused_clearly(name: str, args: list[str], complaint: str) -> None:
    out = run_example(name, *args, check=False)
    assert out.returncode == 2
    assert complaint in out.stderr
    assert out.stdout == ""


def test_interrupted_running_sum_stops_its_workers() -> None:
    """Ctrl-C in the middle of a long run: the example exits 130 and its workers are gone."""
    tag = uuid.uuid4().hex
    # 20,000 ints per partition: the run takes ~10 s here, far longer than the test needs to
    # find its workers. SIGINT is reset to its default in the child: a suite started as a
    # background job (nohup, `cmd &` without job control) hands its children SIGINT ignored,
    # and Python then never raises KeyboardInterrupt (the run went on to exit 0).
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "running_sum.py"), "10000", "1", "--records", "20000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=example_env(tag),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first micro-batch has been delivered
        assert first.startswith("batch     0:"), first
        workers = [p for p in tagged_processes(tag) if "adrizzle" in " ".join(p.cmdline())]
        assert workers, "no worker processes were running mid-run"
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reap(tag, "the interrupted running_sum.py")
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted"
