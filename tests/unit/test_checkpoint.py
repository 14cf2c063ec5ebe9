"""The driver's stream state checkpoints (adrizzle.driver.checkpoint): pure logic and files."""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path
from typing import Any

import cloudpickle

from adrizzle.driver.checkpoint import StateCheckpoints
from adrizzle.driver.checkpoint_files import FILE_PREFIX, Piece, read_checkpoint_file
from adrizzle.driver.placement import SlotRef
from adrizzle.plan.state import PartitionState, restore_states

SLOTS = [SlotRef("w0", 0), SlotRef("w1", 0)]


def piece(worker: str, slot: int, cells: dict[tuple[int, int], PartitionState]) -> Piece:
    return Piece(
        list(cells),
        [c.batch for c in cells.values()],
        cloudpickle.dumps(cells),
        worker,
        slot,
    )


def group_pieces(batch: int, totals: dict[int, int], sid: int = 7) -> list[Piece]:
    """State ``sid`` with 3 partitions, placed on SLOTS (p % 2), all at ``batch``."""
    cells = {p: PartitionState({"n": totals[p]}, batch) for p in range(3)}
    return [
        piece("w0", 0, {(sid, 0): cells[0], (sid, 2): cells[2]}),
        piece("w1", 0, {(sid, 1): cells[1]}),
    ]


def ls(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def unpack(payload: bytes) -> tuple[list[int], dict[tuple[int, int], PartitionState]]:
    ids, cells = pickle.loads(payload)
    return ids, cells


async def test_a_complete_group_commits_and_restores_to_any_placement() -> None:
    ck = StateCheckpoints()
    expected = {7: 3}
    assert ck.committed_batch(expected) == {7: None}
    assert ck.commit(group_pieces(9, {0: 1, 1: 2, 2: 3}), expected, None)
    assert ck.committed_batch(expected) == {7: 9}
    assert ck.covered_through([7]) == 9
    assert ck.live_on(expected, SLOTS)  # the live copies are where the pieces came from
    assert not ck.live_on(expected, [SlotRef("w1", 0), SlotRef("w0", 0)])
    # Restore onto three slots: partition p goes to slot p % 3.
    three = [SlotRef("w0", 0), SlotRef("w1", 0), SlotRef("w2", 0)]
    payloads = ck.restore_payloads(expected, three, 9)
    assert set(payloads) == {("w0", 0), ("w1", 0), ("w2", 0)}
    for p, slot in enumerate(three):
        ids, cells = unpack(payloads[(slot.worker, slot.slot)])
        assert ids == [7]
        assert cells == {(7, p): PartitionState({"n": p + 1}, 9)}
    assert ck.live_on(expected, three)
    assert ck.statistics()["restores"] == 1


async def test_an_incomplete_or_mixed_group_is_not_committed() -> None:
    ck = StateCheckpoints()
    expected = {7: 3}
    pieces = group_pieces(4, {0: 1, 1: 1, 2: 1})
    assert not ck.commit(pieces[:1], expected, None)  # partition 1 missing
    mixed = [pieces[0], piece("w1", 0, {(7, 1): PartitionState({}, 3)})]
    assert not ck.commit(mixed, expected, None)  # batches 4 and 3
    assert ck.committed_batch(expected) == {7: None}
    assert ck.statistics()["commits"] == 0


async def test_no_checkpoint_restores_empty_state_and_clears_stale_copies() -> None:
    ck = StateCheckpoints()
    payloads = ck.restore_payloads({7: 3}, SLOTS, None)
    ids, cells = unpack(payloads[("w0", 0)])
    assert (ids, cells) == ([7], {})
    # On the slot: every partition of state 7 goes (stale, ahead of the checkpoint); other
    # states stay.
    states: dict[tuple[int, int], PartitionState] = {
        (7, 0): PartitionState({"n": 5}, 3),
        (7, 2): PartitionState({"n": 5}, 3),
        (8, 0): PartitionState({"x": 1}, 3),
    }
    restore_states(states, ids, cells)
    assert states == {(8, 0): PartitionState({"x": 1}, 3)}


async def test_invalidate_and_forget_worker_make_live_copies_unknown() -> None:
    ck = StateCheckpoints()
    assert ck.commit(group_pieces(1, {0: 0, 1: 0, 2: 0}), {7: 3}, None)
    ck.forget_worker("w1")
    assert not ck.live_on({7: 3}, SLOTS)
    ck.restore_payloads({7: 3}, SLOTS, 1)
    assert ck.live_on({7: 3}, SLOTS)
    ck.invalidate([7])
    assert not ck.live_on({7: 3}, SLOTS)
    assert ck.committed_batch({7: 3}) == {7: 1}  # the checkpoint itself stays


async def test_a_released_state_drops_its_checkpoint() -> None:
    ck = StateCheckpoints()
    assert ck.commit(group_pieces(1, {0: 0, 1: 0, 2: 0}), {7: 3}, None)
    ck.release(7)
    assert ck.committed_batch({7: 3}) == {7: None}
    assert ck.statistics()["partitions"] == 0


async def test_directory_storage_writes_whole_files_and_restores_from_them(
    tmp_path: Path,
) -> None:
    ck = StateCheckpoints(tmp_path)
    expected = {7: 3}
    for batch in range(1, 30):
        assert ck.commit(group_pieces(batch, {0: batch, 1: 2 * batch, 2: 0}), expected, None)
    assert await asyncio.to_thread(ck.flush, 10.0)
    ck.statistics()  # the registry takes the written files from the writer's queue
    names = await asyncio.to_thread(ls, tmp_path)
    assert len(names) == 1  # older files deleted once nothing refers to them; no temp file
    assert names[0].startswith(FILE_PREFIX)
    # Commits came faster than the disk: some were skipped, never the last one.
    assert 1 <= ck.statistics()["files_written"] <= 29
    cells: dict[Any, PartitionState] = read_checkpoint_file(tmp_path / names[0])
    assert cells[(7, 1)] == PartitionState({"n": 58}, 29)
    # The cells now point at the file: restoring reads it.
    payloads = ck.restore_payloads(expected, SLOTS, 29)
    _ids, restored = unpack(payloads[("w1", 0)])
    assert restored == {(7, 1): PartitionState({"n": 58}, 29)}
    assert ck.statistics()["storage"] == "directory"
    ck.close()
