"""Exactly once end to end, with real servers and real processes (issue 16).

A producer writes a known multiset of events while the stream runs; the driver program
(tests/integration/connector_app.py, a real process with real local workers) counts them per key
per micro-batch into a sink on the workers. Mid-stream a worker is SIGKILLed, later the driver
itself; it is started again with the same checkpoint directory and runs until the source is
drained. The sink must then hold every event exactly once: nothing missing, nothing twice.
"""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import adrizzle_processes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
KEYS = [f"k{i}" for i in range(7)]


class Driver:
    """The connector app as a subprocess, its stdout read line by line on a thread."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.connector_app", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.batches: list[tuple[int, int]] = []
        self.exited = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("batch "):
                _, b, n = line.split()
                self.batches.append((int(b), int(n)))
            elif line.strip() == "exit":
                self.exited = True

    def wait_batches(self, n: int, timeout: float = 90) -> None:
        """Until ``n`` micro-batches that read records have been delivered."""
        deadline = time.monotonic() + timeout
        while sum(1 for _b, records in self.batches if records) < n:
            if self.proc.poll() is not None:
                raise AssertionError(f"the driver exited early: {self.stderr()}")
            assert time.monotonic() < deadline, f"no {n} batches: {self.stderr()}"
            time.sleep(0.02)

    def workers(self) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            try:  # a worker killed but not yet reaped is a zombie: not a worker any more
                if child.status() != psutil.STATUS_ZOMBIE and "adrizzle" in " ".join(
                    child.cmdline()
                ):
                    found.append(child)
            except psutil.Error:
                continue
        return found

    def kill(self) -> None:
        """SIGKILL the driver; its workers notice the driver is gone and exit."""
        pids = {p.pid for p in self.workers()}
        self.proc.kill()
        self.proc.wait()
        self._close()
        deadline = time.monotonic() + 30
        while pids & set(adrizzle_processes()) and time.monotonic() < deadline:
            time.sleep(0.05)

    def finish(self, timeout: float = 180) -> None:
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        error = self.stderr()
        self._close()
        assert self.proc.returncode == 0, error
        assert self.exited

    def _close(self) -> None:
        self._reader.join(10)
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.proc.stdout.close()
        self.proc.stderr.close()

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        if self.proc.stderr.closed:
            return "(closed)"
        return self.proc.stderr.read()[-4000:]


class Producer(threading.Thread):
    """Writes ``total`` events with random keys through ``write(i, key)``, ~``rate`` per s."""

    def __init__(
        self,
        write: Callable[[int, str], None],
        total: int,
        rate: float,
        finish: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.write, self.total, self.rate, self.finish = write, total, rate, finish
        self.counts: collections.Counter[str] = collections.Counter()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        try:
            for i in range(self.total):
                key = rng.choice(KEYS)
                self.write(i, key)
                self.counts[key] += 1
                if i % 50 == 49:
                    time.sleep(50 / self.rate)
            if self.finish is not None:
                self.finish()
        except BaseException as exc:  # reported by the test
            self.error = exc


def run_with_kills(driver_args: list[str], producer: Producer, done: Path) -> list[int]:
    """Start the app, SIGKILL one worker, then the driver; start it again; finish."""
    producer.start()
    first = Driver(driver_args)
    try:
        first.wait_batches(5)
        victim = first.workers()[0]
        victim.kill()  # mid-stream: records are flowing
        first.wait_batches(20)
    finally:
        first.kill()
    producer.join(120)
    assert producer.error is None, producer.error
    done.write_text("done")
    second = Driver(driver_args)
    second.finish()
    assert second.batches, "the restarted driver ran no batch"
    # It resumed where the first one's offset log says, not from batch 0.
    assert second.batches[0][0] > 0
    return [b for b, _n in first.batches + second.batches]


@pytest.fixture
def pg_table(postgres_dsn: str) -> Iterator[tuple[str, str]]:
    import psycopg

    name = f"counts_{os.getpid()}_{random.randrange(10**9)}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (key text NOT NULL, n bigint NOT NULL)")
    yield postgres_dsn, name
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def table_sums(dsn: str, table: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT key, sum(n)::bigint FROM {table} GROUP BY key").fetchall()
    return {k: int(n) for k, n in rows}


def test_redis_to_postgres_is_exact_across_a_worker_kill_and_a_driver_restart(
    redis_url: str, pg_table: tuple[str, str], tmp_path: Path
) -> None:
    import redis

    dsn, table = pg_table
    streams = [f"ev-{os.getpid()}-{p}-{random.randrange(10**9)}" for p in range(3)]
    client = redis.Redis.from_url(redis_url)

    def write(i: int, key: str) -> None:
        client.xadd(streams[i % 3], {"key": key})

    producer = Producer(write, total=4000, rate=2000)
    done = tmp_path / "done"
    args = [
        "--source", "redis", redis_url, *streams,
        "--sink", "postgres", dsn, table,
        "--checkpoint-dir", str(tmp_path / "ckpt"),
        "--max-records", "40", "--done", str(done), "--name", table,
    ]  # fmt: skip
    run_with_kills(args, producer, done)
    assert table_sums(dsn, table) == dict(producer.counts)


def test_kafka_to_postgres_is_exact_across_a_worker_kill_and_a_driver_restart(
    kafka_bootstrap: str, pg_table: tuple[str, str], tmp_path: Path
) -> None:
    from confluent_kafka import Producer as KafkaProducer
    from confluent_kafka.admin import AdminClient, NewTopic

    dsn, table = pg_table
    topic = f"ev-{os.getpid()}-{random.randrange(10**9)}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    kafka = KafkaProducer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})

    def write(i: int, key: str) -> None:
        kafka.produce(topic, value=key.encode(), partition=i % 3)
        if i % 50 == 49:
            kafka.flush(10)

    producer = Producer(write, total=3000, rate=1500, finish=lambda: kafka.flush(30))
    done = tmp_path / "done"
    args = [
        "--source", "kafka", kafka_bootstrap, topic,
        "--sink", "postgres", dsn, table,
        "--checkpoint-dir", str(tmp_path / "ckpt"),
        "--max-records", "40", "--done", str(done), "--name", table,
    ]  # fmt: skip
    run_with_kills(args, producer, done)
    assert table_sums(dsn, table) == dict(producer.counts)


def test_files_with_state_to_files_are_exact_across_a_worker_kill_and_a_driver_restart(
    tmp_path: Path,
) -> None:
    inbox, out = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    lines: dict[int, list[str]] = collections.defaultdict(list)

    def write(i: int, key: str) -> None:
        lines[i // 20].append(key)
        if i % 20 == 19:  # a file of 20 lines, published atomically
            tmp = inbox / f".f{i // 20:05d}.txt"
            tmp.write_text("".join(f"{k}\n" for k in lines.pop(i // 20)))
            os.rename(tmp, inbox / f"f{i // 20:05d}.txt")

    producer = Producer(write, total=3000, rate=1500)
    done = tmp_path / "done"
    args = [
        "--source", "files", str(inbox), "2",
        "--sink", "files", str(out),
        "--checkpoint-dir", str(tmp_path / "ckpt"),
        "--max-records", "40", "--state", "--done", str(done),
    ]  # fmt: skip
    run_with_kills(args, producer, done)
    # Each batch's file holds the new running totals of the keys it changed; every key's last
    # total must be its exact count (a batch applied twice, or lost, would show here).
    final: dict[str, int] = {}
    for path in sorted((out / "counts").iterdir()):  # batch-major names: last total wins
        for line in path.read_text().splitlines():
            key, total = json.loads(line)
            final[key] = total
    assert final == dict(producer.counts)
