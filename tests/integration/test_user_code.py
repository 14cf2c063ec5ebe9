"""Shipping the user's own modules to the workers (issue 20 item 4), as a user runs a program.

The program lives in its own directory with a module, a package and a zip file of its own, and
is started from another directory, so no worker can import them unless they are shipped:
without ``py_files``/``add_module`` the slot reports the import error after the launch
(``SerializationError``); with them every worker's slots import the code, also a worker that
joins later.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PROGRAM = """
import asyncio, importlib.util, json, os, sys, zipimport

def import_from_zip(archive, name):  # the user's own zip, imported on the driver
    spec = zipimport.zipimporter(archive).find_spec(name)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

import adrizzle, helpers, shapes.area
zipped = import_from_zip(os.path.join(os.path.dirname(__file__), "extra.zip"), "zipped")

HERE = os.path.dirname(os.path.abspath(__file__))

async def main(mode):
    kw = {}
    if mode == "py_files":
        kw["py_files"] = [os.path.join(HERE, "helpers.py"), os.path.join(HERE, "shapes"),
                          os.path.join(HERE, "extra.zip")]
    async with adrizzle.Engine.local(workers=1, cores=1, **kw) as engine:
        if mode == "add_module":
            await engine.add_module(helpers)           # a module object
            await engine.add_module(shapes.area)       # inside a package: the package
            await engine.add_module(os.path.join(HERE, "extra.zip"))
        await engine.add_workers(1)                    # joins after the code was shipped
        ds = engine.parallelize(range(8), partitions=4)
        ds = ds.map(helpers.triple).map(shapes.area.square).map(zipped.negate)
        try:
            print(json.dumps({"values": await ds.collect(timeout=60)}))
        except adrizzle.errors.SerializationError as exc:
            print(json.dumps({"error": str(exc)}))

asyncio.run(main(sys.argv[1]))
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("user-program")
    (root / "job.py").write_text(PROGRAM)
    (root / "helpers.py").write_text("def triple(x):\n    return 3 * x\n")
    (root / "shapes").mkdir()
    (root / "shapes" / "__init__.py").write_text("")
    (root / "shapes" / "area.py").write_text(
        textwrap.dedent(
            """
            from shapes import _impl

            def square(x):
                return _impl.times(x, x)
            """
        )
    )
    (root / "shapes" / "_impl.py").write_text("def times(a, b):\n    return a * b\n")
    with zipfile.ZipFile(root / "extra.zip", "w") as z:
        z.writestr("zipped.py", "def negate(x):\n    return -x\n")
    return root


def run_program(program: Path, mode: str, cwd: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(program / "job.py"), mode],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("mode", ["py_files", "add_module"])
def test_shipped_code_imports_on_every_worker(program: Path, mode: str, tmp_path: Path) -> None:
    assert run_program(program, mode, tmp_path) == {"values": [-9 * x * x for x in range(8)]}


def test_without_shipping_the_slot_reports_the_missing_module(
    program: Path, tmp_path: Path
) -> None:
    result = run_program(program, "none", tmp_path)
    assert "ModuleNotFoundError" in str(result["error"])
    assert "add_module" in str(result["error"])
