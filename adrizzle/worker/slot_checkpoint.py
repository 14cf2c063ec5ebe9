"""A slot's state checkpoint at a group boundary: the frame that carries it (pure).

At the end of a group that checkpoints, a slot sends the stream state its tasks changed since
the last checkpoint: one ``state_checkpoint`` frame, its payload the changed cells pickled
(docs/architecture.md, "State checkpoints"). State that cannot be pickled fails the group with
a ``group_failed`` naming why, instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adrizzle.plan.serialize import dumps
from adrizzle.wire.framing import encode_frame
from adrizzle.wire.messages import GroupFailed, StateCheckpoint, encode_meta

if TYPE_CHECKING:
    from adrizzle.plan.state import StateStore
    from adrizzle.wire.messages import RunTasks


def checkpoint_frame(states: StateStore, msg: RunTasks) -> bytes | None:
    """The frame for the driver with the state changed since the last checkpoint (the cells
    are marked clean), a ``group_failed`` frame when it cannot be pickled, or None when no
    state changed."""
    changed = {key: cell for key, cell in states.items() if cell.dirty}
    if not changed:
        return None
    try:
        payload = dumps(changed)
    except Exception as exc:
        reason = (
            f"worker {msg.worker} slot {msg.slot} cannot checkpoint the stream state of "
            f"jobs {msg.first_job}..{msg.last_job - 1} (states must be picklable): "
            f"{type(exc).__name__}: {exc}"
        )
        return encode_frame(encode_meta(GroupFailed(msg.group, msg.worker, msg.slot, reason)))
    for cell in changed.values():
        cell.dirty = False
    notice = StateCheckpoint(
        group=msg.group,
        slot=msg.slot,
        keys=[list(key) for key in changed],
        batches=[cell.batch for cell in changed.values()],
    )
    return encode_frame(encode_meta(notice), payload)
