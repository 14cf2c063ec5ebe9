"""File connectors: ``FileSource`` reads the files that appear in a directory, ``FileSink``
writes one file per micro-batch and partition. Standard library only.

Source ordering: a file's place is ``(st_ctime_ns, name)``. On Linux ``ctime`` is set when a
file is renamed into the directory (and on any later change to it), so a file that *appears*
later never sorts before one that appeared earlier, which ``mtime`` does not give (a file
written at t=1 and renamed into place at t=5 keeps mtime 1). Timestamps are coarse (a clock
tick, a few ms), so a read only takes files whose ctime is more than ``settle`` seconds old:
every file that can still appear sorts after them, and the position (the last file taken)
then names a fixed set of files.
"""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adrizzle.connectors.base import Position, check_cap, check_start, describe
from adrizzle.errors import SinkError, SourceError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

FileKey = tuple[int, str]  # (st_ctime_ns, name)


def partition_of(name: str, partitions: int) -> int:
    """The partition a file name belongs to: CRC-32 of the name (stable across processes)."""
    return zlib.crc32(name.encode("utf-8", "surrogateescape")) % partitions


def lines(name: str, data: bytes) -> list[str]:
    """``FileSource``'s default parser: the file's lines (UTF-8), without line endings."""
    return data.decode("utf-8").splitlines()


class FileSource:
    """The files of ``directory`` whose names match ``pattern`` (``fnmatch``; names starting
    with "." are never read), each file in one partition (``crc32(name) % partitions``).

    A record is each line of a file (str, without its line ending), or whatever
    ``parse(name, data)`` returns for the file's bytes (a picklable function). Files are taken
    whole, oldest first (see the module doc); a read takes files while their records fit in
    ``max_records`` (always at least one file, so a file larger than the cap is one batch).

    Producers must make each file appear atomically and never change it afterwards: write it
    under a name starting with "." (or not matching ``pattern``) in the same directory, fsync,
    then ``os.rename`` it to its final name; no ``touch``, ``chmod`` or hard links later (they
    change ctime, and the file would be read again). Files must stay until ``commit`` covers
    them: with ``delete_committed=True``, ``commit(p, end)`` (on the driver, which must see the
    same directory) deletes the partition's files up to ``end``.

    Position: None before the first file, else ``[ctime_ns, name]`` of the last file taken.
    ``start="latest"`` skips the files present when the reader resolves it.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        pattern: str = "*",
        *,
        partitions: int = 1,
        start: str = "earliest",
        parse: Callable[[str, bytes], Iterable[Any]] = lines,
        max_records_per_batch: int | None = None,
        settle: float = 0.05,
        delete_committed: bool = False,
        name: str | None = None,
    ) -> None:
        if not isinstance(partitions, int) or partitions < 1:
            raise ValueError(f"partitions must be a positive int, not {partitions!r}")
        if settle < 0:
            raise ValueError("settle must be >= 0")
        self.directory = Path(directory)
        self.pattern = pattern
        self.num_partitions = partitions
        self.start = check_start(start)
        self.parse = parse
        self.max_records_per_batch = check_cap(max_records_per_batch)
        self.settle = settle
        self.delete_committed = delete_committed
        self.name = name or f"FileSource({str(self.directory)!r}, {pattern!r})"

    def error(self, cause: str, partition: int | None = None) -> SourceError:
        return SourceError(self.name, cause, partition=partition)

    def partitions(self) -> int:
        if not self.directory.is_dir():
            raise self.error(f"directory {str(self.directory)!r} does not exist")
        return self.num_partitions

    def files(self, partition: int) -> list[FileKey]:
        """The partition's files now, oldest first."""
        found: list[FileKey] = []
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(".") or not fnmatch.fnmatchcase(name, self.pattern):
                        continue
                    if partition_of(name, self.num_partitions) != partition:
                        continue
                    try:
                        if entry.is_file():
                            found.append((entry.stat().st_ctime_ns, name))
                    except FileNotFoundError:  # removed while we listed
                        continue
        except OSError as exc:
            raise self.error(
                f"cannot list {str(self.directory)!r}: {describe(exc)}", partition
            ) from exc
        found.sort()
        return found

    def reader(self, partition: int) -> FileReader:
        if not 0 <= partition < self.num_partitions:
            raise ValueError(f"{self.name} has no partition {partition}")
        return FileReader(self, partition)

    def commit(self, partition: int, end: Position) -> None:
        if not self.delete_committed or end is None:
            return
        bound = _key(end)
        for key in self.files(partition):
            if key > bound:
                break
            try:
                (self.directory / key[1]).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self.error(f"cannot delete {key[1]!r}: {describe(exc)}", partition) from exc

    def close(self) -> None:
        pass


def _key(position: Position) -> FileKey:
    ctime, name = position
    return int(ctime), str(name)


class FileReader:
    """Reads one partition of a ``FileSource``."""

    def __init__(self, source: FileSource, partition: int) -> None:
        self.source = source
        self.partition = partition

    def _error(self, cause: str) -> SourceError:
        return self.source.error(cause, self.partition)

    def initial(self) -> Position:
        if self.source.start == "earliest":
            return None
        files = self.source.files(self.partition)
        return list(files[-1]) if files else None

    def read(
        self, start: Position, end: Position | None, max_records: int | None
    ) -> tuple[list[Any], Position]:
        try:
            after = None if start is None else _key(start)
            upto = None if end is None else _key(end)
        except (TypeError, ValueError) as exc:
            raise self._error(f"bad position {start!r}, {end!r}: {describe(exc)}") from exc
        if end is not None and end == start:
            return [], start
        files = [k for k in self.source.files(self.partition) if after is None or k > after]
        if upto is not None:
            taken = [k for k in files if k <= upto]
            if not taken or taken[-1] != upto:
                raise self._error(
                    f"cannot replay files ({start}, {end}]: {upto[1]!r} is gone or was changed"
                )
            return [r for k in taken for r in self._records(k)], end
        horizon = time.time_ns() - round(self.source.settle * 1e9)
        records: list[Any] = []
        last: FileKey | None = None
        for key in files:
            if key[0] >= horizon:
                break
            got = self._records(key)
            full = max_records is not None and len(records) + len(got) > max_records
            if last is not None and full:
                break
            records.extend(got)
            last = key
        return (records, list(last)) if last is not None else ([], start)

    def _records(self, key: FileKey) -> list[Any]:
        path = self.source.directory / key[1]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise self._error(f"cannot read {key[1]!r}: {describe(exc)}") from exc
        try:
            return list(self.source.parse(key[1], data))
        except Exception as exc:
            raise self._error(f"cannot parse {key[1]!r}: {describe(exc)}") from exc

    def close(self) -> None:
        pass


def json_lines(records: list[Any]) -> bytes:
    """``FileSink``'s default format: one JSON document per record and line (tuples become
    arrays)."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


class FileSink:
    """One file per micro-batch and partition: ``{directory}/{stream}/{batch:012d}-{p:05d}``.

    ``write`` serializes the records (``serialize(records) -> bytes``; default JSON lines) to a
    hidden temporary file in the same directory, fsyncs it, then hard-links it to its final
    name (which fails if that name exists: a replay writes nothing and returns False), removes
    the temporary name and fsyncs the directory. An empty batch is an empty file: the files
    present are the progress, and ``committed()`` is the largest batch among them.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        serialize: Callable[[list[Any]], bytes] = json_lines,
        name: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.serialize = serialize
        self.name = name or f"FileSink({str(self.directory)!r})"

    def path(self, stream: str, batch: int, partition: int) -> Path:
        return self.directory / stream / f"{batch:012d}-{partition:05d}"

    def writer(self, stream: str, partition: int) -> FileSinkWriter:
        if not stream or stream in (".", "..") or "/" in stream or os.sep in stream:
            raise ValueError(f"a stream name must be a plain file name, not {stream!r}")
        return FileSinkWriter(self, stream, partition)


class FileSinkWriter:
    """Writes one (stream, partition) of a ``FileSink``; see there."""

    def __init__(self, sink: FileSink, stream: str, partition: int) -> None:
        self.sink = sink
        self.stream = stream
        self.partition = partition
        self.folder = sink.directory / stream
        self._last: int | None = None
        self._scanned = False

    def _error(self, cause: str, batch: int | None) -> SinkError:
        return SinkError(self.sink.name, cause, partition=self.partition, batch=batch)

    def committed(self) -> int | None:
        return self._scan(None)

    def _scan(self, batch: int | None) -> int | None:
        """The last batch present (listed once, then kept up to date by ``write``)."""
        if not self._scanned:
            suffix = f"-{self.partition:05d}"
            batches = []
            try:
                with os.scandir(self.folder) as entries:
                    for entry in entries:
                        head, _, tail = entry.name.partition("-")
                        if entry.name.endswith(suffix) and f"-{tail}" == suffix and head.isdigit():
                            batches.append(int(head))
            except FileNotFoundError:
                pass
            except OSError as exc:
                cause = f"cannot list {str(self.folder)!r}: {describe(exc)}"
                raise self._error(cause, batch) from exc
            self._last = max(batches, default=None)
            self._scanned = True
        return self._last

    def write(self, batch: int, records: list[Any]) -> bool:
        last = self._scan(batch)
        if last is not None and batch <= last:
            return False
        final = self.sink.path(self.stream, batch, self.partition)
        tmp = self.folder / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            data = self.sink.serialize(records)
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                try:
                    os.link(tmp, final)
                except FileExistsError:
                    self._last = max(batch, last if last is not None else batch)
                    return False
            finally:
                tmp.unlink(missing_ok=True)
            dirfd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
        except (OSError, TypeError, ValueError) as exc:
            raise self._error(f"{describe(exc)}; nothing committed", batch) from exc
        self._last = batch
        return True

    def close(self) -> None:
        pass
