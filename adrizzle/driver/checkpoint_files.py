"""Checkpoint files: the one format, its writer thread and its one reader.

A file ``ckpt-<seq>.pkl`` holds one committed checkpoint of a stream's states: its sequence
number, the names of its states (``state-0``, ``state-1``, ... in the order the stream created
them, stable across drivers) and its pieces, each ``(keys, batches, blob)`` where ``blob`` is a
slot's pickled ``{(state id, partition): PartitionState}``. Written atomically: a temporary
file, fsync, rename, fsync of the directory, so a reader finds a whole checkpoint or the one
before, never half of one.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pickle
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

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
class CheckpointFile:
    """What a checkpoint file holds."""

    seq: int
    names: dict[int, str]  # state id (of the driver that wrote it) -> stable name
    pieces: list[tuple[list[Key], list[int], bytes]]

    def cells(self) -> dict[Key, Any]:
        """Every cell, unpickled: ``{(state id, partition): PartitionState}``."""
        out: dict[Key, Any] = {}
        for _keys, _batches, blob in self.pieces:
            out.update(pickle.loads(blob))
        return out


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


def write_checkpoint(directory: Path, seq: int, pieces: list[Piece], names: dict[int, str]) -> Path:
    """Write one checkpoint atomically; return its path."""
    path = checkpoint_path(directory, seq)
    tmp = directory / f".{path.name}.tmp"
    body = pickle.dumps(
        {"seq": seq, "names": names, "pieces": [(p.keys, p.batches, p.blob) for p in pieces]},
        protocol=pickle.HIGHEST_PROTOCOL,
    )
    with open(tmp, "wb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read_checkpoint(path: Path) -> CheckpointFile:
    """The one reader of the format."""
    with open(path, "rb") as f:
        body = pickle.load(f)
    return CheckpointFile(body["seq"], body.get("names") or {}, body["pieces"])


def read_checkpoint_file(path: Path) -> dict[Key, Any]:
    """Every cell of a checkpoint file (tools, tests): ``{(state, part): PartitionState}``."""
    return read_checkpoint(path).cells()


def unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


class CheckpointWriter:
    """Writes the commits of one directory on a daemon thread, newest first: when commits come
    faster than the disk takes them, only the newest waiting one is written. Each file written
    is appended to ``written`` as ``(seq, path, pieces)`` (a deque: safe to append from the
    thread and pop on the loop's)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.written: collections.deque[tuple[int, Path, list[Piece]]] = collections.deque()
        self.errors = 0
        self._cond = threading.Condition()
        self._pending: tuple[int, list[Piece], dict[int, str]] | None = None
        self._busy = False
        self._closed = False
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
                path: Path | None = write_checkpoint(self.directory, seq, pieces, names)
            except OSError as exc:
                self.errors += 1
                log.error("cannot write checkpoint %d to %s: %s", seq, self.directory, exc)
                path = None
            if path is not None:
                self.written.append((seq, path, pieces))
            with self._cond:
                self._busy = False
                self._cond.notify_all()
