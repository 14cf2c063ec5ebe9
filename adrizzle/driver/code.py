"""User code for the workers: a module, a package or a zip file, made into one zip archive.

``Engine(py_files=[...])`` and ``engine.add_module(...)`` ship these archives to every worker's
slots (``adrizzle.driver.shared``), which import from them (``adrizzle.worker.slot_shared``):
functions pickled by reference to the user's own modules then import on the workers as on the
driver, wherever the program was started from.
"""

from __future__ import annotations

import importlib
import io
import os
import sys
import types
import zipfile
from pathlib import Path


def archive_of(what: object) -> tuple[str, bytes]:
    """``(name, zip bytes)`` for a module object (its top-level package when it is inside
    one), a module name, a ``.py`` file, a package directory, or a ``.zip`` file."""
    if isinstance(what, types.ModuleType):
        return _archive_of_module(what)
    if not isinstance(what, str | os.PathLike):
        raise TypeError(f"add_module() needs a module or a path, got {type(what).__name__}")
    path = Path(what)
    if not path.exists():
        if isinstance(what, str) and what.replace(".", "").replace("_", "").isalnum():
            return _archive_of_module(importlib.import_module(what))
        raise FileNotFoundError(f"no such module file, package or zip: {what}")
    path = path.resolve()
    if path.is_dir():
        return path.name, _zip_tree(path, path.name)
    if path.suffix in (".zip", ".egg", ".whl"):
        data = path.read_bytes()
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise ValueError(f"{path} is not a zip file")
        return path.name, data
    if path.suffix != ".py":
        raise ValueError(f"{path}: ship .py files, package directories or .zip files")
    return path.name, _zip_files([(path, path.name)])


def _archive_of_module(module: types.ModuleType) -> tuple[str, bytes]:
    top = sys.modules.get(module.__name__.partition(".")[0], module)
    if top.__name__ == "__main__":
        raise ValueError(
            "__main__ cannot be shipped by name (its functions travel by value already); "
            "ship the file of a module it imports"
        )
    paths = list(getattr(top, "__path__", []))
    if paths:  # a package (a namespace package may have several directories)
        return top.__name__, _zip_files(
            [pair for p in paths for pair in _tree(Path(p), top.__name__)]
        )
    file = getattr(top, "__file__", None)
    if not file or not file.endswith(".py"):
        raise ValueError(f"module {top.__name__} has no .py source file to ship ({file})")
    return top.__name__, _zip_files([(Path(file), Path(file).name)])


def _tree(root: Path, prefix: str) -> list[tuple[Path, str]]:
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix != ".pyc":
            out.append((path, f"{prefix}/{rel.as_posix()}"))
    return out


def _zip_tree(root: Path, prefix: str) -> bytes:
    return _zip_files(_tree(root, prefix))


def _zip_files(files: list[tuple[Path, str]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in files:
            info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))  # the same bytes every time
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()
