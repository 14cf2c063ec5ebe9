"""``bench.py soak``: fresh engines and one long stateful stream, under load and SIGKILLs.

    python scripts/bench.py soak [--minutes 10] [--engines 20] [--kill-every 30] [--quick]

For ``--minutes`` (``--quick``: 1), with a busy loop per core plus one spinning the whole time:

- **one long stateful stream** on ``Engine.local(workers=3, cores=1)``: a per-key running sum
  (16 keys, ``update_state(..., combine=operator.add)``) over a deterministic, replayable
  source (4 partitions x 250 ints per batch), unpaced, as consecutive ``run()`` calls on the
  same stream (its state kept). Every batch is checked against plain Python: batch numbers
  once and in order, every key's total exact;
- about every ``--kill-every`` s (+-25 %, random) a random worker of that engine is SIGKILLed
  and one is added back (``engine.add_workers(1)``);
- ``--engines`` fresh engines (``Engine.local(workers=2, cores=1)``), one after another across
  the run (the first during the warm-up): each runs three small ``run_jobs`` (single-stage,
  a shuffle, generated batches at group size auto), every answer checked.

A **stall** is a run or the stream without progress for longer than the engines'
``stall_timeout`` (``STALL_TIMEOUT_S``; the engine itself would act then), or a driver warning
"no progress": there must be none. **Memory**: resident set size (psutil) of the driver (this
process) and of the stream engine's workers with their slot processes, after the warm-up and
at the end; each must grow by less than 10 %. Results: bench-results/soak.md, RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import operator
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import adrizzle
from adrizzle_bench import harness
from adrizzle_bench.soak_report import Record, render, summarize

FULL = {"minutes": 10.0, "engines": 20, "kill_every": 30.0}
QUICK = {"minutes": 1.0, "engines": 4, "kill_every": 15.0}
STALL_TIMEOUT_S = 10.0  # the engines' stall_timeout: no run may go this long without progress
RUN_TIMEOUT_S = 60.0  # a run that has not finished by then fails (and is a stall)
JITTER = 0.25
PARTITIONS, RECORDS, KEYS = 4, 250, 16
CHUNK = 500  # stream batches per run() call
WARMUP_BATCHES = 200
SHAPE = {
    "keys": KEYS,
    "partitions": PARTITIONS,
    "records": RECORDS,
    "chunk": CHUNK,
    "warmup_batches": WARMUP_BATCHES,
    "stall_timeout_s": STALL_TIMEOUT_S,
    "jitter": JITTER,
}
# A busy loop that also ends when its parent does (a SIGKILLed benchmark leaves no spinner).
SPIN = "import os\np = os.getppid()\nwhile os.getppid() == p:\n    for _ in range(200_000): pass\n"


# -- the work (imported by name in the slots) ---------------------------------------------


def numbers(batch: int, partition: int) -> range:
    """The source: batch ``batch`` of partition ``partition``, distinct ints (replayable)."""
    start = (batch * PARTITIONS + partition) * RECORDS
    return range(start, start + RECORDS)


def keyed(x: int) -> tuple[int, int]:
    return (x % KEYS, x)


def add_up(values: list[int], total: int | None) -> int:
    return (total or 0) + sum(values)


def mod16_one(x: int) -> tuple[int, int]:
    return (x % 16, 1)


class RunningSums:
    """Plain Python's answer for the stream, batch by batch: ``check`` says what is wrong with
    a delivered batch (None: it is the next batch and every key's total is exact)."""

    def __init__(self) -> None:
        self.totals: dict[int, int] = {}
        self.next_batch = 0

    def check(self, batch: int, values: Iterable[tuple[int, int]]) -> str | None:
        if batch < self.next_batch:
            return f"batch {batch} delivered again (batch {self.next_batch} was next)"
        for b in range(self.next_batch, batch + 1):  # a skipped batch is still in the state
            for p in range(PARTITIONS):
                for x in numbers(b, p):
                    self.totals[x % KEYS] = self.totals.get(x % KEYS, 0) + x
        skipped, self.next_batch = batch - self.next_batch, batch + 1
        if skipped:
            return f"batch {batch} delivered where {batch - skipped} was next"
        got = dict(values)
        if got != self.totals:
            wrong = sorted(
                k for k in self.totals.keys() | got.keys() if got.get(k) != self.totals.get(k)
            )
            return f"batch {batch}: the totals of keys {wrong[:5]} differ from plain Python"
        return None


def note_pids(rec: Record, workers: Iterable[Mapping[str, Any]]) -> None:
    """Remember every worker and slot process seen (to check that none outlives the run)."""
    import psutil

    for w in workers:
        if w.get("pid") is None:
            continue
        rec.pids.add(w["pid"])
        with contextlib.suppress(psutil.NoSuchProcess):
            rec.pids.update(c.pid for c in psutil.Process(w["pid"]).children(recursive=True))


# -- the parts of a soak ------------------------------------------------------------------


@contextlib.contextmanager
def busy_loops(n: int) -> Iterator[list[int]]:
    """``n`` spinning processes for the block's duration, always killed and reaped."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL))
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait(timeout=10)


async def timed_run(
    rec: Record, what: str, run: Awaitable[list[Any]], ok: Callable[[list[Any]], bool]
) -> None:
    """Await one ``run_jobs``; a stall if it took longer than STALL_TIMEOUT_S, a problem if it
    failed or ``ok`` rejects its answer."""
    t0 = time.monotonic()
    try:
        results = await run
    except adrizzle.errors.AdrizzleError as exc:
        rec.problem(f"{what} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        results = None
    took = time.monotonic() - t0
    rec.runs += 1
    rec.slowest_run_s = max(rec.slowest_run_s, took)
    if took > STALL_TIMEOUT_S:
        rec.stall(f"{what} took {took:.1f} s")
    if results is not None and not ok(results):
        rec.problem(f"{what}: wrong answer")


async def fresh_engine(rec: Record, n: int) -> None:
    """A fresh 2-worker engine runs three small jobs, every answer checked against Python."""
    t0 = time.monotonic()
    async with adrizzle.Engine.local(workers=2, cores=1, stall_timeout=STALL_TIMEOUT_S) as e:
        rec.slowest_start_s = max(rec.slowest_start_s, time.monotonic() - t0)
        data = e.parallelize(range(4 * 1000), 4).cache()
        sums = [sum(range(p * 1000, (p + 1) * 1000)) for p in range(4)]
        single = e.run_jobs([data] * 40, sum, group_size=10, timeout=RUN_TIMEOUT_S)
        await timed_run(rec, f"engine {n} single-stage", single, lambda r: r == [sums] * 40)
        counts = sorted((k, 250) for k in range(16))
        shuffled = data.map(mod16_one).reduce_by_key(operator.add, partitions=2)
        shuffle = e.run_jobs([shuffled] * 20, list, group_size=5, timeout=RUN_TIMEOUT_S)
        await timed_run(
            rec,
            f"engine {n} shuffle",
            shuffle,
            lambda r: all(sorted(kv for part in v for kv in part) == counts for v in r),
        )
        batches = [e.generate(functools.partial(numbers, b), PARTITIONS) for b in range(30)]
        want = [[sum(numbers(b, p)) for p in range(PARTITIONS)] for b in range(30)]
        generated = e.run_jobs(batches, sum, group_size="auto", timeout=RUN_TIMEOUT_S)
        await timed_run(rec, f"engine {n} generated", generated, lambda r: r == want)
        await e.wait_settled()
        rec.fresh_recoveries += e.statistics()["recoveries"]
    rec.engines_run += 1


async def fresh_engines(rec: Record, which: range, start: float, deadline: float) -> None:
    """Fresh engines numbered ``which``, one after another, evenly spread from ``start`` to
    ``deadline`` (back to back when they fall behind)."""
    for i, n in enumerate(which):
        due = start + i * (deadline - start) / len(which)
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        try:
            await fresh_engine(rec, n)
        except adrizzle.errors.AdrizzleError as exc:
            rec.problem(f"engine {n} failed: {type(exc).__name__}: {exc}")


async def stream_chunks(
    rec: Record, totals: adrizzle.Stream, check: RunningSums, until: float, once: bool = False
) -> None:
    """``run(CHUNK)`` after ``run(CHUNK)`` of the stream until ``until`` (one with ``once``),
    every batch checked; a failed run ends the stream (the record says why)."""
    last = time.monotonic()
    while once or time.monotonic() < until:
        try:
            async for update in totals.run(
                WARMUP_BATCHES if once else CHUNK, group_size="auto", timeout=RUN_TIMEOUT_S
            ):
                now = time.monotonic()
                if now - last > STALL_TIMEOUT_S:
                    rec.stall(f"the stream went {now - last:.1f} s without a batch")
                rec.longest_pause_s = max(rec.longest_pause_s, now - last)
                last = now
                rec.batches += 1
                problem = check.check(update.batch, update.values)
                if problem is not None:
                    rec.problem(problem)
        except adrizzle.errors.AdrizzleError as exc:
            rec.problem(f"the stream failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            return
        if once:
            return


async def kill_workers(
    rec: Record,
    engine: adrizzle.Engine,
    deadline: float,
    rng: random.Random,
    every: float | None = None,
) -> None:
    """About every ``every`` s (default ``kill_every``), SIGKILL a random worker and add one
    back."""
    while True:
        wait = (every or rec.kill_every) * rng.uniform(1 - JITTER, 1 + JITTER)
        if time.monotonic() + wait > deadline - 1.0:
            return
        await asyncio.sleep(wait)
        alive = [w for w in engine.workers if w.get("pid") and w.get("state") == "running"]
        if not alive:
            rec.problem("no running worker to kill")
            continue
        victim = rng.choice(alive)
        note_pids(rec, [victim])
        try:
            os.kill(victim["pid"], signal.SIGKILL)
        except ProcessLookupError:
            rec.problem(f"worker {victim['id']} was gone before it was killed")
            continue
        rec.kills.append(victim["id"])
        try:
            await engine.add_workers(1)
        except adrizzle.errors.AdrizzleError as exc:
            rec.problem(f"adding a worker back failed: {type(exc).__name__}: {exc}")
        note_pids(rec, engine.workers)


def measure_rss(rec: Record, engine: adrizzle.Engine, when: str, at_s: float) -> None:
    """RSS of the driver and of the workers with their slots ``at_s`` seconds into the run
    (``when``: "start", "end" or "during"), and at the start and end the driver's live Python
    blocks (flat blocks under a growing RSS: the allocator keeps freed memory, no object leaks)."""
    gc.collect()
    workers = [w for w in engine.workers if w.get("pid")]
    note_pids(rec, workers)
    driver = harness.rss_bytes(os.getpid(), children=False) or 0
    cluster = harness.workers_rss_bytes(workers)
    rec.rss_timeline.append((round(at_s, 1), driver, cluster))
    if when == "during":
        return
    rec.python_blocks[when] = sys.getallocatedblocks()
    rec.rss.setdefault("driver", {})[when] = driver
    rec.rss.setdefault("workers", {})[when] = cluster
    counts = list(rec.workers_measured)
    counts[0 if when == "start" else 1] = len(workers)
    rec.workers_measured = (counts[0], counts[1])


async def sample_rss(rec: Record, engine: adrizzle.Engine, start: float, deadline: float) -> None:
    """RSS nine times between the start and the deadline: the shape of any growth."""
    for i in range(1, 10):
        await asyncio.sleep(max(0.0, start + i * (deadline - start) / 10 - time.monotonic()))
        measure_rss(rec, engine, "during", time.monotonic() - start)


async def soak(rec: Record) -> None:
    """The whole soak on this event loop (busy loops must already be running)."""
    rng = random.Random()
    check = RunningSums()
    async with adrizzle.Engine.local(workers=3, cores=1, stall_timeout=STALL_TIMEOUT_S) as engine:
        note_pids(rec, engine.workers)
        stream = engine.stream(numbers, partitions=PARTITIONS)
        totals = stream.map(keyed).update_state(add_up, combine=operator.add)
        # Warm-up: the stream's first batches and the first fresh engine, so that one-time
        # allocations (imports, first connections, caches) are not counted as growth.
        await stream_chunks(rec, totals, check, 0.0, once=True)
        now = time.monotonic()
        await fresh_engines(rec, range(1, 2) if rec.engines else range(0), now, now)
        # ... and a tenth of the run (at most a minute) of the stream with one worker kill:
        # the adaptive group size grows for tens of seconds (larger groups, larger frames and
        # buffers) and the first recovery allocates what every later one reuses. Measured:
        # counted from 200 batches, the driver's RSS rose 35.8 -> 43.6 MiB in the first
        # minute and then 43.6 -> 43.9 MiB in the nine after (live Python blocks +2.8 %).
        measure_rss(rec, engine, "during", -rec.warmup_s)  # timeline: negative in the warm-up
        warm_until = time.monotonic() + rec.warmup_s
        await asyncio.gather(
            stream_chunks(rec, totals, check, warm_until),
            kill_workers(rec, engine, warm_until, rng, every=rec.warmup_s / 2),
        )
        await engine.wait_settled()
        measure_rss(rec, engine, "start", 0.0)
        start = time.monotonic()
        deadline = start + rec.minutes * 60
        await asyncio.gather(
            stream_chunks(rec, totals, check, deadline),
            kill_workers(rec, engine, deadline, rng),
            fresh_engines(rec, range(2, rec.engines + 1), start, deadline),
            sample_rss(rec, engine, start, deadline),
        )
        await engine.wait_settled()
        measure_rss(rec, engine, "end", time.monotonic() - start)
        rec.recoveries = engine.statistics()["recoveries"]
    for t, msg in rec.warnings:
        if "no progress" in msg:
            rec.stall(f"driver warning at {time.strftime('%H:%M:%S', time.localtime(t))}: {msg}")


# -- the sub-command ----------------------------------------------------------------------


def settings(args: argparse.Namespace) -> Record:
    """The soak's parameters: ``--minutes --engines --kill-every``, defaults from ``--quick``."""
    base = QUICK if getattr(args, "quick", False) else FULL

    def pick(name: str) -> Any:
        value = getattr(args, name, None)
        return base[name] if value is None else value

    rec = Record(float(pick("minutes")), int(pick("engines")), float(pick("kill_every")), SHAPE)
    if rec.minutes <= 0 or rec.engines < 0 or rec.kill_every <= 0:
        raise SystemExit("soak: --minutes and --kill-every must be > 0, --engines >= 0")
    return rec


async def bench_soak(args: argparse.Namespace) -> dict[str, Any]:
    rec = settings(args)
    rec.busy = (os.cpu_count() or 1) + 1
    load = os.getloadavg()[0]
    with busy_loops(rec.busy) as pids, harness.driver_warnings(rec.warnings):
        rec.busy_pids = pids
        await soak(rec)
    rec.load = (load, os.getloadavg()[0])
    summary = summarize(rec)
    lines = render(summary)
    harness.save_section(harness.results_dir(args), "soak", lines)
    return {**summary, "lines": lines}
