"""Length-prefixed frames: 8-byte header ``!II`` (meta length, payload length), meta, payload.

Sans-I/O: bytes in, ``(meta, payload)`` pairs out. Sizes are checked on the header, before any
body byte is buffered, so a hostile length can never make us allocate or wait for a huge body.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from adrizzle.errors import LocalProtocolError, RemoteProtocolError

HEADER = struct.Struct("!II")
HEADER_SIZE = HEADER.size


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Caps on one frame. Checked on the header before the body is read."""

    max_meta: int = 1 << 20
    max_payload: int = 1 << 30


#: Before authentication only small JSON frames may pass: no payload can be sent at all.
HANDSHAKE_LIMITS = FrameLimits(max_meta=4096, max_payload=0)


def encode_frame(meta: bytes, payload: bytes | bytearray | memoryview = b"") -> bytes:
    """Serialize one frame."""
    if not meta:
        raise LocalProtocolError("a frame needs a non-empty meta")
    return b"".join((HEADER.pack(len(meta), len(payload)), meta, payload))


class FrameDecoder:
    """Incremental frame parser: ``feed(bytes) -> [(meta, payload), ...]``."""

    __slots__ = ("_buf", "limits")

    def __init__(self, limits: FrameLimits) -> None:
        self._buf = bytearray()
        self.limits = limits

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole frame."""
        return len(self._buf)

    def feed(
        self, data: bytes | bytearray | memoryview, max_frames: int = -1
    ) -> list[tuple[bytes, bytes]]:
        """Buffer ``data`` and return the whole frames now available (at most ``max_frames``)."""
        buf = self._buf
        buf += data
        frames: list[tuple[bytes, bytes]] = []
        pos = 0
        end_of_data = len(buf)
        limits = self.limits
        while end_of_data - pos >= HEADER_SIZE and len(frames) != max_frames:
            meta_len, payload_len = HEADER.unpack_from(buf, pos)
            if meta_len == 0:
                raise RemoteProtocolError("frame with empty meta")
            if meta_len > limits.max_meta:
                raise RemoteProtocolError(
                    f"frame meta of {meta_len} bytes exceeds the cap of {limits.max_meta} bytes"
                )
            if payload_len > limits.max_payload:
                raise RemoteProtocolError(
                    f"frame payload of {payload_len} bytes exceeds the cap of "
                    f"{limits.max_payload} bytes"
                )
            body = pos + HEADER_SIZE
            end = body + meta_len + payload_len
            if end > end_of_data:
                break
            frames.append((bytes(buf[body : body + meta_len]), bytes(buf[body + meta_len : end])))
            pos = end
        if pos:
            del buf[:pos]
        return frames
