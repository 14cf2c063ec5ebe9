"""``WorkerConfig``: every setting of an ``adrizzle-worker``, from the command line down."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from adrizzle.wire.framing import FrameLimits

if TYPE_CHECKING:
    from adrizzle.wire.tls import TlsConfig


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WorkerConfig:
    """The configuration of one worker, built by ``adrizzle-worker`` (``adrizzle.worker.cli``)
    and passed whole to the runtime, its data links and its slot pool.

    Args:
        host: the driver's host.
        port: the driver's control port.
        token: the cluster token (mutual HMAC on the control and data connections).
        cores: slot processes to run tasks in.
        name: the worker id the driver shows (unique in the cluster).
        connect_timeout: seconds to wait for the driver to accept one connection attempt.
        connect_retry: keep dialing a driver that is not up yet for this many seconds
            (jittered exponential back-off; 0: fail at once).
        start_timeout: seconds the slots may take to start before the worker gives up.
        handshake_timeout: seconds a connection may take to authenticate (TLS included).
        max_frame_bytes: the largest frame accepted from the driver or a peer.
        data_listen: where the data port listens for shuffle blocks (None: the address that
            reaches the driver, a free port).
        data_advertise: the data address other workers should dial, when it differs.
        shuffle_timeout: seconds a reduce task waits for its map outputs before failing.
        heartbeat_interval: seconds between heartbeats to the driver.
        heartbeat_timeout: exit when the driver has been silent this many seconds of the
            worker's own listening time.
        drain_timeout: on SIGTERM, exit after this many seconds even if groups are in flight.
        max_connections_per_address: open connections one host may have to the data port.
        tls: mutual TLS for both ports, or None.
        result_links: each slot opens its own authenticated connection to the driver (a
            result link) and sends its results, acknowledgement parts and checkpoints there,
            skipping the worker process (docs/architecture.md, "Result links").
    """

    host: str
    port: int
    token: str
    cores: int
    name: str
    connect_timeout: float = 10.0
    connect_retry: float = 0.0
    start_timeout: float = 60.0
    handshake_timeout: float = 5.0
    max_frame_bytes: int = 1 << 30
    data_listen: tuple[str, int] | None = None
    data_advertise: str | None = None
    shuffle_timeout: float = 60.0
    heartbeat_interval: float = 1.0
    heartbeat_timeout: float = 30.0
    drain_timeout: float = 30.0
    max_connections_per_address: int = 64
    tls: TlsConfig | None = None
    result_links: bool = True

    @property
    def limits(self) -> FrameLimits:
        """Frame caps for the control and data connections."""
        return FrameLimits(max_meta=1 << 24, max_payload=self.max_frame_bytes)

    @property
    def driver_url(self) -> str:
        return f"tcp://{self.host}:{self.port}"
