"""Consistency checks a message's fields cannot express alone (lengths against the payload).

Each raises ``RemoteProtocolError`` naming the message; the worker runtime, the slots and the
benchmark's simulated workers call them on frames from authenticated peers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adrizzle.errors import RemoteProtocolError

if TYPE_CHECKING:
    from adrizzle.wire.messages import LaunchGroup, MapOutputs


def check_launch(msg: LaunchGroup, payload_len: int, slots: int) -> list[int]:
    """Raise ``RemoteProtocolError`` unless a launch's lists agree, its parts add up to its
    payload and its slot ids are below ``slots``; the per-slot state lengths (zeros if none)."""
    n = len(msg.slot_ids)
    state = msg.slot_state or [0] * n
    if len(msg.slot_data) != n or len(state) != n:
        raise RemoteProtocolError("launch_group: slot lists differ in length")
    if len(msg.placement_workers) != len(msg.placement_slots):
        raise RemoteProtocolError("launch_group: placement lists differ in length")
    if msg.program_len + sum(msg.slot_data) + sum(state) != payload_len:
        raise RemoteProtocolError("launch_group: payload length does not match its parts")
    if any(not 0 <= s < slots for s in msg.slot_ids):
        raise RemoteProtocolError(f"launch_group: slot ids {msg.slot_ids} out of range")
    return state


def check_map_outputs(msg: MapOutputs, payload_len: int) -> None:
    """Raise ``RemoteProtocolError`` unless a bundle's lengths add up to its payload."""
    if any(len(o) != 4 or o[3] < 0 for o in msg.outputs):
        raise RemoteProtocolError("map_outputs.outputs must be [job, shuffle, map_part, length]")
    if sum(o[3] for o in msg.outputs) != payload_len:
        raise RemoteProtocolError("map_outputs: payload length does not match its outputs")
