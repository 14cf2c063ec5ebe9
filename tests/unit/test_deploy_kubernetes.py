"""workers/kubernetes: rendered by ``kubectl kustomize``, valid for Kubernetes, real commands.

There is no API server here: the base is rendered with the real kustomize (``kubectl
kustomize``), every object is validated offline against the Kubernetes JSON schemas of a pinned
version with ``kubernetes_validate`` in strict mode (unknown fields are errors), and each
container's command line, expanded as the kubelet would (``$(VAR)`` from the container's env),
is parsed by the real parser of the program it runs: ``adrizzle-worker``'s, and the example
driver's. The wiring between objects (Service ports, Secret, probes) is checked by name.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate
import pytest
import yaml

from adrizzle.wire.address import parse_address
from adrizzle.worker.cli import parse_args
from tests.deploy_tools import require_commands
from tests.unit.test_deploy_kit import ROOT, flags_in, worker_flags

BASE = ROOT / "workers" / "kubernetes"
K8S_VERSION = "1.32.0"
# What the kubelet would put in the downward-API variables of one worker pod.
POD = {"POD_NAME": "adrizzle-worker-0", "POD_IP": "10.1.2.3"}


def render() -> list[dict[str, Any]]:
    require_commands("kubectl", package="kubectl (or kubernetes-client)")
    out = subprocess.run(
        ["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in render()}


def the(objects: dict[tuple[str, str], dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for (k, _), o in objects.items() if k == kind]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    [c] = workload["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """The kubelet's ``$(VAR)`` expansion (``$$`` escapes; unknown names stay as written)."""
    pattern = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return [pattern.sub(sub, a) for a in args]


def literal_env(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def driver_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_example_driver", BASE / "driver.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_base_has_the_objects_of_one_cluster(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    kinds = sorted(
        (kind, name.rsplit("-", 1)[0] if kind == "Secret" else name) for kind, name in objects
    )
    assert kinds == [
        ("Deployment", "adrizzle-driver"),
        ("Secret", "adrizzle-token"),  # name-hash suffixed by kustomize
        ("Service", "adrizzle-driver"),
        ("Service", "adrizzle-worker"),
        ("StatefulSet", "adrizzle-worker"),
    ]


def test_every_object_is_valid_for_kubernetes(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for obj in objects.values():
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    # The validation is real: an unknown field or a wrong type is refused.
    bad = copy.deepcopy(the(objects, "StatefulSet")[0])
    container(bad)["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad = copy.deepcopy(the(objects, "Deployment")[0])
    bad["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def token_from_secret(c: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    [secret] = the(objects, "Secret")
    [token] = [e for e in c["env"] if e["name"] == "ADRIZZLE_AUTH_TOKEN"]
    ref = token["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"]  # kustomize rewrote the reference
    assert ref["key"] in secret["data"]
    assert all("ADRIZZLE_AUTH_TOKEN" not in a for a in c.get("args", []))


def test_the_driver_pod_and_its_service(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    deployment = objects[("Deployment", "adrizzle-driver")]
    service = objects[("Service", "adrizzle-driver")]
    workers = objects[("StatefulSet", "adrizzle-worker")]
    c = container(deployment)
    assert deployment["spec"]["replicas"] == 1
    args = driver_module().build_parser().parse_args(expand(c["args"], literal_env(c)))
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert parse_address(args.listen) == ("0.0.0.0", ports["control"])
    assert parse_address(args.status) == ("0.0.0.0", ports["status"])
    assert args.workers == workers["spec"]["replicas"]
    token_from_secret(c, objects)
    probe = c["readinessProbe"]["httpGet"]
    assert (probe["path"], probe["port"]) == ("/health", "status")
    assert "livenessProbe" not in c  # a driver waiting for workers is not dead
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"control", "status"}
    # Workers join through the Service before the driver is ready (ready needs workers).
    assert service["spec"]["publishNotReadyAddresses"] is True
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= template_labels.items()


def test_the_worker_pods(objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    workers = objects[("StatefulSet", "adrizzle-worker")]
    driver_service = objects[("Service", "adrizzle-driver")]
    headless = objects[("Service", "adrizzle-worker")]
    c = container(workers)
    fields = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in c["env"]
        if "fieldRef" in e.get("valueFrom", {})
    }
    assert fields == {"POD_NAME": "metadata.name", "POD_IP": "status.podIP"}
    argv = expand(c["args"], {**literal_env(c), **POD})
    assert set(flags_in(argv)) <= worker_flags()
    args = parse_args(argv, literal_env(c))
    [control] = [p["port"] for p in driver_service["spec"]["ports"] if p["name"] == "control"]
    assert parse_address(args.driver) == (driver_service["metadata"]["name"], control)
    [data] = [p["containerPort"] for p in c["ports"] if p["name"] == "data"]
    assert args.data_advertise == f"{POD['POD_IP']}:{data}"  # the pod IP, not the Service
    assert parse_address(args.data_listen) == ("0.0.0.0", data)
    assert args.name == POD["POD_NAME"]
    assert args.connect_retry > 0  # the driver may come up after its workers
    assert str(args.cores) == str(c["resources"]["requests"]["cpu"])
    token_from_secret(c, objects)
    assert workers["spec"]["serviceName"] == headless["metadata"]["name"]
    assert headless["spec"]["clusterIP"] == "None"
    assert workers["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30  # drain


def test_every_container_is_unprivileged_with_requests_and_limits(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    for workload in (*the(objects, "Deployment"), *the(objects, "StatefulSet")):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        c = container(workload)
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (workload["kind"], kind)
        assert c["securityContext"]["allowPrivilegeEscalation"] is False


def containerfile(name: str) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "workers" / name).read_text())
    return [
        (line.strip().partition(" ")[0].upper(), line.strip().partition(" ")[2].strip())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_driver_image_runs_the_example_with_real_flags() -> None:
    instructions = containerfile("Containerfile.driver")
    [entrypoint] = [json.loads(rest) for ins, rest in instructions if ins == "ENTRYPOINT"]
    [cmd] = [json.loads(rest) for ins, rest in instructions if ins == "CMD"]
    assert entrypoint == ["python", "/app/driver.py"]
    driver_module().build_parser().parse_args(cmd)
    [user] = [rest for ins, rest in instructions if ins == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    copies = [rest.split() for ins, rest in instructions if ins == "COPY"]
    for *sources, _dest in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file"
    assert ["workers/kubernetes/driver.py", "/app/driver.py"] in copies


def test_the_example_driver_refuses_the_placeholder_token(
    objects: dict[tuple[str, str], dict[str, Any]],
) -> None:
    import base64

    [secret] = the(objects, "Secret")
    placeholder = base64.b64decode(secret["data"]["token"]).decode()
    done = subprocess.run(
        [sys.executable, str(BASE / "driver.py"), "--listen", "127.0.0.1:0"],
        env={"ADRIZZLE_AUTH_TOKEN": placeholder, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "set a real token" in done.stderr


def test_the_manifests_are_documented() -> None:
    readme = (ROOT / "workers" / "README.md").read_text()
    assert "kubectl kustomize workers/kubernetes" in readme
    assert "publishNotReadyAddresses" in readme
    assert Path(BASE / "kustomization.yaml").exists()
