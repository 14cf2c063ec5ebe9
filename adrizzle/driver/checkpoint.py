"""Stream state checkpoints on the driver: the last consistent copy of every state, and where
its live copies are.

A slot sends the state a group changed (``state_checkpoint``, one pickled piece per slot) when
it finishes a group launched with ``checkpoint``. The run hands a group's pieces here once every
worker has acknowledged the group (``commit``), and only if they cover every partition of every
state at one micro-batch, so a committed checkpoint is always consistent: all partitions at the
group's last batch. Pieces stay pickled; the driver opens them only to restore, which ships
each slot the cells of the partitions it owns with the first group of a run
(``restore_payloads``): after a loss (the stream then replays the batches since the checkpoint
from its replayable source) or when partitions move to other slots (a worker joined or left).

Storage: driver memory by default, or a directory (``checkpoint_dir``), where a writer thread
writes each commit as a file (``adrizzle.driver.checkpoint_files``: the format, atomic writes,
the one reader); when commits come faster than the disk takes them, only the newest is written.
The registry itself has no thread and no loop: it takes the writer's finished files from a
queue whenever it is next called. Memory
holds a commit until its file is written, then only the file's name; files no longer
referenced are deleted. A file also names its states (``state-0``, ``state-1``, ... in the
order the stream created them), so a new driver running the same pipeline with the same
directory resumes from it (``resume``).
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adrizzle.driver.checkpoint_files import (
    CheckpointWriter,
    Key,
    Piece,
    checkpoint_files,
    read_checkpoint,
    unlink,
)
from adrizzle.errors import StateOrderError

if TYPE_CHECKING:
    import os
    from collections.abc import Iterable

    from adrizzle.driver.placement import SlotRef

log = logging.getLogger("adrizzle.driver")


@dataclasses.dataclass(frozen=True, slots=True)
class FileRef:
    """A piece written to a checkpoint file: ``pieces[index]`` of the file at ``path``."""

    path: Path
    index: int


@dataclasses.dataclass(slots=True)
class _Cell:
    batch: int
    where: bytes | FileRef  # the piece holding it: in memory, or in a file


class StateCheckpoints:
    """Engine-wide registry of stream state checkpoints (see the module docstring)."""

    def __init__(self, default_dir: str | os.PathLike[str] | None = None) -> None:
        self.default_dir = Path(default_dir) if default_dir is not None else None
        self._cells: dict[Key, _Cell] = {}
        self._location: dict[Key, tuple[str, int]] = {}
        self._writers: dict[Path, CheckpointWriter] = {}
        self._files: dict[Path, int] = {}  # checkpoint file -> cells referring to it
        self._seq = 0
        # Filled by weakref finalizers, which may run at any bytecode boundary: append only.
        self._release_queue: list[int] = []
        self.commits = 0
        self.restores = 0
        self.files_written = 0
        self.bytes_committed = 0

    # -- from runs ----------------------------------------------------------------------

    def commit(
        self,
        pieces: list[Piece],
        expected: dict[int, int],
        directory: Path | None,
        names: dict[int, str] | None = None,
    ) -> bool:
        """File one group's pieces if they hold every partition of every expected state
        (``state id -> partitions``) at one micro-batch; return whether they did."""
        self._process_releases()
        batches = {b for piece in pieces for b in piece.batches}
        got = {key for piece in pieces for key in piece.keys}
        needed = {(sid, p) for sid, n in expected.items() for p in range(n)}
        if len(batches) != 1 or not needed <= got:
            log.warning(
                "incomplete state checkpoint (%d of %d partitions, batches %s): not committed",
                len(needed & got),
                len(needed),
                sorted(batches)[:5],
            )
            return False
        for piece in pieces:
            for key, batch in zip(piece.keys, piece.batches, strict=True):
                self._drop_cell(key)
                self._cells[key] = _Cell(batch, piece.blob)
                self._location[key] = (piece.worker, piece.slot)
            self.bytes_committed += len(piece.blob)
        self.commits += 1
        directory = directory or self.default_dir
        if directory is not None:
            writer = self._writers.get(directory)
            if writer is None:
                writer = self._writers[directory] = CheckpointWriter(directory)
                # Number on from an earlier driver's files: the newest file is the last one.
                files = checkpoint_files(directory)
                self._seq = max(self._seq, files[-1][0] if files else 0)
            self._seq += 1
            writer.submit(self._seq, pieces, dict(names or {}))
        return True

    def committed_batch(self, expected: dict[int, int]) -> dict[int, int | None]:
        """Per state: the micro-batch its committed checkpoint is at (None: none, or not of
        every partition)."""
        self._process_releases()
        out: dict[int, int | None] = {}
        for sid, n in expected.items():
            cells = [self._cells.get((sid, p)) for p in range(n)]
            batches = {c.batch for c in cells if c is not None}
            out[sid] = batches.pop() if len(batches) == 1 and all(cells) else None
        return out

    def covered_through(self, state_ids: Iterable[int]) -> int | None:
        """The oldest batch any partition of these states is checkpointed at (None: some
        partition has no checkpoint)."""
        self._process_releases()
        ids = set(state_ids)
        batches = [c.batch for k, c in self._cells.items() if k[0] in ids]
        return min(batches) if batches else None

    def live_on(self, expected: dict[int, int], slots: list[SlotRef]) -> bool:
        """Whether every partition's live state is on the slot this placement gives it."""
        n = len(slots)
        if not n:
            return False
        for sid, parts in expected.items():
            for p in range(parts):
                slot = slots[p % n]
                if self._location.get((sid, p)) != (slot.worker, slot.slot):
                    return False
        return True

    def invalidate(self, state_ids: Iterable[int]) -> None:
        """The live copies of these states can no longer be trusted (a run was rolled back)."""
        ids = set(state_ids)
        for key in [k for k in self._location if k[0] in ids]:
            del self._location[key]

    def forget_worker(self, worker: str) -> None:
        for key in [k for k, where in self._location.items() if where[0] == worker]:
            del self._location[key]

    def restore_payloads(
        self, expected: dict[int, int], slots: list[SlotRef], batch: int | None
    ) -> dict[tuple[str, int], bytes]:
        """Per slot of the placement: the pickled ``(state ids, {key: PartitionState})`` of
        its partitions as committed (``batch`` None: no checkpoint, every state starts empty).
        The live copies are then on these slots."""
        n = len(slots)
        opened: dict[int, dict[Key, Any]] = {}
        files: dict[Path, list[Any]] = {}
        per_slot: dict[tuple[str, int], dict[Key, Any]] = {(s.worker, s.slot): {} for s in slots}
        for sid, parts in expected.items():
            for p in range(parts):
                slot = slots[p % n]
                where = (slot.worker, slot.slot)
                self._location[(sid, p)] = where
                cell = self._cells.get((sid, p))
                if batch is None or cell is None or cell.batch != batch:
                    continue
                per_slot[where][(sid, p)] = self._open(cell, opened, files)[(sid, p)]
        self.restores += 1
        ids = sorted(expected)
        return {where: pickle.dumps((ids, cells)) for where, cells in per_slot.items()}

    def _open(
        self, cell: _Cell, opened: dict[int, dict[Key, Any]], files: dict[Path, list[Any]]
    ) -> dict[Key, Any]:
        where = cell.where
        if isinstance(where, FileRef):
            pieces = files.get(where.path)
            if pieces is None:
                pieces = files[where.path] = read_checkpoint(where.path).pieces
            blob: bytes = pieces[where.index][2]
        else:
            blob = where
        cells = opened.get(id(blob))
        if cells is None:
            cells = opened[id(blob)] = pickle.loads(blob)
        return cells

    # -- storage -------------------------------------------------------------------------

    def _written(self, seq: int, path: Path, pieces: list[Piece]) -> None:
        """A commit is on disk; cells still holding its pieces point there."""
        self.files_written += 1
        refs = 0
        for index, piece in enumerate(pieces):
            for key in piece.keys:
                cell = self._cells.get(key)
                if cell is not None and cell.where is piece.blob:
                    cell.where = FileRef(path, index)
                    refs += 1
        if refs:
            self._files[path] = self._files.get(path, 0) + refs
        else:
            sids = {key[0] for piece in pieces for key in piece.keys}
            if any(key[0] in sids for key in self._cells):
                unlink(path)  # superseded while it was being written
            return  # else the stream was released meanwhile: its last file stays
        # Older files nothing refers to (an earlier driver's, once resumed from) go.
        for old_seq, old_path in checkpoint_files(path.parent):
            if old_seq < seq and old_path not in self._files:
                unlink(old_path)

    def _drop_cell(self, key: Key, superseded: bool = True) -> None:
        """Forget a cell; its file goes once no cell refers to it and a newer one replaced it
        (a released stream's last file stays: a later driver may resume from it)."""
        old = self._cells.pop(key, None)
        if old is not None and isinstance(old.where, FileRef):
            path = old.where.path
            left = self._files.get(path, 0) - 1
            if left > 0:
                self._files[path] = left
            else:
                self._files.pop(path, None)
                if superseded:
                    unlink(path)

    def release(self, state_id: int) -> None:
        """Finalizer callback: the stream owning ``state_id`` is gone."""
        self._release_queue.append(state_id)

    def _process_releases(self) -> None:
        """Apply what happened off the loop: streams collected (finalizers) and checkpoint
        files written (the writer threads)."""
        for writer in self._writers.values():
            while writer.written:
                self._written(*writer.written.popleft())
        while self._release_queue:
            sid = self._release_queue.pop()
            for key in [k for k in self._cells if k[0] == sid]:
                self._drop_cell(key, superseded=False)
            for key in [k for k in self._location if k[0] == sid]:
                del self._location[key]

    def resume(self, directory: Path, states: dict[int, tuple[str, int]]) -> int | None:
        """Load the newest checkpoint file of ``directory`` (an earlier driver's) for states
        ``{state id: (name, partitions)}``; return its micro-batch, or None without a file.
        A file of other states (another pipeline) is refused with a clear error."""
        files = checkpoint_files(directory)
        if not files:
            return None
        path = files[-1][1]
        body = read_checkpoint(path)
        names = body.names
        by_name = {name: sid for sid, (name, _parts) in states.items()}
        if sorted(names.values()) != sorted(by_name):
            raise StateOrderError(
                f"checkpoint {path} holds states {sorted(names.values())} but this stream has "
                f"{sorted(by_name)}: it was written by another pipeline (use another "
                "checkpoint_dir, or remove the old files)"
            )
        cells: dict[Key, Any] = {}
        for (old_sid, p), cell in body.cells().items():
            cells[(by_name[names[old_sid]], p)] = cell
        for sid, (name, parts) in states.items():
            have = sorted(p for (s, p) in cells if s == sid)
            if have != list(range(parts)):
                raise StateOrderError(
                    f"checkpoint {path}: state {name} has partitions {have[:10]}, this stream "
                    f"{parts}: the partition count cannot change across a restart"
                )
        batches = {cell.batch for cell in cells.values()}
        if len(batches) != 1:
            raise StateOrderError(f"checkpoint {path} mixes micro-batches {sorted(batches)}")
        blob = pickle.dumps(cells)  # one piece, re-keyed to this driver's state ids
        for key, cell in cells.items():
            self._drop_cell(key)
            self._cells[key] = _Cell(cell.batch, blob)
            self._location.pop(key, None)
        batch: int = batches.pop()
        log.info("resuming from checkpoint %s (micro-batch %d)", path, batch)
        return batch

    @property
    def writing(self) -> bool:
        """Whether some checkpoints go to a directory."""
        return bool(self._writers)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait (blocking) until every commit submitted to a directory is written (the
        registry learns of the files at its next call)."""
        return all(w.flush(timeout) for w in self._writers.values())

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        for writer in self._writers.values():
            writer.close()

    def statistics(self) -> dict[str, Any]:
        self._process_releases()
        return {
            "storage": "directory" if self.default_dir or self._writers else "memory",
            "commits": self.commits,
            "restores": self.restores,
            "partitions": len(self._cells),
            "bytes_committed": self.bytes_committed,
            "files_written": self.files_written,
            "write_errors": sum(w.errors for w in self._writers.values()),
        }
