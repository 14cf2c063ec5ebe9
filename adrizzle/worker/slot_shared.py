"""A slot's side of what the engine shares with every worker: broadcast values and user code.

Broadcast values are filed in ``adrizzle.plan.shared`` (unpickled on first use). User code
arrives as zip archives (a module, a package, or the user's own zip, made on the driver by
``adrizzle.driver.code``): each is written to this slot's private temporary directory and put
at the front of the slot process's ``sys.path``, so functions pickled by reference to the
user's modules import here as they do on the driver. (That is the purpose of this ``sys.path``
edit: it is the user's code being made importable in the process that runs it, not this
project's own modules importing each other.)
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile

from adrizzle.plan.shared import drop_broadcast, put_broadcast
from adrizzle.wire.messages import DropShared, PutShared

_code_dir: str | None = None


def code_dir() -> str:
    """This slot's private directory for shipped code (removed when the slot exits)."""
    global _code_dir
    if _code_dir is None:
        _code_dir = tempfile.mkdtemp(prefix=f"adrizzle-code-{os.getpid()}-")
        atexit.register(shutil.rmtree, _code_dir, True)
    return _code_dir


def put_files(msg: PutShared, payload: bytes | memoryview) -> None:
    offset = 0
    for fid, n, name in zip(msg.ids, msg.lens, msg.names or [""] * len(msg.ids), strict=True):
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "code"
        path = os.path.join(code_dir(), f"{fid}-{safe}.zip")
        with open(path, "wb") as f:
            f.write(payload[offset : offset + n])
        offset += n
        if path not in sys.path:
            sys.path.insert(0, path)
    importlib.invalidate_caches()


def receive(msg: PutShared | DropShared, payload: bytes | memoryview) -> None:
    """File a ``put_shared`` or ``drop_shared`` frame from the worker."""
    if isinstance(msg, DropShared):
        drop_broadcast(msg.ids)
    elif msg.kind == "files":
        put_files(msg, payload)
    else:
        put_broadcast(msg.ids, msg.lens, payload)
