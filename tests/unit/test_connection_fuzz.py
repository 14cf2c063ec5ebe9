"""The sans-I/O connection fed tens of thousands of random and mutated frames, in random pieces.

Whatever arrives, ``receive_data`` either waits for more or raises ``RemoteProtocolError``
(never another exception); before authentication nothing but the handshake happens (no message
event, and the server never sends its proof); after it, only accepted, well-typed messages come
out. tests/integration/test_hostile_input.py sends the same frames to real ports.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from adrizzle.errors import RemoteProtocolError
from adrizzle.wire import auth
from adrizzle.wire.connection import Connection, Received, State
from adrizzle.wire.framing import FrameDecoder, FrameLimits, encode_frame
from adrizzle.wire.messages import (
    PROTOCOL_VERSION,
    BatchResult,
    GroupDone,
    Heartbeat,
    Hello,
    decode_meta,
    encode_meta,
)
from tests import hostile

TOKEN = "fuzz-token"
FRAMES = 12_000
ACCEPTS = (BatchResult, GroupDone, Heartbeat)


def hello(role: str) -> Hello:
    return Hello(PROTOCOL_VERSION, role, role, auth.new_nonce())


def server() -> Connection:
    return Connection(client=False, token=TOKEN, hello=hello("driver"), accepts=ACCEPTS)


def client() -> Connection:
    return Connection(client=True, token=TOKEN, hello=hello("worker"), accepts=ACCEPTS)


def feed(conn: Connection, rng: random.Random, data: bytes) -> list[object]:
    """Feed ``data`` in random pieces; return the events, stop at the first protocol error."""
    events: list[object] = []
    pos = 0
    while pos < len(data):
        step = rng.choice([1, 2, 7, 8, 64, len(data)])
        try:
            events += conn.receive_data(data[pos : pos + step])
        except RemoteProtocolError:
            assert conn.state is State.CLOSED
            break
        pos += step
    return events


def sent_tags(conn: Connection) -> list[str]:
    return [decode_meta(m).TAG for m, _ in FrameDecoder(FrameLimits()).feed(conn.data_to_send())]


@pytest.mark.parametrize("side", ["server", "client"])
def test_random_frames_before_authentication(side: str) -> None:
    rng = random.Random(f"before-{side}")
    streams = hostile.random_streams(rng, FRAMES)
    assert sum(k for _, k in streams) >= FRAMES
    for data, _k in streams:
        conn = server() if side == "server" else client()
        conn.initiate()
        events = feed(conn, rng, data)
        assert events == [], "an unauthenticated peer got past the handshake"
        tags = sent_tags(conn)
        if side == "server":
            assert set(tags) <= {"error"}, tags  # never the server's proof
        else:
            assert set(tags) <= {"auth", "error"}, tags  # the client proves first, by design


def test_random_frames_after_authentication() -> None:
    rng = random.Random("after")
    streams = hostile.random_streams(rng, FRAMES)
    received = 0
    for data, _k in streams:
        c, s = client(), server()
        c_hello, s_hello = c.initiate(), s.initiate()
        s.receive_data(c_hello)
        c.receive_data(s_hello)
        s.receive_data(c.data_to_send())
        c.receive_data(s.data_to_send())
        assert s.state is State.OPEN
        for event in feed(s, rng, data):
            assert isinstance(event, Received)
            assert type(event.message) in ACCEPTS
            assert encode_meta(event.message)  # every field is of its declared type
            received += 1
    assert received > 0  # some mutations are still valid messages: they must pass


def test_exploit_payloads_never_leave_the_handshake(tmp_path: Path) -> None:
    # Every exploit, behind every handshake prefix, in random pieces: refused on the header.
    rng = random.Random("exploits")
    marker = tmp_path / "pwned"
    for data in hostile.out_of_order_streams(marker):
        conn = server()
        conn.initiate()
        assert feed(conn, rng, data) == []
    assert not marker.exists()


def test_frame_with_one_byte_of_payload_is_refused_before_the_payload_arrives() -> None:
    conn = server()
    conn.initiate()
    header_and_meta = encode_frame(b'{"t":"heartbeat"}', b"x")[:-1]
    with pytest.raises(RemoteProtocolError, match="exceeds the cap of 0 bytes"):
        conn.receive_data(header_and_meta[:8])
