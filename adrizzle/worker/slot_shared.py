"""A slot's side of what the engine shares with every worker: broadcast values and user code.

Broadcast values are filed in ``adrizzle.plan.shared`` (unpickled on first use). User code
arrives as zip archives (a module, a package, or the user's own zip, made on the driver by
``adrizzle.driver.code``): each is written to this slot's private temporary directory and
registered with ``ShippedCode``, an import finder placed just before the standard path finder,
so functions pickled by reference to the user's modules import here as they do on the driver
(modules of an archive shipped later win over earlier ones, and over installed packages, as the
user's own code does on the driver). ``sys.path`` is left alone.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.abc
import importlib.machinery
import os
import shutil
import sys
import tempfile
import zipimport
from typing import TYPE_CHECKING

from adrizzle.plan.shared import drop_broadcast, put_broadcast
from adrizzle.wire.messages import DropShared, PutShared

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

_code_dir: str | None = None


def code_dir() -> str:
    """This slot's private directory for shipped code (removed when the slot exits)."""
    global _code_dir
    if _code_dir is None:
        _code_dir = tempfile.mkdtemp(prefix=f"adrizzle-code-{os.getpid()}-")
        atexit.register(shutil.rmtree, _code_dir, True)
    return _code_dir


class ShippedCode(importlib.abc.MetaPathFinder):
    """Finds top-level modules and packages in the shipped archives, newest first.

    A package's submodules are then found through its ``__path__`` (inside the archive) by the
    standard path finder, whose ``zipimport`` hook reads archives.
    """

    def __init__(self) -> None:
        self.archives: list[zipimport.zipimporter] = []

    def add(self, path: str) -> None:
        if all(z.archive != path for z in self.archives):
            self.archives.insert(0, zipimport.zipimporter(path))

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if path is not None:  # a submodule: its package's __path__ says where
            return None
        for archive in self.archives:
            spec = archive.find_spec(fullname)
            if spec is not None:
                return spec
        return None


_finder: ShippedCode | None = None


def shipped_code() -> ShippedCode:
    """This slot's finder, installed on first use just before the standard path finder."""
    global _finder
    if _finder is None:
        _finder = ShippedCode()
        at = next(
            (i for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder),
            len(sys.meta_path),
        )
        sys.meta_path.insert(at, _finder)
    return _finder


def put_files(msg: PutShared, payload: bytes | memoryview) -> None:
    offset = 0
    for fid, n, name in zip(msg.ids, msg.lens, msg.names or [""] * len(msg.ids), strict=True):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "code"
        path = os.path.join(code_dir(), f"{fid}-{safe}.zip")
        with open(path, "wb") as f:
            f.write(payload[offset : offset + n])
        offset += n
        shipped_code().add(path)
    importlib.invalidate_caches()


def receive(msg: PutShared | DropShared, payload: bytes | memoryview) -> None:
    """File a ``put_shared`` or ``drop_shared`` frame from the worker."""
    if isinstance(msg, DropShared):
        drop_broadcast(msg.ids)
    elif msg.kind == "files":
        put_files(msg, payload)
    else:
        put_broadcast(msg.ids, msg.lens, payload)
