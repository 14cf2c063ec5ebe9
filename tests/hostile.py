"""Attack tools for the hostile-input tests: frames that break the protocol, and a client that
sends them to a real listening port and reports what the port did.

Seed frames are built from the message registry (``MESSAGE_TYPES``), not from hand-written field
lists, so they follow the protocol as it changes. Everything random comes from a seeded
``random.Random``: a failure names its seed and replays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pickle
import random
import struct
from pathlib import Path
from typing import Any

import orjson

from adrizzle.errors import RemoteProtocolError
from adrizzle.wire import auth
from adrizzle.wire.framing import HEADER, FrameDecoder, FrameLimits, encode_frame
from adrizzle.wire.messages import MESSAGE_TYPES, PROTOCOL_VERSION, Message, decode_meta, fields_of

# -- payloads that would prove code ran ----------------------------------------------------


class OpenMarker:
    """Unpickling this creates ``path`` (``open(path, "x")``)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "x"))


class SystemMarker:
    """Unpickling this runs ``touch path`` through ``os.system``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def exploits(marker: Path) -> list[bytes]:
    """Pickles that create ``marker`` when loaded, with every pickle protocol."""
    return [
        pickle.dumps(cls(marker), protocol=proto)
        for cls in (OpenMarker, SystemMarker)
        for proto in (2, pickle.HIGHEST_PROTOCOL)
    ]


# -- well-formed seeds -------------------------------------------------------------------------

_SAMPLE: dict[str, Any] = {
    "int": 1,
    "str": "w",
    "list[str]": ["w"],
    "str | None": "127.0.0.1:1",
    "list[int]": [0],
    "list[list[int]]": [[0]],
    "list[list[Any]]": [[0, 0, "0-0", "1-0"]],
}


def sample_fields(cls: type[Message]) -> dict[str, Any]:
    """A plausible value for every field of ``cls``, by its annotation."""
    return {name: _SAMPLE[annotation] for name, annotation, _r in fields_of(cls)}


def meta_of(tag: str, fields: dict[str, Any]) -> bytes:
    return orjson.dumps({"t": tag, **fields})


def hello_meta(role: str = "worker", name: str = "intruder", **extra: Any) -> bytes:
    fields = {"version": PROTOCOL_VERSION, "role": role, "id": name, "nonce": auth.new_nonce()}
    return meta_of("hello", {**fields, **extra})


def hello_frame(role: str = "worker", name: str = "intruder") -> bytes:
    return encode_frame(hello_meta(role, name))


def seed_frames() -> list[bytes]:
    """One well-formed frame of every message type (all but hello are refused pre-auth)."""
    frames = [hello_frame(), hello_frame("driver", "driver")]
    for tag, cls in sorted(MESSAGE_TYPES.items()):
        if tag != "hello":
            frames.append(encode_frame(meta_of(tag, sample_fields(cls))))
    frames.append(
        encode_frame(
            meta_of("batch_result", sample_fields(MESSAGE_TYPES["batch_result"])), b"p" * 16
        )
    )
    return frames


# -- categories of malformed input ----------------------------------------------------------


def oversize_headers() -> list[bytes]:
    """Length headers far beyond any cap: must be refused on the header, nothing buffered."""
    big = (1 << 32) - 1
    return [
        HEADER.pack(big, 0),
        HEADER.pack(0, big),
        HEADER.pack(big, big),
        HEADER.pack(4097, 0),
        HEADER.pack(1 << 20, 0) + b"{" * 100,
        HEADER.pack(20, 1 << 30) + b'{"t":"batch_result"}',
        HEADER.pack(20, 1),  # any payload at all before authentication
        HEADER.pack(0, 0),  # empty meta
    ]


def truncations(frame: bytes) -> list[bytes]:
    """Every proper prefix of ``frame``."""
    return [frame[:n] for n in range(len(frame))]


def invalid_json_metas() -> list[bytes]:
    return [
        b"{",
        b"}",
        b"\x00",
        b"\xff\xfe\xfd",
        b"null",
        b"[]",
        b'"hello"',
        b"1e999999",
        b'{"t":"hello",}',
        b"{'t':'hello'}",
        b'{"t":"hello","version":1,"role":"worker","id":"x","nonce":"n"',
        b"[" * 3000 + b"]" * 3000,  # deeper than the parser allows
        b'{"t":' * 500 + b"1" + b"}" * 500,
        b'{"t":"hello","id":"\xc3\x28"}',  # invalid UTF-8 inside a string
        b'{"t":"hello","t":"auth"}',
        b"\xef\xbb\xbf{}",  # BOM
        b"NaN",
    ]


def wrong_type_metas() -> list[bytes]:
    """Every field of every message type with a value of the wrong JSON type."""
    wrong: list[Any] = [None, True, 1.5, "s", (1 << 64) - 1, [None], {"a": 1}, [[["deep"]]]]
    out = []
    for tag, cls in sorted(MESSAGE_TYPES.items()):
        base = sample_fields(cls)
        if tag == "hello":
            base = orjson.loads(hello_meta())
            base.pop("t")
        for name in base:
            for value in wrong:
                if _matches(value, base[name]):
                    continue
                out.append(meta_of(tag, {**base, name: value}))
    return out


def _matches(value: Any, sample: Any) -> bool:
    if type(value) is not type(sample):
        return False
    if isinstance(value, list):
        return all(type(v) is type(sample[0]) for v in value) if sample else not value
    return True


def unknown_type_metas() -> list[bytes]:
    return [
        b"{}",
        b'{"t":null}',
        b'{"t":1}',
        b'{"t":["hello"]}',
        b'{"t":"HELLO"}',
        b'{"t":"hello "}',
        b'{"t":"__class__"}',
        b'{"t":"pickle"}',
        b'{"t":"run_python","code":"import os"}',
        meta_of("auth", {"mac": "0" * 64, "extra": 1}),
        meta_of("heartbeat", {"x": 1}),
    ]


def out_of_order_streams(marker: Path) -> list[bytes]:
    """Valid frames in an order the protocol forbids, and exploit payloads at every step."""
    auth0 = encode_frame(meta_of("auth", {"mac": "0" * 64}))
    hello = hello_frame()
    streams = [auth0, hello + hello, auth0 + hello, hello + auth0 + auth0]
    streams.append(hello_frame("nobody") + auth0)
    streams.append(encode_frame(hello_meta(role="admin")))
    streams.append(encode_frame(hello_meta(version=PROTOCOL_VERSION + 1)))
    streams.append(encode_frame(hello_meta(version=0)))
    streams.append(encode_frame(meta_of("error", {"reason": "x\nFAKE LOG LINE"})))
    for frame in seed_frames():
        streams += [frame, hello + frame]
    for tag in ("launch_group", "batch_result", "map_output_ready", "run_tasks"):
        meta = meta_of(tag, sample_fields(MESSAGE_TYPES[tag]))
        for pickled in exploits(marker):
            streams += [
                encode_frame(meta, pickled),
                hello + encode_frame(meta, pickled),
                hello + auth0 + encode_frame(meta, pickled),
                encode_frame(pickled),  # the pickle as the meta
                pickled,  # raw, no framing
            ]
    return streams


def proof_frame(token: str, client_hello_meta: bytes, server_hello: bytes) -> bytes:
    """A client's well-formed proof for the transcript of these two hellos, made with
    ``token`` (``server_hello`` is the whole frame the server sent)."""
    digest = auth.transcript(client_hello_meta, server_hello[HEADER.size :])
    return encode_frame(meta_of("auth", {"mac": auth.proof(token.encode(), "client", digest)}))


# -- random and mutated frames ------------------------------------------------------------------


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, 1, -1, 7, 1 << 31, 1 << 62, -(1 << 63), rng.randrange(-999, 999)])
    if kind == 3:
        return rng.random() * 10 ** rng.randrange(-5, 30)
    if kind == 4:
        return "".join(rng.choice('abz\u00e9\u4e16\n"\\ ') for _ in range(rng.randrange(12)))
    if kind in (5, 6):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        str(_random_json(rng, 3)): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))
    }


def _mutate_meta(rng: random.Random, meta: bytes) -> bytes:
    try:
        obj = orjson.loads(meta)
    except orjson.JSONDecodeError:
        return meta
    if not isinstance(obj, dict):
        return meta
    keys = list(obj)
    choice = rng.randrange(5)
    if choice == 0 and keys:
        obj[rng.choice(keys)] = _random_json(rng)
    elif choice == 1 and keys:
        del obj[rng.choice(keys)]
    elif choice == 2:
        obj[rng.choice(["x", "t", "version", "payload", "__reduce__"])] = _random_json(rng)
    elif choice == 3:
        obj["t"] = rng.choice([*MESSAGE_TYPES, "", "?"])
    else:
        obj = _random_json(rng)
    return orjson.dumps(obj)


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """One random change to a frame: bits, bytes, lengths, fields, cuts, splices."""
    data = bytearray(frame)
    choice = rng.randrange(9)
    if choice == 0 and data:  # flip bits
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif choice == 1 and data:  # overwrite bytes
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice == 2:  # insert bytes
        pos = rng.randrange(len(data) + 1)
        data[pos:pos] = rng.randbytes(rng.randrange(1, 9))
    elif choice == 3 and data:  # delete bytes
        pos = rng.randrange(len(data))
        del data[pos : pos + rng.randrange(1, 9)]
    elif choice == 4 and len(data) >= HEADER.size:  # lie in the header
        meta_len, payload_len = HEADER.unpack_from(data)
        lies = [0, 1, meta_len - 1, meta_len + 1, 4096, 4097, 1 << 31, (1 << 32) - 1]
        if rng.random() < 0.5:
            meta_len = rng.choice(lies)
        else:
            payload_len = rng.choice([*lies, payload_len + 1])
        struct.pack_into("!II", data, 0, meta_len % (1 << 32), payload_len % (1 << 32))
    elif choice == 5 and data:  # truncate
        del data[rng.randrange(len(data)) :]
    elif choice == 6 and len(data) > HEADER.size:  # change the meta's JSON
        _meta_len, payload_len = HEADER.unpack_from(data)
        meta = bytes(data[HEADER.size : len(data) - payload_len])
        return encode_frame(
            _mutate_meta(rng, meta) or b"{}", bytes(data[len(data) - payload_len :])
        )
    elif choice == 7:  # random JSON in a correct frame
        return encode_frame(orjson.dumps(_random_json(rng)))
    else:  # pure noise
        return rng.randbytes(rng.randrange(1, 64))
    return bytes(data)


def random_streams(rng: random.Random, n_frames: int) -> list[tuple[bytes, int]]:
    """Connections' worth of mutated or random frames: ``(bytes to send, frames in it)``.

    A port closes a connection at its first bad frame, so each stream carries few frames
    (1-3); half of them start behind a valid hello, to reach the state after it.
    """
    seeds = seed_frames()
    streams = []
    sent = 0
    while sent < n_frames:
        k = rng.randrange(1, 4)
        frames = [mutate(rng, rng.choice(seeds)) for _ in range(k)]
        prefix = hello_frame() if rng.random() < 0.5 else b""
        streams.append((prefix + b"".join(frames), k))
        sent += k
    return streams


# -- the attacking client -------------------------------------------------------------------


@dataclasses.dataclass
class Reply:
    """What the port did with one attack connection."""

    data: bytes
    closed: bool  # the port closed the connection (EOF or reset) before our deadline
    reset: bool

    def tags(self) -> list[str]:
        """The message types the port sent (it may be cut short by a reset)."""
        decoder = FrameDecoder(FrameLimits(max_meta=1 << 20, max_payload=0))
        tags = []
        try:
            for meta, _payload in decoder.feed(self.data):
                tags.append(decode_meta(meta).TAG)
        except RemoteProtocolError as exc:
            raise AssertionError(f"the port sent a malformed frame: {exc}") from None
        return tags

    def errors(self) -> list[str]:
        decoder = FrameDecoder(FrameLimits(max_meta=1 << 20, max_payload=0))
        return [
            str(orjson.loads(meta).get("reason"))
            for meta, _ in decoder.feed(self.data)
            if orjson.loads(meta).get("t") == "error"
        ]


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def attack(address: str, data: bytes, *, eof: bool = True, timeout: float = 20.0) -> Reply:
    """Connect, send ``data`` (then EOF unless told not to), and read until the port closes."""
    host, port = split_address(address)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    received = bytearray()
    reset = False
    closed = False
    try:
        writer.write(data)
        if eof:
            writer.write_eof()
        await writer.drain()
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                received += chunk
        closed = True
    except (ConnectionResetError, BrokenPipeError):
        reset = closed = True
    except TimeoutError:
        closed = False
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionResetError, BrokenPipeError):
            pass
    return Reply(bytes(received), closed, reset)


async def attack_many(
    address: str, streams: list[bytes], *, concurrency: int = 8, **kw: Any
) -> list[Reply]:
    """``attack`` with every stream, ``concurrency`` connections at a time."""
    sem = asyncio.Semaphore(concurrency)

    async def one(data: bytes) -> Reply:
        async with sem:
            return await attack(address, data, **kw)

    return await asyncio.gather(*(one(s) for s in streams))


def check_refused(replies: list[Reply]) -> None:
    """Every connection was closed by the port, which never proved itself to a stranger."""
    for i, reply in enumerate(replies):
        assert reply.closed, f"attack {i}: the port kept the connection open"
        tags = reply.tags()
        assert "auth" not in tags, f"attack {i}: the port proved itself to a stranger: {tags}"
        assert set(tags) <= {"hello", "error"}, f"attack {i}: unexpected reply {tags}"
