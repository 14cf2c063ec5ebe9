"""Unit tests for adrizzle.wire.listener's bookkeeping: the per-address cap and refusal logs.

The listener only reads a channel's address, whether it authenticated (``peer``) and why it
closed, so plain stand-ins are enough here; tests/integration covers it on real ports.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest

from adrizzle.errors import AuthenticationError, RemoteProtocolError
from adrizzle.wire.channel import Channel, ConnectionClosed
from adrizzle.wire.listener import MAX_REFUSED_HOSTS, Listener, format_address

log = logging.getLogger("test.listener")


class FakeChannel:
    def __init__(self, host: str, port: int = 1000, peer: Any = None) -> None:
        self.peer_host = host
        self.peer_address = f"{host}:{port}"
        self.peer = peer


def channel(host: str, port: int = 1000, peer: Any = None) -> Channel:
    return cast("Channel", FakeChannel(host, port, peer))


def listener(cap: int = 2) -> Listener:
    def factory() -> Channel:
        raise AssertionError("not used")

    return Listener(factory, name="test port", log=log, max_per_address=cap)


def test_cap_is_per_host_and_freed_on_close() -> None:
    gate = listener(cap=2)
    a1, a2, a3, b1 = (
        channel("10.0.0.1", 1),
        channel("10.0.0.1", 2),
        channel("10.0.0.1", 3),
        channel("10.0.0.2"),
    )
    assert gate.admit(a1) is None
    assert gate.admit(a2) is None
    refusal = gate.admit(a3)
    assert refusal is not None
    assert "too many connections from 10.0.0.1" in refusal
    assert "at most 2 per address" in refusal
    assert gate.admit(b1) is None  # another host has its own count
    gate.release(a3, RemoteProtocolError(refusal))  # refused: did not hold a place
    assert gate.admit(channel("10.0.0.1", 4)) is not None
    gate.release(a1, ConnectionClosed("bye", by_peer=True))
    assert gate.admit(channel("10.0.0.1", 5)) is None


def test_releasing_twice_or_unadmitted_does_not_free_places() -> None:
    gate = listener(cap=1)
    a = channel("h")
    assert gate.admit(a) is None
    gate.release(a, None)
    gate.release(a, None)
    gate.release(channel("h"), None)
    assert gate.admit(channel("h")) is None
    assert gate.admit(channel("h")) is not None


def test_failed_handshakes_are_logged_once_per_host(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.listener")
    gate = listener(cap=100)
    for port in range(50):
        for host in ("10.0.0.1", "10.0.0.2"):
            c = channel(host, port)
            gate.admit(c)
            gate.release(c, AuthenticationError("authentication failed: worker 'x'"))
    assert gate.refused == {"10.0.0.1": 50, "10.0.0.2": 50}
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "test port refused a connection from 10.0.0.1:0: authentication failed" in messages[0]


def test_clean_closes_and_authenticated_peers_are_not_refusals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = listener()
    gate.release(channel("h"), ConnectionClosed("closed by peer", by_peer=True))
    gate.release(channel("h"), None)
    gate.release(channel("h", peer=object()), RemoteProtocolError("bad frame after auth"))
    assert gate.refused == {}
    assert not caplog.records


def test_refusal_counts_are_bounded() -> None:
    gate = listener()
    for i in range(MAX_REFUSED_HOSTS + 500):
        gate.release(channel(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"), RemoteProtocolError("x"))
    assert len(gate.refused) == MAX_REFUSED_HOSTS + 1
    assert gate.refused["other"] == 500


def test_log_line_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.listener")
    gate = listener()
    gate.release(channel("h"), RemoteProtocolError("x" * 10_000))
    [record] = caplog.records
    assert len(record.getMessage()) < 500


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        listener(cap=0)


def test_format_address() -> None:
    assert format_address("127.0.0.1", 7077) == "127.0.0.1:7077"
    assert format_address("::1", 7077) == "[::1]:7077"
