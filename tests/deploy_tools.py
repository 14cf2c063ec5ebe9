"""What the launcher tests need from the machine (a Python module, a command), and a wait.

Missing outside CI, the test is skipped and says what to install; under ``CI=true`` it fails
(``scripts/test`` installs everything these tests need, so a missing tool there is a bug).
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import time
from types import ModuleType

import pytest

from tests.conftest import adrizzle_processes


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    if in_ci():
        pytest.fail(f"{what} (scripts/test installs it)", pytrace=False)
    pytest.skip(f"{what}: run scripts/test, which installs it", allow_module_level=True)


def require_module(name: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"Python module {name} is not installed (pip install 'adrizzle[{extra}]')")
        raise  # pragma: no cover - missing() raised


def require_commands(*names: str, package: str) -> None:
    absent = [name for name in names if shutil.which(name) is None]
    if absent:
        missing(f"{', '.join(absent)} not found (Debian package {package})")


async def gone(pids: set[int], timeout: float = 30.0) -> set[int]:
    """``wait_gone`` that lets the event loop (the driver's) run while it waits."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while time.monotonic() < deadline:
        alive &= set(adrizzle_processes())
        if not alive:
            break
        await asyncio.sleep(0.05)
    return alive
