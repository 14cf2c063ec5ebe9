"""FileSource and FileSink on a real directory (no engine); also the protocol basics."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adrizzle.connectors.base import Sink, SinkWriter, Source, SourceReader
from adrizzle.connectors.files import FileSink, FileSource, partition_of
from adrizzle.errors import AdrizzleError, SinkError, SourceError

pytestmark = pytest.mark.timeout(60)


def publish(directory: Path, name: str, text: str) -> None:
    """The producer protocol: write under a hidden name, then rename into place."""
    tmp = directory / f".{name}.tmp"
    tmp.write_text(text)
    os.rename(tmp, directory / name)


def settled(source: FileSource) -> None:
    time.sleep(source.settle + 0.02)


def test_reads_new_files_in_order_whole_with_a_cap(tmp_path: Path) -> None:
    source = FileSource(tmp_path, "*.log", settle=0.02)
    assert isinstance(source, Source)
    assert source.partitions() == 1
    reader = source.reader(0)
    assert isinstance(reader, SourceReader)
    pos = reader.initial()
    assert pos is None
    assert reader.read(pos, None, None) == ([], None)
    for i in range(4):
        publish(tmp_path, f"f{i}.log", f"a{i}\nb{i}\n")
        time.sleep(0.005)
    publish(tmp_path, "ignored.txt", "x\n")
    (tmp_path / ".hidden.log").write_text("x\n")
    settled(source)
    records, pos = reader.read(pos, None, 3)  # files are whole: 2 + 2 > 3
    assert records == ["a0", "b0"]
    assert pos[1] == "f0.log"
    assert json.loads(json.dumps(pos)) == pos  # JSON-compatible
    records, pos = reader.read(pos, None, 4)
    assert records == ["a1", "b1", "a2", "b2"]
    records, pos = reader.read(pos, None, 1)  # a file bigger than the cap is one batch
    assert records == ["a3", "b3"]
    assert reader.read(pos, None, None) == ([], pos)
    publish(tmp_path, "g.log", "late\n")
    assert reader.read(pos, None, None) == ([], pos)  # not settled yet
    settled(source)
    assert reader.read(pos, None, None)[0] == ["late"]


def test_replay_takes_exactly_the_same_files(tmp_path: Path) -> None:
    source = FileSource(tmp_path, settle=0.02, parse=lambda name, data: [(name, len(data))])
    reader = source.reader(0)
    for i in range(3):
        publish(tmp_path, f"f{i}", "x" * i)
    settled(source)
    first, end = reader.read(None, None, 2)
    publish(tmp_path, "f3", "later")
    settled(source)
    assert first == [("f0", 0), ("f1", 1)]
    assert reader.read(None, end, 1) == (first, end)
    assert source.reader(0).read(None, end, None) == (first, end)
    rest, _end = reader.read(end, None, None)
    assert rest == [("f2", 2), ("f3", 5)]
    (tmp_path / "f1").unlink()
    with pytest.raises(SourceError, match="'f1' is gone or was changed") as info:
        reader.read(None, end, None)
    assert info.value.partition == 0


def test_partitions_split_files_and_latest_skips_present(tmp_path: Path) -> None:
    names = [f"n{i}" for i in range(12)]
    for name in names:
        publish(tmp_path, name, name + "\n")
    source = FileSource(tmp_path, partitions=3, settle=0.02)
    settled(source)
    seen: list[str] = []
    for p in range(3):
        records, _ = source.reader(p).read(None, None, None)
        assert sorted(records) == sorted(n for n in names if partition_of(n, 3) == p)
        seen += records
    assert sorted(seen) == sorted(names)
    latest = FileSource(tmp_path, partitions=3, start="latest", settle=0.02)
    reader = latest.reader(partition_of("new", 3))
    pos = reader.initial()
    publish(tmp_path, "new", "new\n")
    settled(latest)
    assert reader.read(pos, None, None)[0] == ["new"]


def test_commit_can_delete_taken_files(tmp_path: Path) -> None:
    source = FileSource(tmp_path, settle=0.0, delete_committed=True)
    for i in range(3):
        publish(tmp_path, f"f{i}", "x\n")
    reader = source.reader(0)
    _records, end = reader.read(None, None, 2)
    source.commit(0, end)
    source.commit(0, end)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f2"]


def test_missing_directory_and_bad_files_are_source_errors(tmp_path: Path) -> None:
    gone = tmp_path / "nope"
    source = FileSource(gone)
    with pytest.raises(SourceError, match="does not exist"):
        source.partitions()
    with pytest.raises(SourceError, match=r"partition 0: cannot list .*FileNotFoundError"):
        source.reader(0).read(None, None, None)
    publish(tmp_path, "bad", "\xff")
    (tmp_path / "bad").write_bytes(b"\xff\xfe")
    reader = FileSource(tmp_path, settle=0.0).reader(0)
    with pytest.raises(SourceError, match="cannot parse 'bad': UnicodeDecodeError"):
        reader.read(None, None, None)
    with pytest.raises(ValueError, match="start must be"):
        FileSource(tmp_path, start="middle")


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("publish"), st.integers(1, 3)),
            st.tuples(st.just("read"), st.one_of(st.none(), st.integers(1, 5))),
            st.tuples(st.just("replay"), st.integers(0, 50)),
        ),
        max_size=15,
    )
)
def test_interleavings_match_a_model(tmp_path_factory: Any, steps: list[tuple[str, Any]]) -> None:
    """Every file published is read exactly once, in publishing order; replays repeat."""
    directory = tmp_path_factory.mktemp("files")
    source = FileSource(directory, settle=0.0)
    reader = source.reader(0)
    published: list[str] = []
    got: list[str] = []
    pos = reader.initial()
    history: list[tuple[Any, Any, list[Any]]] = []
    for op, arg in steps:
        if op == "publish":
            for _ in range(arg):
                name = f"f{len(published):04d}"
                publish(directory, name, name + "\n")
                published.append(name)
                time.sleep(0.011)  # past a coarse ctime tick: publishing order is ctime order
        elif op == "read":
            records, new = reader.read(pos, None, arg)
            if records:
                history.append((pos, new, records))
            got += records
            pos = new
        elif history:
            start, end, records = history[arg % len(history)]
            assert reader.read(start, end, 1) == (records, end)
    got += reader.read(pos, None, None)[0]
    assert got == published


# -- FileSink --------------------------------------------------------------------------------


def test_file_sink_writes_each_batch_once(tmp_path: Path) -> None:
    sink = FileSink(tmp_path)
    assert isinstance(sink, Sink)
    writer = sink.writer("counts", 3)
    assert isinstance(writer, SinkWriter)
    assert writer.committed() is None
    assert writer.write(0, [("a", 1), "b"]) is True
    assert writer.write(0, [("zzz", 9)]) is False
    assert writer.write(1, []) is True
    assert (tmp_path / "counts" / "000000000000-00003").read_text() == '["a", 1]\n"b"\n'
    assert (tmp_path / "counts" / "000000000001-00003").read_text() == ""
    other = sink.writer("counts", 3)
    assert other.committed() == 1
    assert other.write(1, ["again"]) is False
    assert sink.writer("counts", 4).committed() is None
    # a second writer racing on a batch the first has not recorded yet: the link refuses it
    late = sink.writer("counts", 3)
    late._scanned, late._last = True, None
    assert late.write(1, ["dup"]) is False
    assert sorted(p.name for p in (tmp_path / "counts").iterdir()) == [
        "000000000000-00003",
        "000000000001-00003",
    ]
    copy = pickle.loads(cloudpickle.dumps(sink))
    assert copy.writer("counts", 3).committed() == 1


def test_file_sink_errors_name_sink_partition_batch(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    writer = FileSink(blocker).writer("s", 1)
    with pytest.raises(SinkError) as info:
        writer.write(4, ["x"])
    assert str(info.value).startswith(f"FileSink({str(blocker)!r}), partition 1, batch 4")
    assert "NotADirectoryError" in str(info.value)
    writer = FileSink(tmp_path / "ok").writer("s", 0)
    with pytest.raises(SinkError, match="batch 0: TypeError"):
        writer.write(0, [object()])
    assert writer.committed() is None
    with pytest.raises(ValueError, match="plain file name"):
        FileSink(tmp_path).writer("../escape", 0)


def test_errors_are_adrizzle_errors_and_pickle() -> None:
    err = SourceError("S", "cause", partition=2)
    assert isinstance(err, AdrizzleError)
    assert str(err) == "S, partition 2: cause"
    moved = pickle.loads(pickle.dumps(err.at_batch(9)))
    assert (type(moved), str(moved), moved.batch) == (
        SourceError,
        "S, partition 2, batch 9: cause",
        9,
    )


def test_import_adrizzle_imports_no_client() -> None:
    code = (
        "import sys, adrizzle, adrizzle.connectors, adrizzle.connectors.files;"
        "print(sorted(m for m in ('redis', 'confluent_kafka', 'psycopg') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stderr


def test_connectors_import_nothing_from_the_engine() -> None:
    root = Path(__file__).resolve().parents[2] / "adrizzle" / "connectors"
    for module in root.glob("*.py"):
        text = module.read_text()
        for part in ("adrizzle.api", "adrizzle.driver", "adrizzle.worker"):
            assert part not in text, (module.name, part)
        assert len(text.splitlines()) <= 500, module.name
