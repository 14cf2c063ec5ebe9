"""What a driver program started by a launcher reads from its environment.

The SLURM launcher and the Kubernetes manifests start the user's driver program with
``ADRIZZLE_LISTEN`` (where to listen), ``ADRIZZLE_WORKERS`` (how many workers to expect),
``ADRIZZLE_AUTH_TOKEN`` (the cluster token, which ``Engine`` reads by itself) and optionally
``ADRIZZLE_STATUS`` (the status server's address). A program written with these helpers runs
unchanged on a laptop (loopback, one worker expected) and under a launcher.
"""

from __future__ import annotations

import os
from typing import Any

import adrizzle

LISTEN_ENV = "ADRIZZLE_LISTEN"
WORKERS_ENV = "ADRIZZLE_WORKERS"
STATUS_ENV = "ADRIZZLE_STATUS"


def driver_engine(**kwargs: Any) -> adrizzle.Engine:
    """``Engine(listen=$ADRIZZLE_LISTEN, status=$ADRIZZLE_STATUS, **kwargs)``; the token comes
    from ``$ADRIZZLE_AUTH_TOKEN`` (explicit keyword arguments win)."""
    kwargs.setdefault("listen", os.environ.get(LISTEN_ENV, "127.0.0.1:7077"))
    if STATUS_ENV in os.environ:
        kwargs.setdefault("status", os.environ[STATUS_ENV])
    return adrizzle.Engine(**kwargs)


def expected_workers(default: int = 1) -> int:
    """How many workers the launcher started (``$ADRIZZLE_WORKERS``), else ``default``."""
    return int(os.environ.get(WORKERS_ENV, default))
