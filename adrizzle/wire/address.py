"""Address strings of the command line and the API: ``tcp://host:port``, ``[v6]:port``, ``host``."""

from __future__ import annotations

import ipaddress


def parse_address(address: str, default_port: int = 0) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"``, ``"tcp://host:port"`` or ``"host"`` -> (host, port)."""
    addr = address.removeprefix("tcp://")
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest.removeprefix(":")
    elif addr.count(":") == 1:
        host, port = addr.split(":")
    else:
        host, port = addr, ""
    try:
        return host or "127.0.0.1", int(port) if port else default_port
    except ValueError:
        raise ValueError(f"invalid address {address!r}: port must be a number") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
