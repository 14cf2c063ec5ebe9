"""Unit tests for adrizzle.wire.connection: the sans-I/O handshake and message state machine.

Two ``Connection`` objects talk by handing each other's bytes across; no sockets, no asyncio.
The client is the worker (the side that dials), the server is the driver.
"""

from __future__ import annotations

import itertools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrizzle.errors import (
    AuthenticationError,
    LocalProtocolError,
    RemoteProtocolError,
    VersionMismatchError,
)
from adrizzle.wire import auth
from adrizzle.wire.connection import Authenticated, Connection, Received, State
from adrizzle.wire.framing import HANDSHAKE_LIMITS, HEADER, FrameDecoder, FrameLimits, encode_frame
from adrizzle.wire.messages import (
    PROTOCOL_VERSION,
    Auth,
    BatchResult,
    Error,
    GroupDone,
    Heartbeat,
    Hello,
    LaunchGroup,
    Message,
    Shutdown,
    decode_meta,
    encode_meta,
)

TOKEN = "the-cluster-token"
DRIVER_MESSAGES = (LaunchGroup, Shutdown, Heartbeat)  # what the worker accepts
WORKER_MESSAGES = (BatchResult, GroupDone, Heartbeat)  # what the driver accepts

LAUNCH = LaunchGroup(
    group=1,
    first_job=0,
    last_job=1,
    stages=[0],
    placement_workers=["w1"],
    placement_slots=[0],
    slot_ids=[0],
    slot_data=[0],
    program_len=5,
    release=[],
)


def worker_hello(nonce: str | None = None, version: int = PROTOCOL_VERSION, **kw: object) -> Hello:
    return Hello(
        version=version,
        role="worker",
        id="w1",
        nonce=nonce or auth.new_nonce(),
        cores=4,
        pid=42,
        **kw,  # type: ignore[arg-type]
    )


def driver_hello(nonce: str | None = None, version: int = PROTOCOL_VERSION) -> Hello:
    return Hello(version=version, role="driver", id="driver", nonce=nonce or auth.new_nonce())


def make_client(token: str = TOKEN, hello: Hello | None = None, **kw: object) -> Connection:
    return Connection(
        client=True,
        token=token,
        hello=hello or worker_hello(),
        accepts=DRIVER_MESSAGES,
        **kw,  # type: ignore[arg-type]
    )


def make_server(token: str = TOKEN, hello: Hello | None = None, **kw: object) -> Connection:
    return Connection(
        client=False,
        token=token,
        hello=hello or driver_hello(),
        accepts=WORKER_MESSAGES,
        **kw,  # type: ignore[arg-type]
    )


def frames_of(data: bytes) -> list[tuple[Message, bytes]]:
    """Decode a byte stream the way an observer on the wire would."""
    dec = FrameDecoder(FrameLimits())
    frames = dec.feed(data)
    assert dec.buffered == 0, "trailing partial frame"
    return [(decode_meta(meta), payload) for meta, payload in frames]


def tags_of(data: bytes) -> list[str]:
    return [msg.TAG for msg, _ in frames_of(data)]


@dataclass
class Transcript:
    client_hello: bytes
    server_hello: bytes
    client_auth: bytes
    server_auth: bytes
    client_events: list[object]
    server_events: list[object]


def handshake(client: Connection, server: Connection) -> Transcript:
    """Run the whole handshake, checking every step of it."""
    c_hello = client.initiate()
    s_hello = server.initiate()
    assert tags_of(c_hello) == ["hello"]
    assert tags_of(s_hello) == ["hello"]

    assert server.receive_data(c_hello) == []
    assert server.data_to_send() == b""  # the server proves only after the client has
    assert client.receive_data(s_hello) == []
    c_auth = client.data_to_send()
    assert tags_of(c_auth) == ["auth"]
    assert client.state is State.HANDSHAKE

    server_events = server.receive_data(c_auth)
    s_auth = server.data_to_send()
    assert tags_of(s_auth) == ["auth"]
    assert server.state is State.OPEN

    client_events = client.receive_data(s_auth)
    assert client.state is State.OPEN
    assert client.data_to_send() == b""
    assert server.data_to_send() == b""
    return Transcript(c_hello, s_hello, c_auth, s_auth, list(client_events), list(server_events))


def open_pair(**kw: object) -> tuple[Connection, Connection]:
    client, server = make_client(**kw), make_server(**kw)
    handshake(client, server)
    return client, server


# -- the happy path ----------------------------------------------------------------------------


def test_full_handshake_authenticates_both_sides() -> None:
    c_hello, s_hello = worker_hello(), driver_hello()
    client = make_client(hello=c_hello)
    server = make_server(hello=s_hello)
    assert client.state is State.HANDSHAKE
    assert server.state is State.HANDSHAKE
    t = handshake(client, server)
    assert t.server_events == [Authenticated(peer=c_hello)]
    assert t.client_events == [Authenticated(peer=s_hello)]
    assert server.peer == c_hello
    assert client.peer == s_hello
    assert client.state is State.OPEN
    assert server.state is State.OPEN


def test_proofs_are_the_documented_hmacs() -> None:
    client, server = make_client(), make_server()
    t = handshake(client, server)
    [(c_hello, _)] = FrameDecoder(FrameLimits()).feed(t.client_hello)
    [(s_hello, _)] = FrameDecoder(FrameLimits()).feed(t.server_hello)
    digest = auth.transcript(c_hello, s_hello)
    [(c_auth, _)] = frames_of(t.client_auth)
    [(s_auth, _)] = frames_of(t.server_auth)
    assert isinstance(c_auth, Auth)
    assert isinstance(s_auth, Auth)
    # Bound to the side that dialed (known locally), not to the role a hello claims.
    assert c_auth.mac == auth.proof(TOKEN.encode(), "client", digest)
    assert s_auth.mac == auth.proof(TOKEN.encode(), "server", digest)
    assert c_auth.mac != s_auth.mac


def test_messages_flow_both_ways_with_payloads() -> None:
    client, server = open_pair()
    program = b"\x80\x05program-bytes"
    assert server.receive_data(client.send(Heartbeat())) == [Received(Heartbeat(), b"")]
    out = server.send(LAUNCH, program) + server.send(Shutdown())
    assert client.receive_data(out) == [Received(LAUNCH, program), Received(Shutdown(), b"")]
    result = BatchResult(group=1, jobs=[0], parts=[0], failed=[0])
    events = server.receive_data(client.send(result, bytearray(b"values")))
    assert events == [Received(result, b"values")]
    assert type(events[0].payload) is bytes  # type: ignore[union-attr]


def test_large_payload_after_open() -> None:
    client, server = open_pair()
    payload = os.urandom(1 << 20)
    data = server.send(LAUNCH, memoryview(payload))
    events: list[object] = []
    for i in range(0, len(data), 65536):
        events += client.receive_data(data[i : i + 65536])
    assert events == [Received(LAUNCH, payload)]


def test_handshake_byte_by_byte() -> None:
    c_hello, s_hello = worker_hello(), driver_hello()
    client, server = make_client(hello=c_hello), make_server(hello=s_hello)

    def trickle(conn: Connection, data: bytes) -> list[object]:
        events: list[object] = []
        for i in range(len(data)):
            events += conn.receive_data(data[i : i + 1])
        return events

    c_bytes, s_bytes = client.initiate(), server.initiate()
    assert trickle(server, c_bytes) == []
    assert trickle(client, s_bytes) == []
    assert trickle(server, client.data_to_send()) == [Authenticated(c_hello)]
    tail = server.send(LAUNCH, b"12345")
    assert trickle(client, server.data_to_send() + tail) == [
        Authenticated(s_hello),
        Received(LAUNCH, b"12345"),
    ]


def test_hellos_may_cross_in_either_order() -> None:
    # The server receives the client's hello only after the client already has the server's.
    c_hello, s_hello = worker_hello(), driver_hello()
    client, server = make_client(hello=c_hello), make_server(hello=s_hello)
    c_bytes, s_bytes = client.initiate(), server.initiate()
    assert client.receive_data(s_bytes) == []
    c_auth = client.data_to_send()
    # Client hello and client proof arrive in one read.
    assert server.receive_data(c_bytes + c_auth) == [Authenticated(c_hello)]
    assert client.receive_data(server.data_to_send()) == [Authenticated(s_hello)]


def test_frames_right_after_the_final_auth_use_the_open_limits_on_the_client() -> None:
    client, server = make_client(), make_server()
    client_hello_bytes, server_hello_bytes = client.initiate(), server.initiate()
    server.receive_data(client_hello_bytes)
    client.receive_data(server_hello_bytes)
    server.receive_data(client.data_to_send())
    assert server.state is State.OPEN
    # The server's proof and a payload-carrying frame arrive in one read.
    chunk = server.data_to_send() + server.send(LAUNCH, b"prog!") + server.send(Heartbeat())
    events = client.receive_data(chunk)
    assert len(events) == 3
    assert isinstance(events[0], Authenticated)
    assert events[1:] == [Received(LAUNCH, b"prog!"), Received(Heartbeat(), b"")]


def test_frames_right_after_the_final_auth_use_the_open_limits_on_the_server() -> None:
    client, server = make_client(), make_server()
    c_hello_bytes = client.initiate()
    client.receive_data(server.initiate())
    assert client.state is State.HANDSHAKE
    # The client cannot send() yet, but a pipelining peer may: craft the frame by hand.
    result = BatchResult(group=1, jobs=[0], parts=[0], failed=[0])
    pipelined = encode_frame(encode_meta(result), b"x" * 5000)
    events = server.receive_data(c_hello_bytes + client.data_to_send() + pipelined)
    assert len(events) == 2
    assert isinstance(events[0], Authenticated)
    assert events[1] == Received(result, b"x" * 5000)


def test_open_limits_apply_after_authentication() -> None:
    limits = FrameLimits(max_meta=1024, max_payload=100)
    client, server = open_pair(limits=limits)
    assert client.receive_data(server.send(LAUNCH, b"p" * 100)) == [Received(LAUNCH, b"p" * 100)]
    with pytest.raises(RemoteProtocolError, match="payload of 101 bytes exceeds the cap of 100"):
        client.receive_data(server.send(LAUNCH, b"p" * 101)[:8])  # the header alone


# -- authentication failures -------------------------------------------------------------------


def test_wrong_token_is_refused_and_server_never_proves_itself() -> None:
    client = make_client(token="wrong-token")
    server = make_server()
    c_hello, s_hello = client.initiate(), server.initiate()
    server.receive_data(c_hello)
    client.receive_data(s_hello)
    c_auth = client.data_to_send()
    with pytest.raises(AuthenticationError, match="authentication failed") as info:
        server.receive_data(c_auth)
    assert "'w1'" in str(info.value)
    assert server.state is State.CLOSED
    out = server.data_to_send()
    sent = frames_of(out)
    assert [m.TAG for m, _ in sent] == ["error"]  # an error frame, and no "auth" frame
    assert "auth" not in tags_of(out)
    err = sent[0][0]
    assert isinstance(err, Error)
    assert "authentication failed" in err.reason
    assert server.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        server.send(Heartbeat())
    with pytest.raises(LocalProtocolError, match="closed"):
        server.receive_data(b"")
    # The client learns why, and is closed too.
    with pytest.raises(RemoteProtocolError, match=r"peer refused the connection: .authentication"):
        client.receive_data(out)
    assert client.state is State.CLOSED
    assert client.data_to_send() == b""  # no error frame answering an error frame


def test_wrong_token_with_pipelined_frames_behind_the_proof() -> None:
    # Frames behind a failed proof in the same read are never parsed, and nothing is proven.
    client, server = make_client(token="wrong"), make_server()
    c_hello, s_hello = client.initiate(), server.initiate()
    client.receive_data(s_hello)
    tail = encode_frame(encode_meta(Heartbeat()), b"never-read")
    with pytest.raises(AuthenticationError):
        server.receive_data(c_hello + client.data_to_send() + tail)
    assert tags_of(server.data_to_send()) == ["error"]


def test_server_proof_made_with_another_token_is_refused_by_the_client() -> None:
    client = make_client()
    s_hello = driver_hello()
    s_hello_meta = encode_meta(s_hello)
    c_hello_bytes = client.initiate()
    client.receive_data(encode_frame(s_hello_meta))
    client.data_to_send()
    [(c_hello_meta, _)] = FrameDecoder(FrameLimits()).feed(c_hello_bytes)
    digest = auth.transcript(c_hello_meta, s_hello_meta)
    forged = Auth(auth.proof(b"not-the-token", "driver", digest))
    with pytest.raises(AuthenticationError, match="driver 'driver' does not hold the token"):
        client.receive_data(encode_frame(encode_meta(forged)))
    assert client.state is State.CLOSED
    assert tags_of(client.data_to_send()) == ["error"]


def test_replayed_client_proof_fails_on_a_new_connection() -> None:
    # Record a genuine client's hello and proof, then replay them to a fresh server.
    first = handshake(make_client(), make_server())
    server = make_server()
    server.initiate()  # a fresh server nonce
    assert server.receive_data(first.client_hello) == []
    with pytest.raises(AuthenticationError):
        server.receive_data(first.client_auth)
    assert "auth" not in tags_of(server.data_to_send())


def test_replayed_server_proof_fails_on_a_new_connection() -> None:
    first = handshake(make_client(), make_server())
    client = make_client()
    client.initiate()  # a fresh client nonce
    client.receive_data(first.server_hello)
    client.data_to_send()
    with pytest.raises(AuthenticationError):
        client.receive_data(first.server_auth)
    assert client.state is State.CLOSED


def test_client_proof_cannot_be_reflected_to_a_differently_named_peer() -> None:
    # A fake driver without the token echoes the worker's own proof back to it.
    client = make_client()
    client.initiate()
    client.receive_data(encode_frame(encode_meta(driver_hello())))
    reflected = client.data_to_send()
    with pytest.raises(AuthenticationError):
        client.receive_data(reflected)


def test_client_proof_cannot_be_reflected_by_a_peer_claiming_the_same_role() -> None:
    client = make_client()
    client.initiate()
    # The attacker does not know the token. It claims to be a "worker" like its victim ...
    fake = Hello(version=PROTOCOL_VERSION, role="worker", id="evil", nonce=auth.new_nonce())
    client.receive_data(encode_frame(encode_meta(fake)))
    # ... and sends the client's own proof straight back.
    reflected = client.data_to_send()
    with pytest.raises(AuthenticationError):
        client.receive_data(reflected)


def test_auth_before_hello_is_refused() -> None:
    server = make_server()
    server.initiate()
    with pytest.raises(RemoteProtocolError, match="auth received before hello"):
        server.receive_data(encode_frame(encode_meta(Auth("00" * 32))))
    assert tags_of(server.data_to_send()) == ["error"]


def test_second_hello_is_refused() -> None:
    server = make_server()
    server.initiate()
    hello = encode_frame(encode_meta(worker_hello()))
    server.receive_data(hello)
    with pytest.raises(RemoteProtocolError, match="second hello"):
        server.receive_data(hello)
    assert server.state is State.CLOSED


def test_error_frame_during_handshake() -> None:
    client = make_client()
    client.initiate()
    with pytest.raises(RemoteProtocolError, match="peer refused the connection: 'go away"):
        client.receive_data(encode_frame(encode_meta(Error("go away"))))
    assert client.state is State.CLOSED
    assert client.data_to_send() == b""


def test_undecodable_meta_during_handshake_queues_an_error_frame() -> None:
    server = make_server()
    server.initiate()
    with pytest.raises(RemoteProtocolError, match="not valid JSON"):
        server.receive_data(encode_frame(b"{not json"))
    [(err, _)] = frames_of(server.data_to_send())
    assert isinstance(err, Error)
    assert "not valid JSON" in err.reason


# -- version mismatch --------------------------------------------------------------------------


def test_version_mismatch_names_both_versions_on_the_client() -> None:
    client = make_client()
    client.initiate()
    server = make_server(hello=driver_hello(version=PROTOCOL_VERSION + 1))
    with pytest.raises(VersionMismatchError) as info:
        client.receive_data(server.initiate())
    message = str(info.value)
    assert f"version {PROTOCOL_VERSION}," in message
    assert f"version {PROTOCOL_VERSION + 1}" in message
    assert "worker" in message
    assert "driver" in message
    assert client.state is State.CLOSED
    out = client.data_to_send()
    assert tags_of(out) == ["error"]  # no proof sent to a peer of another version
    [(err, _)] = frames_of(out)
    assert isinstance(err, Error)
    assert "version mismatch" in err.reason


def test_version_mismatch_on_the_server() -> None:
    server = make_server()
    server.initiate()
    client = make_client(hello=worker_hello(version=0))
    with pytest.raises(VersionMismatchError, match=rf"version {PROTOCOL_VERSION}, .* version 0"):
        server.receive_data(client.initiate())
    assert tags_of(server.data_to_send()) == ["error"]


def test_version_mismatch_is_a_remote_protocol_error() -> None:
    assert issubclass(VersionMismatchError, RemoteProtocolError)
    assert issubclass(AuthenticationError, RemoteProtocolError)


def test_version_mismatch_reported_even_if_a_newer_hello_has_more_fields() -> None:
    client = make_client()
    client.initiate()
    newer = b'{"t":"hello","version":2,"role":"driver","id":"d","nonce":"n","features":["x"]}'
    with pytest.raises(VersionMismatchError):
        client.receive_data(encode_frame(newer))


# -- nothing from an unauthenticated peer is unpickled ----------------------------------------


class _Exploit:
    """Unpickling this creates ``path``: proof that a payload was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, ...]:
        return (open, (self.path, "x"))


def _exploit(path: Path) -> bytes:
    return pickle.dumps(_Exploit(path))


def test_the_exploit_payload_really_works(tmp_path: Path) -> None:
    # Control for the tests below: loading this payload does create the marker file.
    marker = tmp_path / "control"
    f = pickle.loads(_exploit(marker))
    f.close()
    assert marker.exists()


@pytest.mark.parametrize("after_hello", [False, True])
@pytest.mark.parametrize("side", ["server", "client"])
def test_pickle_payload_before_authentication_is_never_loaded(
    tmp_path: Path, after_hello: bool, side: str
) -> None:
    marker = tmp_path / "pwned"
    conn = make_server() if side == "server" else make_client()
    conn.initiate()
    if after_hello:
        peer_hello = worker_hello() if side == "server" else driver_hello()
        conn.receive_data(encode_frame(encode_meta(peer_hello)))
        conn.data_to_send()
    attack = encode_frame(encode_meta(LAUNCH), _exploit(marker))
    with pytest.raises(RemoteProtocolError, match="exceeds the cap of 0 bytes"):
        conn.receive_data(attack)
    assert not marker.exists()
    assert conn.state is State.CLOSED
    assert (conn.peer is not None) is after_hello
    assert tags_of(conn.data_to_send()) == ["error"]
    assert not marker.exists()


def test_payload_before_authentication_is_refused_on_its_header(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    server = make_server()
    server.initiate()
    server.receive_data(encode_frame(encode_meta(worker_hello())))
    meta = encode_meta(LAUNCH)
    payload = _exploit(marker)
    attack = encode_frame(meta, payload)
    # Only the header and the meta have arrived; the payload never needs to.
    with pytest.raises(RemoteProtocolError, match=f"payload of {len(payload)} bytes"):
        server.receive_data(attack[:8])
    assert server.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        server.receive_data(attack[8:])
    assert not marker.exists()


def test_oversize_meta_before_authentication_is_refused_on_its_header() -> None:
    server = make_server()
    server.initiate()
    header = HEADER.pack(HANDSHAKE_LIMITS.max_meta + 1, 0)
    with pytest.raises(RemoteProtocolError, match="meta of 4097 bytes exceeds the cap of 4096"):
        server.receive_data(header)


def test_pipelined_payload_behind_a_valid_hello_is_refused() -> None:
    server = make_server()
    server.initiate()
    data = encode_frame(encode_meta(worker_hello())) + encode_frame(encode_meta(LAUNCH), b"p")
    with pytest.raises(RemoteProtocolError, match="exceeds the cap of 0 bytes"):
        server.receive_data(data)


@pytest.mark.parametrize(
    "msg",
    [LAUNCH, Heartbeat(), Shutdown(), BatchResult(group=0, jobs=[0], parts=[], failed=[0])],
    ids=lambda m: m.TAG,
)
@pytest.mark.parametrize("after_hello", [False, True])
def test_non_handshake_message_before_authentication_is_refused(
    msg: Message, after_hello: bool
) -> None:
    client = make_client()
    client.initiate()
    if after_hello:
        client.receive_data(encode_frame(encode_meta(driver_hello())))
        client.data_to_send()
    with pytest.raises(RemoteProtocolError, match=f"'{msg.TAG}' received before authentication"):
        client.receive_data(encode_frame(encode_meta(msg)))
    assert client.state is State.CLOSED
    assert tags_of(client.data_to_send()) == ["error"]


# -- after the connection is open -------------------------------------------------------------


def test_unexpected_message_type_after_open_is_refused() -> None:
    client, server = open_pair()
    # BatchResult is something the worker sends, never something it accepts.
    out = server.send(BatchResult(group=0, jobs=[0], parts=[], failed=[0]), b"x")
    with pytest.raises(RemoteProtocolError, match="unexpected message 'batch_result' from peer"):
        client.receive_data(out)
    assert client.state is State.CLOSED
    assert tags_of(client.data_to_send()) == ["error"]


def test_handshake_messages_after_open_are_refused() -> None:
    _client, server = open_pair()
    with pytest.raises(RemoteProtocolError, match="unexpected message 'hello'"):
        server.receive_data(encode_frame(encode_meta(worker_hello())))
    _client, server = open_pair()
    with pytest.raises(RemoteProtocolError, match="unexpected message 'auth'"):
        server.receive_data(encode_frame(encode_meta(Auth("00"))))


def test_peer_error_after_open_closes_without_answering() -> None:
    client, _server = open_pair()
    with pytest.raises(RemoteProtocolError, match="peer closed the connection: 'shutting down"):
        client.receive_data(encode_frame(encode_meta(Error("shutting down"))))
    assert client.state is State.CLOSED
    assert client.data_to_send() == b""


def test_malformed_meta_after_open() -> None:
    client, _server = open_pair()
    with pytest.raises(RemoteProtocolError, match=r"launch_group\.group must be int"):
        client.receive_data(encode_frame(b'{"t":"launch_group","group":"1"}'))
    assert client.state is State.CLOSED


# -- local misuse ------------------------------------------------------------------------------


def test_send_before_open_raises_local_protocol_error() -> None:
    client = make_client()
    with pytest.raises(LocalProtocolError, match="cannot send heartbeat in state handshake"):
        client.send(Heartbeat())
    client.initiate()
    with pytest.raises(LocalProtocolError):
        client.send(LAUNCH, b"payload")
    assert client.data_to_send() == b""


def test_send_after_close_raises_local_protocol_error() -> None:
    client, _server = open_pair()
    with pytest.raises(RemoteProtocolError):
        client.receive_data(b"\xff" * 8)
    with pytest.raises(LocalProtocolError, match="state closed"):
        client.send(Heartbeat())
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"")


def test_initiate_only_once() -> None:
    client = make_client()
    client.initiate()
    with pytest.raises(LocalProtocolError, match="called once"):
        client.initiate()


def test_receive_before_initiate_is_a_local_error() -> None:
    server = make_server()
    with pytest.raises(LocalProtocolError, match="initiate"):
        server.receive_data(encode_frame(encode_meta(worker_hello())))


@pytest.mark.parametrize(
    ("token", "hello"), [(None, driver_hello()), ("", driver_hello()), (TOKEN, None)]
)
def test_untrusted_connection_needs_token_and_hello(token: str | None, hello: Hello | None) -> None:
    with pytest.raises(LocalProtocolError, match="needs a hello and a token"):
        Connection(client=False, token=token, hello=hello, accepts=WORKER_MESSAGES)


def test_trusted_connection_is_open_at_once() -> None:
    limits = FrameLimits(max_meta=1024, max_payload=10)
    a = Connection(client=True, token=None, hello=None, accepts=[Heartbeat], trusted=True)
    b = Connection(
        client=False, token=None, hello=None, accepts=[LaunchGroup], limits=limits, trusted=True
    )
    assert a.state is State.OPEN
    assert b.state is State.OPEN
    assert b.receive_data(a.send(LAUNCH, b"0123456789")) == [Received(LAUNCH, b"0123456789")]
    assert a.receive_data(b.send(Heartbeat())) == [Received(Heartbeat(), b"")]
    with pytest.raises(LocalProtocolError):
        a.initiate()
    with pytest.raises(RemoteProtocolError, match="payload of 11 bytes"):
        b.receive_data(a.send(LAUNCH, b"0123456789!"))


# -- property: the server's whole byte stream, randomly chunked --------------------------------


@settings(max_examples=100, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=5),
    data=st.data(),
)
def test_handshake_and_messages_survive_random_chunking(
    payloads: list[bytes], data: st.DataObject
) -> None:
    # Fixed nonces make the client's bytes deterministic, so a second, identical client can be
    # fed the server's recorded stream (hello + proof + messages) in arbitrary pieces.
    c_hello = worker_hello(nonce="c" * 32)
    s_hello = driver_hello(nonce="s" * 32)
    client, server = make_client(hello=c_hello), make_server(hello=s_hello)
    t = handshake(client, server)
    msgs = [LaunchGroup(**_launch(len(p))) for p in payloads]
    stream = t.server_hello + t.server_auth
    stream += b"".join(server.send(m, p) for m, p in zip(msgs, payloads, strict=True))

    replica = make_client(hello=c_hello)
    assert replica.initiate() == t.client_hello
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=15)))
    bounds = [0, *cuts, len(stream)]
    events: list[object] = []
    for a, b in itertools.pairwise(bounds):
        events += replica.receive_data(stream[a:b])
    assert replica.data_to_send() == t.client_auth
    assert events == [
        Authenticated(s_hello),
        *(Received(m, p) for m, p in zip(msgs, payloads, strict=True)),
    ]
    assert replica.state is State.OPEN


def _launch(program_len: int) -> dict[str, object]:
    return {
        "group": program_len,
        "first_job": 0,
        "last_job": 1,
        "stages": [0],
        "placement_workers": ["w1"],
        "placement_slots": [0],
        "slot_ids": [0],
        "slot_data": [0],
        "program_len": program_len,
        "release": [],
    }
