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

Storage: driver memory by default, or a directory (``checkpoint_dir``). With a directory each
commit is written by a writer thread to ``ckpt-<seq>.pkl`` (a temporary file, fsync, rename,
fsync of the directory: a reader finds a whole checkpoint or the one before, never half of
one); when commits come faster than the disk takes them, only the newest is written. Memory
holds a commit until its file is written, then only the file's name; files no longer
referenced are deleted. A file also names its states (``state-0``, ``state-1``, ... in the
order the stream created them), so a new driver running the same pipeline with the same
directory resumes from it (``resume``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adrizzle.errors import StateOrderError

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterable

    from adrizzle.driver.placement import SlotRef

log = logging.getLogger("adrizzle.driver")

Key = tuple[int, int]  # (state id, partition)
FILE_PREFIX = "ckpt-"


@dataclasses.dataclass(frozen=True, slots=True)
class Piece:
    """One slot's ``state_checkpoint`` for one group: its cells, pickled together."""

    keys: list[Key]
    batches: list[int]
    blob: bytes
    worker: str
    slot: int


@dataclasses.dataclass(frozen=True, slots=True)
class FileRef:
    """A piece written to a checkpoint file: ``pieces[index]`` of the file at ``path``."""

    path: Path
    index: int


@dataclasses.dataclass(slots=True)
class _Cell:
    batch: int
    where: bytes | FileRef  # the piece holding it: in memory, or in a file


class _Writer:
    """Writes commits of one directory, newest first, on a daemon thread."""

    def __init__(self, directory: Path, loop: asyncio.AbstractEventLoop, done: Any) -> None:
        self.directory = directory
        self._loop = loop
        self._done = done  # called on the loop: done(seq, path, pieces)
        self._cond = threading.Condition()
        self._pending: tuple[int, list[Piece], dict[int, str]] | None = None
        self._busy = False
        self._closed = False
        self.errors = 0
        directory.mkdir(parents=True, exist_ok=True)
        threading.Thread(target=self._run, name="adrizzle-checkpoints", daemon=True).start()

    def submit(self, seq: int, pieces: list[Piece], names: dict[int, str]) -> None:
        with self._cond:
            self._pending = (seq, pieces, names)  # supersedes a commit not yet written
            self._cond.notify()

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted is written (False after ``timeout`` s)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending is None and not self._busy, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None:
                    return
                seq, pieces, names = self._pending
                self._pending = None
                self._busy = True
            try:
                path = self._write(seq, pieces, names)
            except OSError as exc:
                self.errors += 1
                log.error("cannot write checkpoint %d to %s: %s", seq, self.directory, exc)
                path = None
            with self._cond:
                self._busy = False
                self._cond.notify_all()
            if path is not None:
                try:
                    self._loop.call_soon_threadsafe(self._done, seq, path, pieces)
                except RuntimeError:  # the loop is closed: nothing left to update
                    return

    def _write(self, seq: int, pieces: list[Piece], names: dict[int, str]) -> Path:
        path = checkpoint_path(self.directory, seq)
        tmp = self.directory / f".{path.name}.tmp"
        body = pickle.dumps(
            {
                "seq": seq,
                "names": names,
                "pieces": [(p.keys, p.batches, p.blob) for p in pieces],
            },
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return path


def checkpoint_path(directory: Path, seq: int) -> Path:
    return directory / f"{FILE_PREFIX}{seq:012d}.pkl"


def checkpoint_files(directory: Path) -> list[tuple[int, Path]]:
    """The directory's checkpoint files as ``(seq, path)``, oldest first."""
    found = []
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    for path in entries:
        name = path.name
        if name.startswith(FILE_PREFIX) and name.endswith(".pkl"):
            try:
                found.append((int(name[len(FILE_PREFIX) : -len(".pkl")]), path))
            except ValueError:
                continue
    return sorted(found)


def read_checkpoint_file(path: Path) -> dict[Key, Any]:
    """Every cell of a checkpoint file (tools, tests): ``{(state, part): PartitionState}``."""
    with open(path, "rb") as f:
        body = pickle.load(f)
    cells: dict[Key, Any] = {}
    for _keys, _batches, blob in body["pieces"]:
        cells.update(pickle.loads(blob))
    return cells


class StateCheckpoints:
    """Engine-wide registry of stream state checkpoints (see the module docstring)."""

    def __init__(self, default_dir: str | os.PathLike[str] | None = None) -> None:
        self.default_dir = Path(default_dir) if default_dir is not None else None
        self._cells: dict[Key, _Cell] = {}
        self._location: dict[Key, tuple[str, int]] = {}
        self._writers: dict[Path, _Writer] = {}
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
        loop: asyncio.AbstractEventLoop,
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
                writer = self._writers[directory] = _Writer(directory, loop, self._written)
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
                with open(where.path, "rb") as f:
                    pieces = files[where.path] = pickle.load(f)["pieces"]
            blob: bytes = pieces[where.index][2]
        else:
            blob = where
        cells = opened.get(id(blob))
        if cells is None:
            cells = opened[id(blob)] = pickle.loads(blob)
        return cells

    # -- storage -------------------------------------------------------------------------

    def _written(self, seq: int, path: Path, pieces: list[Piece]) -> None:
        """On the loop: a commit is on disk; cells still holding its pieces point there."""
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
                self._unlink(path)  # superseded while it was being written
            return  # else the stream was released meanwhile: its last file stays
        # Older files nothing refers to (an earlier driver's, once resumed from) go.
        for old_seq, old_path in checkpoint_files(path.parent):
            if old_seq < seq and old_path not in self._files:
                self._unlink(old_path)

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
                    self._unlink(path)

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass

    def release(self, state_id: int) -> None:
        """Finalizer callback: the stream owning ``state_id`` is gone."""
        self._release_queue.append(state_id)

    def _process_releases(self) -> None:
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
        with open(path, "rb") as f:
            body = pickle.load(f)
        names: dict[int, str] = body.get("names") or {}
        by_name = {name: sid for sid, (name, _parts) in states.items()}
        if sorted(names.values()) != sorted(by_name):
            raise StateOrderError(
                f"checkpoint {path} holds states {sorted(names.values())} but this stream has "
                f"{sorted(by_name)}: it was written by another pipeline (use another "
                "checkpoint_dir, or remove the old files)"
            )
        cells: dict[Key, Any] = {}
        for _keys, _batches, blob in body["pieces"]:
            for (old_sid, p), cell in pickle.loads(blob).items():
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
        """Wait (blocking) until every commit submitted to a directory is written."""
        return all(w.flush(timeout) for w in self._writers.values())

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        for writer in self._writers.values():
            writer.close()

    def statistics(self) -> dict[str, Any]:
        return {
            "storage": "directory" if self.default_dir or self._writers else "memory",
            "commits": self.commits,
            "restores": self.restores,
            "partitions": len(self._cells),
            "bytes_committed": self.bytes_committed,
            "files_written": self.files_written,
            "write_errors": sum(w.errors for w in self._writers.values()),
        }
