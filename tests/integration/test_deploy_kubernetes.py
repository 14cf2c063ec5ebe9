"""The Kubernetes base's containers, run for real on loopback (no cluster here).

The rendered worker StatefulSet's and driver Deployment's command lines are run as the kubelet
would run them (``$(VAR)`` expanded from the pod's env, the token from the Secret's place in the
env), with the Service and pod addresses mapped to free loopback ports: the workers start
first and wait for the driver (``--connect-retry``), the driver's readiness probe (``/health``)
turns 200 once they joined, the example stream runs, and SIGTERM on the driver (a rollout) sends
the workers home with exit code 0.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from adrizzle.deploy.process import worker_command
from adrizzle.wire.auth import new_token
from tests.conftest import adrizzle_processes, wait_gone
from tests.unit.test_deploy_kubernetes import BASE, container, expand, literal_env, render

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def health(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_rendered_commands_run_a_cluster_on_loopback() -> None:
    before = set(adrizzle_processes())
    objects = {o["kind"]: o for o in render() if o["kind"] in ("Deployment", "StatefulSet")}
    driver_c, worker_c = container(objects["Deployment"]), container(objects["StatefulSet"])
    control, status = free_port(), free_port()
    token = new_token()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("ADRIZZLE_")}

    def driver_args() -> list[str]:
        mapped = {"0.0.0.0:7077": f"127.0.0.1:{control}", "0.0.0.0:8780": f"127.0.0.1:{status}"}
        args = [mapped.get(a, a) for a in expand(driver_c["args"], literal_env(driver_c))]
        return [*args, "--batch-interval", "0.2"]  # faster than the example's 1 s

    def worker_argv(i: int) -> list[str]:
        data = free_port()
        env = {**literal_env(worker_c), "POD_NAME": f"adrizzle-worker-{i}", "POD_IP": "127.0.0.1"}
        mapped = {
            "tcp://adrizzle-driver:7077": f"tcp://127.0.0.1:{control}",
            "0.0.0.0:7078": f"127.0.0.1:{data}",
            "127.0.0.1:7078": f"127.0.0.1:{data}",
        }
        return [mapped.get(a, a) for a in expand(worker_c["args"], env)]

    procs: list[subprocess.Popen[bytes]] = []
    try:
        # Pods start in any order: the workers first, dialing a driver that is not up yet.
        replicas = objects["StatefulSet"]["spec"]["replicas"]
        for i in range(replicas):
            procs.append(
                subprocess.Popen(
                    [*worker_command(), *worker_argv(i)],
                    env={**base_env, "ADRIZZLE_AUTH_TOKEN": token},
                    stdin=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
        time.sleep(1.0)
        driver = subprocess.Popen(
            [sys.executable, str(BASE / "driver.py"), *driver_args()],
            env={**base_env, "ADRIZZLE_AUTH_TOKEN": token},
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(driver)
        deadline = time.monotonic() + 45
        url = f"http://127.0.0.1:{status}/health"
        while health(url) != 200:  # the readiness probe, as the kubelet sends it
            assert time.monotonic() < deadline, "the driver never became ready"
            assert all(p.poll() is None for p in procs), [p.returncode for p in procs]
            time.sleep(0.2)
        time.sleep(1.5)  # a few batches of the example stream
        driver.send_signal(signal.SIGTERM)  # a rollout, or kubectl delete
        _out, driver_err = driver.communicate(timeout=30)
        assert driver.returncode == 0, driver_err.decode()
        assert b"batch " in driver_err  # the stream ran and logged its totals
        for proc in procs[:replicas]:
            _out, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err.decode()
            assert b"the driver asked us to shut down" in err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    assert wait_gone(set(adrizzle_processes()) - before) == set()
