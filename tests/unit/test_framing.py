"""Unit tests for adrizzle.wire.framing: the sans-I/O length-prefixed frame codec."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adrizzle.errors import LocalProtocolError, RemoteProtocolError
from adrizzle.wire.framing import (
    HANDSHAKE_LIMITS,
    HEADER,
    HEADER_SIZE,
    FrameDecoder,
    FrameLimits,
    encode_frame,
)

FRAMES = [
    (b'{"t":"heartbeat"}', b""),
    (b'{"t":"batch_result"}', b"\x00\x01payload\xff" * 3),
    (b"x", b"y"),
]


def _stream(frames: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(encode_frame(m, p) for m, p in frames)


# -- encoding ------------------------------------------------------------------------------


def test_header_is_8_bytes_network_order() -> None:
    assert HEADER_SIZE == 8
    frame = encode_frame(b"abc", b"hello")
    assert frame[:8] == b"\x00\x00\x00\x03\x00\x00\x00\x05"
    assert frame[8:] == b"abchello"


def test_encode_frame_accepts_bytearray_and_memoryview_payloads() -> None:
    expected = encode_frame(b"m", b"payload")
    assert encode_frame(b"m", bytearray(b"payload")) == expected
    assert encode_frame(b"m", memoryview(b"payload")) == expected


def test_encode_frame_refuses_empty_meta() -> None:
    with pytest.raises(LocalProtocolError, match="non-empty meta"):
        encode_frame(b"", b"payload")


# -- decoding: chunking --------------------------------------------------------------------


def test_single_frame_in_one_feed() -> None:
    dec = FrameDecoder(FrameLimits())
    assert dec.feed(encode_frame(b"meta", b"payload")) == [(b"meta", b"payload")]
    assert dec.buffered == 0


def test_several_frames_in_one_feed() -> None:
    dec = FrameDecoder(FrameLimits())
    assert dec.feed(_stream(FRAMES)) == FRAMES
    assert dec.buffered == 0


def test_feed_byte_by_byte() -> None:
    data = _stream(FRAMES)
    dec = FrameDecoder(FrameLimits())
    out: list[tuple[bytes, bytes]] = []
    for i in range(len(data)):
        got = dec.feed(data[i : i + 1])
        out.extend(got)
        if got:  # a frame is returned with its last byte, so nothing is left over
            assert dec.buffered == 0
    assert out == FRAMES
    assert dec.buffered == 0


def test_frame_is_returned_exactly_when_its_last_byte_arrives() -> None:
    frame = encode_frame(b"meta", b"payload")
    dec = FrameDecoder(FrameLimits())
    for i in range(len(frame) - 1):
        assert dec.feed(frame[i : i + 1]) == []
        assert dec.buffered == i + 1
    assert dec.feed(frame[-1:]) == [(b"meta", b"payload")]
    assert dec.buffered == 0


@pytest.mark.parametrize("split", range(len(_stream(FRAMES)) + 1))
def test_split_at_every_boundary(split: int) -> None:
    data = _stream(FRAMES)
    dec = FrameDecoder(FrameLimits())
    out = dec.feed(data[:split])
    out += dec.feed(data[split:])
    assert out == FRAMES
    assert dec.buffered == 0


def test_split_at_every_pair_of_boundaries_of_one_frame() -> None:
    frame = encode_frame(b'{"t":"x"}', b"0123456789")
    for a in range(len(frame) + 1):
        for b in range(a, len(frame) + 1):
            dec = FrameDecoder(FrameLimits())
            out = dec.feed(frame[:a]) + dec.feed(frame[a:b]) + dec.feed(frame[b:])
            assert out == [(b'{"t":"x"}', b"0123456789")], (a, b)


def test_feed_accepts_memoryview_and_bytearray() -> None:
    data = _stream(FRAMES)
    dec = FrameDecoder(FrameLimits())
    out = dec.feed(memoryview(data)[:10]) + dec.feed(bytearray(data[10:]))
    assert out == FRAMES


def test_returned_frames_are_immutable_bytes_independent_of_the_buffer() -> None:
    dec = FrameDecoder(FrameLimits())
    [(meta, payload)] = dec.feed(encode_frame(b"meta", b"payload"))
    assert type(meta) is bytes
    assert type(payload) is bytes
    dec.feed(encode_frame(b"other", b"bytes!!"))  # reuses the buffer
    assert (meta, payload) == (b"meta", b"payload")


def test_partial_trailing_frame_stays_buffered() -> None:
    frame = encode_frame(b"meta", b"payload")
    dec = FrameDecoder(FrameLimits())
    assert dec.feed(frame + frame[:5]) == [(b"meta", b"payload")]
    assert dec.buffered == 5
    assert dec.feed(frame[5:]) == [(b"meta", b"payload")]
    assert dec.buffered == 0


def test_empty_feed_returns_nothing() -> None:
    dec = FrameDecoder(FrameLimits())
    assert dec.feed(b"") == []
    assert dec.buffered == 0


# -- max_frames ------------------------------------------------------------------------------


def test_max_frames_limits_and_keeps_the_rest_buffered() -> None:
    data = _stream(FRAMES)
    dec = FrameDecoder(FrameLimits())
    assert dec.feed(data, max_frames=1) == FRAMES[:1]
    assert dec.buffered == len(data) - len(encode_frame(*FRAMES[0]))
    assert dec.feed(b"", max_frames=1) == FRAMES[1:2]
    assert dec.feed(b"", max_frames=5) == FRAMES[2:]
    assert dec.buffered == 0


def test_max_frames_zero_returns_nothing() -> None:
    data = _stream(FRAMES)
    dec = FrameDecoder(FrameLimits())
    assert dec.feed(data, max_frames=0) == []
    assert dec.buffered == len(data)
    assert dec.feed(b"") == FRAMES


def test_max_frames_does_not_check_headers_beyond_the_limit() -> None:
    # The handshake relies on this: the header after the final auth frame is checked with the
    # limits that apply *after* the switch, not with the handshake limits.
    dec = FrameDecoder(HANDSHAKE_LIMITS)
    data = encode_frame(b"first") + encode_frame(b"second", b"payload")
    assert dec.feed(data, max_frames=1) == [(b"first", b"")]
    dec.limits = FrameLimits()
    assert dec.feed(b"") == [(b"second", b"payload")]


# -- limits, checked on the header -------------------------------------------------------------


def test_oversize_meta_rejected_on_header_alone() -> None:
    dec = FrameDecoder(FrameLimits(max_meta=100, max_payload=100))
    with pytest.raises(RemoteProtocolError, match=r"meta of 101 bytes exceeds the cap of 100"):
        dec.feed(HEADER.pack(101, 0))


def test_oversize_payload_rejected_on_header_alone() -> None:
    dec = FrameDecoder(FrameLimits(max_meta=100, max_payload=100))
    with pytest.raises(RemoteProtocolError, match=r"payload of 101 bytes exceeds the cap of 100"):
        dec.feed(HEADER.pack(10, 101))


def test_huge_lengths_rejected_without_waiting_for_the_body() -> None:
    dec = FrameDecoder(FrameLimits())
    with pytest.raises(RemoteProtocolError, match="payload"):
        dec.feed(HEADER.pack(10, 0xFFFFFFFF))
    dec = FrameDecoder(FrameLimits())
    with pytest.raises(RemoteProtocolError, match="meta"):
        dec.feed(HEADER.pack(0xFFFFFFFF, 0))


def test_oversize_header_rejected_when_it_arrives_byte_by_byte() -> None:
    dec = FrameDecoder(FrameLimits(max_meta=100, max_payload=100))
    header = HEADER.pack(10, 1000)
    for b in header[:-1]:
        assert dec.feed(bytes([b])) == []
    with pytest.raises(RemoteProtocolError, match="payload"):
        dec.feed(header[-1:])


def test_oversize_frame_behind_a_good_one_is_rejected() -> None:
    dec = FrameDecoder(FrameLimits(max_meta=100, max_payload=100))
    with pytest.raises(RemoteProtocolError, match="payload of 101"):
        dec.feed(encode_frame(b"ok", b"fine") + HEADER.pack(1, 101))


def test_frames_at_exactly_the_caps_are_accepted() -> None:
    dec = FrameDecoder(FrameLimits(max_meta=16, max_payload=32))
    frame = (b"m" * 16, b"p" * 32)
    assert dec.feed(encode_frame(*frame)) == [frame]


def test_handshake_limits_allow_no_payload_at_all() -> None:
    assert HANDSHAKE_LIMITS.max_payload == 0
    dec = FrameDecoder(HANDSHAKE_LIMITS)
    with pytest.raises(RemoteProtocolError, match="payload of 1 bytes exceeds the cap of 0"):
        dec.feed(HEADER.pack(5, 1))
    dec = FrameDecoder(HANDSHAKE_LIMITS)
    with pytest.raises(RemoteProtocolError, match="meta"):
        dec.feed(HEADER.pack(HANDSHAKE_LIMITS.max_meta + 1, 0))
    dec = FrameDecoder(HANDSHAKE_LIMITS)
    meta = b"m" * HANDSHAKE_LIMITS.max_meta
    assert dec.feed(encode_frame(meta)) == [(meta, b"")]


def test_empty_meta_rejected() -> None:
    dec = FrameDecoder(FrameLimits())
    with pytest.raises(RemoteProtocolError, match="empty meta"):
        dec.feed(HEADER.pack(0, 0))
    dec = FrameDecoder(FrameLimits())
    with pytest.raises(RemoteProtocolError, match="empty meta"):
        dec.feed(HEADER.pack(0, 5) + b"12345")


def test_limits_can_be_raised_on_a_live_decoder() -> None:
    dec = FrameDecoder(HANDSHAKE_LIMITS)
    dec.limits = FrameLimits(max_meta=100, max_payload=100)
    assert dec.feed(encode_frame(b"m", b"p" * 100)) == [(b"m", b"p" * 100)]


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff" * 8,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
        b"\x00\x00\x00\x00garbage!",
    ],
)
def test_garbage_is_rejected(garbage: bytes) -> None:
    dec = FrameDecoder(HANDSHAKE_LIMITS)
    with pytest.raises(RemoteProtocolError):
        dec.feed(garbage)


def test_short_garbage_is_only_buffered() -> None:
    # Fewer than 8 bytes cannot be judged yet; nothing is returned and nothing raised.
    dec = FrameDecoder(HANDSHAKE_LIMITS)
    assert dec.feed(b"\xff" * 7) == []
    assert dec.buffered == 7
    with pytest.raises(RemoteProtocolError):
        dec.feed(b"\xff")


# -- property: random frames, random chunking ------------------------------------------------

frame_lists = st.lists(
    st.tuples(st.binary(min_size=1, max_size=64), st.binary(max_size=256)), max_size=12
)


@settings(max_examples=300, deadline=None)
@given(frames=frame_lists, data=st.data())
def test_roundtrip_with_random_chunking(
    frames: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    stream = _stream(frames)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=20)))
    bounds = [0, *cuts, len(stream)]
    dec = FrameDecoder(FrameLimits(max_meta=64, max_payload=256))
    out: list[tuple[bytes, bytes]] = []
    for a, b in itertools.pairwise(bounds):
        out.extend(dec.feed(stream[a:b]))
    assert out == frames
    assert dec.buffered == 0


@settings(max_examples=100, deadline=None)
@given(frames=frame_lists, max_frames=st.integers(min_value=1, max_value=4))
def test_roundtrip_with_max_frames(frames: list[tuple[bytes, bytes]], max_frames: int) -> None:
    dec = FrameDecoder(FrameLimits())
    out = dec.feed(_stream(frames), max_frames=max_frames)
    assert len(out) == min(max_frames, len(frames))
    while True:
        more = dec.feed(b"", max_frames=max_frames)
        assert len(more) <= max_frames
        if not more:
            break
        out.extend(more)
    assert out == frames
    assert dec.buffered == 0
