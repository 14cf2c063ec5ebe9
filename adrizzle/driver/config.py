"""``EngineConfig``: every setting of a driver, in one frozen, documented object."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """The configuration of an ``Engine``, passed down whole to the cluster, the runs, the
    checkpoints and the status server (none of them copies a setting).

    ``Engine(config=EngineConfig(...))`` or ``Engine(**fields)``; keyword arguments given with
    a ``config`` replace its fields (``dataclasses.replace``).

    >>> config = EngineConfig(listen="0.0.0.0:7077", token_file="/etc/adrizzle/token")
    >>> engine = adrizzle.Engine(config=config, status="127.0.0.1:8780")  # doctest: +SKIP

    Args:
        listen: ``host:port`` of the control port workers dial (``tcp://`` optional; port 0:
            a free one, see ``Engine.address``). Loopback unless told otherwise; any other
            address needs a token.
        token: the cluster token (mutual HMAC on every connection; anyone holding it can run
            code on the workers). Default: ``token_file``, then ``$ADRIZZLE_AUTH_TOKEN``, then a
            fresh random token (loopback only).
        token_file: a file holding the token (must not be readable by others).
        window: groups in flight per run: group ``g + 1`` is launched before ``g`` is
            acknowledged, so workers never wait for the driver. 8: a deeper pipeline keeps
            the workers' slots busy, and on a VM a process whose CPU went idle costs ~20 µs of
            CPU to wake (single stage, 2 workers x 1 core, measured here: going from 4 to 8,
            G=1 0.20 -> 0.16 ms, G=10 0.043 -> 0.036 ms, G=100 0.020 -> 0.019 ms per
            micro-batch; 2 -> 4 had taken G=1 from 0.38 to 0.28 ms). A worker's loss re-runs
            the groups in flight on it, so more costs a little more re-run work.
        max_frame_bytes: the largest frame accepted from a worker (checked on its header).
        handshake_timeout: seconds a connection may take to authenticate (TLS included).
        worker_timeout: seconds ``start()`` waits for local workers, and a run for a first
            worker.
        result_linger: the longest a finished micro-batch's values wait in its slot while the
            slot has more ready work (it sends what is finished as soon as it runs out of ready
            work, so a group of small batches costs a frame or two; a paced stream's batches
            go at once). Bounds the result latency that coalescing can add; a task that holds
            the GIL (pure Python) delays the slot's clock thread by up to the interpreter's
            switch interval (``sys.getswitchinterval()``, 5 ms by default) more.
        status: ``host:port`` of the read-only status server (dashboard, ``/api/status``,
            ``/metrics``, ``/health``); None: off.
        heartbeat_interval: seconds between heartbeats to each worker.
        heartbeat_timeout: a worker silent for this many seconds of the driver's listening
            time is declared lost (its groups are recovered on the others).
        stall_timeout: a run with groups in flight and no frame for this many seconds re-runs
            them (a frame was lost while its connection stayed up); None: never. Must exceed
            the longest single task.
        no_workers_timeout: a run that lost every worker waits this long for one to join
            before failing with ``NoWorkersError``.
        max_connections_per_address: open connections one host may have to the control port
            (a worker opens one plus one result link per slot).
        tls_ca_file: the cluster CA (PEM); with ``tls_cert`` and ``tls_key`` every connection
            speaks mutual TLS (all three or none).
        tls_cert: the driver's certificate chain (PEM).
        tls_key: its private key (PEM).
        checkpoint_dir: stream state checkpoints (and offset logs) go to files under this
            directory, one subdirectory per stream; None: driver memory.
        checkpoint_interval: checkpoint stream state at most once per this many seconds (0:
            at every group boundary).
        local_workers: ``Engine.local``: how many ``adrizzle-worker`` processes to start on
            this machine (0: none, workers dial in).
        local_cores: slots per local worker.
        local_worker_args: extra ``adrizzle-worker`` flags for every local worker.
        py_files: the user's own code for the workers: ``.py`` files, package directories,
            ``.zip`` files (or module names), shipped once to every worker, also to workers
            that join later, and importable in its slots (see ``Engine.add_module``).
    """

    listen: str = "127.0.0.1:7077"
    token: str | None = None
    token_file: str | None = None
    window: int = 8
    max_frame_bytes: int = 1 << 30
    handshake_timeout: float = 5.0
    worker_timeout: float = 30.0
    result_linger: float = 0.002
    status: str | None = None
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 5.0
    stall_timeout: float | None = 60.0
    no_workers_timeout: float = 30.0
    max_connections_per_address: int = 256
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    checkpoint_dir: str | os.PathLike[str] | None = None
    checkpoint_interval: float = 0.0
    local_workers: int = 0
    local_cores: int = 1
    local_worker_args: tuple[str, ...] = ()
    py_files: tuple[str | os.PathLike[str], ...] = ()

    def __post_init__(self) -> None:
        positive = {
            "window": self.window,
            "max_frame_bytes": self.max_frame_bytes,
            "handshake_timeout": self.handshake_timeout,
            "worker_timeout": self.worker_timeout,
            "heartbeat_interval": self.heartbeat_interval,
            "heartbeat_timeout": self.heartbeat_timeout,
            "no_workers_timeout": self.no_workers_timeout,
            "max_connections_per_address": self.max_connections_per_address,
            "local_cores": self.local_cores,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"EngineConfig.{name} must be > 0, got {value!r}")
        if self.stall_timeout is not None and not self.stall_timeout > 0:
            raise ValueError(
                f"EngineConfig.stall_timeout must be > 0 or None, got {self.stall_timeout!r}"
            )
        for name, value in (
            ("result_linger", self.result_linger),
            ("checkpoint_interval", self.checkpoint_interval),
            ("local_workers", self.local_workers),
        ):
            if value < 0:
                raise ValueError(f"EngineConfig.{name} must be >= 0, got {value!r}")
        if not isinstance(self.local_worker_args, tuple):
            object.__setattr__(self, "local_worker_args", tuple(self.local_worker_args))
        if isinstance(self.py_files, str) or not isinstance(self.py_files, tuple):
            files = [self.py_files] if isinstance(self.py_files, str) else self.py_files
            object.__setattr__(self, "py_files", tuple(files))

    def replace(self, **changes: Any) -> EngineConfig:
        """A copy with ``changes``; an unknown name is a ``TypeError`` naming it."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(f"unknown engine settings {unknown}; see help(adrizzle.EngineConfig)")
        return dataclasses.replace(self, **changes)
