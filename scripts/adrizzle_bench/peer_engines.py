"""The peer engines (Dask distributed, Ray, PySpark) running the benchmark workloads.

Standalone on purpose: at module level it imports only the standard library and
``adrizzle_bench.harness`` (itself standard library only), never adrizzle, so it runs under any
interpreter that has the peers installed (for example a separate venv, ``BENCH_PEER_PYTHON``).
``adrizzle_bench.peers`` runs each engine in its own child process, with this package's folder
on the child's ``PYTHONPATH`` (that interpreter need not have this project installed):

    python -m adrizzle_bench.peer_engines ENGINE --batches N [--warmup W]

and reads one JSON object from the last line of its stdout: ``{"engine", "status", "reason",
"version", "workloads": {workload: {mode: {"mean", "p50", "p99", "n"}}}}``. ``status`` is
``ok``, ``skipped`` (the engine or its runtime is not installed: not a failure) or ``failed``.

Each engine gets 2 worker processes of 1 core, the same workloads and the same checks as
adrizzle, through its lowest-overhead API (futures for Dask, tasks for Ray, RDDs for Spark):

- single-stage: 4 partitions of 1000 ints, cached on the workers once; a micro-batch sums each
  partition (4 tasks) and returns the 4 sums;
- shuffle: the same partitions -> ``(x % 16, 1)`` -> reduce by key into 2 partitions, combined on
  the map side (4 map tasks + 2 reduce tasks);
- running-sum: micro-batch ``b``'s partition ``p`` is ``range((4b + p) * 1000, ...)``, generated
  on the worker; the driver adds the 4 sums to a running total.

Modes: ``one-after-another`` submits a micro-batch and waits for it before the next;
``all-at-once`` submits every micro-batch first, then collects them in order (Spark: submitted
from a pool of driver threads, since one PySpark job blocks its caller). The time of micro-batch
``b`` is the gap between its completion and the previous one's (the first from the start), so the
mean is wall time / micro-batches in both modes.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import json
import operator
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from adrizzle_bench import harness

PARTITIONS = 4
RECORDS = 1000
KEYS = 16
REDUCERS = 2
WORKLOADS = ("single-stage", "shuffle", "running-sum")
MODES = ("one-after-another", "all-at-once")
ENGINES = ("dask", "ray", "pyspark")
SPARK_THREADS = 32  # driver threads submitting jobs in PySpark's all-at-once mode

# What each engine needs, as (module to find, distribution whose version is reported).
REQUIREMENTS = {
    "dask": ("distributed", "distributed"),
    "ray": ("ray", "ray"),
    "pyspark": ("pyspark", "pyspark"),
}
INSTALL_HINT = "pip install -e '.[bench]'"


# -- the work itself: adrizzle's slots import these by name; the peers get them pickled -------


def partition_data(p: int) -> list[int]:
    return list(range(p * RECORDS, (p + 1) * RECORDS))


def batch_partition(b: int, p: int) -> range:
    """Micro-batch ``b``'s partition ``p`` of the running sum (as scripts/demo.py builds it)."""
    start = (b * PARTITIONS + p) * RECORDS
    return range(start, start + RECORDS)


def batch_partition_sum(b: int, p: int) -> int:
    return sum(batch_partition(b, p))


def sum_list(part: Sequence[int]) -> int:
    return sum(part)


def mod16_one(x: int) -> tuple[int, int]:
    return (x % KEYS, 1)


def sum_partition(it: Any) -> list[int]:
    """Spark's per-partition action: one sum per partition."""
    return [sum(it)]


def map_combine(part: Sequence[int]) -> list[dict[int, int]]:
    """A map task of the shuffle: ``(x % 16, 1)`` combined per key, split per reducer."""
    out: list[dict[int, int]] = [{} for _ in range(REDUCERS)]
    for x in part:
        k, v = mod16_one(x)
        d = out[hash(k) % REDUCERS]
        d[k] = d.get(k, 0) + v
    return out


def reduce_pieces(*pieces: dict[int, int]) -> list[tuple[int, int]]:
    """A reduce task: merge the map outputs meant for it."""
    total: dict[int, int] = {}
    for piece in pieces:
        for k, v in piece.items():
            total[k] = total.get(k, 0) + v
    return list(total.items())


def reduce_from_maps(r: int, *map_outputs: list[dict[int, int]]) -> list[tuple[int, int]]:
    return reduce_pieces(*(m[r] for m in map_outputs))


# The expected answers are computed once (cached) or in closed form: check() runs inside every
# engine's timed loop, and recomputing 4 x 1000-int sums there cost ~70 µs per micro-batch, 3x
# adrizzle's own time per micro-batch at G=100 (the peers, at milliseconds, did not notice).
@functools.cache
def single_stage_expected() -> list[int]:
    return [sum(partition_data(p)) for p in range(PARTITIONS)]


def expected_partition_sum(b: int, p: int) -> int:
    """``batch_partition_sum(b, p)`` in closed form (the sum of an arithmetic range)."""
    start = (b * PARTITIONS + p) * RECORDS
    return RECORDS * start + RECORDS * (RECORDS - 1) // 2


@functools.cache
def shuffle_expected() -> list[tuple[int, int]]:
    n = PARTITIONS * RECORDS
    return sorted((k, n // KEYS) for k in range(KEYS))


def running_sum_expected(batches: int) -> int:
    return sum(range(batches * PARTITIONS * RECORDS))


def flatten_sorted(per_partition: Sequence[Sequence[tuple[int, int]]]) -> list[tuple[int, int]]:
    return sorted(kv for part in per_partition for kv in part)


# -- availability (a missing peer is skipped, never failed) -------------------------------------


def missing_requirement(
    engine: str,
    has_module: Callable[[str], bool] | None = None,
    find_java: Callable[[], str | None] | None = None,
) -> str | None:
    """Why ``engine`` cannot run here, or None when it can. Lookups are injectable for tests."""
    if engine not in REQUIREMENTS:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    has_module = has_module or _has_module
    find_java = find_java or _find_java
    module, _dist = REQUIREMENTS[engine]
    if not has_module(module):
        return f"{module} is not installed in {sys.executable} ({INSTALL_HINT})"
    if engine == "pyspark" and find_java() is None:
        return "no Java runtime found (PySpark needs one: apt-get install default-jre-headless)"
    return None


def _has_module(name: str) -> bool:
    """Installed as a real package: a bare directory of that name on sys.path (a namespace
    package, such as Ray's session folder /tmp/ray when /tmp is on the path) does not count."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin is not None


def _find_java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def version_of(engine: str) -> str:
    try:
        return importlib.metadata.version(REQUIREMENTS[engine][1])
    except importlib.metadata.PackageNotFoundError:
        return "?"


# -- engines ----------------------------------------------------------------------------------


class PeerEngine:
    """One peer: ``submit(workload, b)`` starts micro-batch ``b``, ``wait(handle)`` returns its
    per-partition values (the running sum returns the 4 sums, the shuffle the reducers' pairs)."""

    name = ""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def submit(self, workload: str, b: int) -> Any:
        raise NotImplementedError

    def wait(self, handle: Any) -> list[Any]:
        raise NotImplementedError


class DaskPeer(PeerEngine):
    name = "dask"

    def start(self) -> None:
        import logging

        from distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        self.client = Client(self.cluster)
        # Cached once on the workers, as adrizzle's .cache() and Spark's .cache() hold them.
        self.parts = self.client.scatter([partition_data(p) for p in range(PARTITIONS)])

    def stop(self) -> None:
        self.client.close()
        self.cluster.close()

    def submit(self, workload: str, b: int) -> Any:
        submit = functools.partial(self.client.submit, pure=False)
        if workload == "single-stage":
            return [submit(sum_list, part) for part in self.parts]
        if workload == "shuffle":
            maps = [submit(map_combine, part) for part in self.parts]
            return [submit(reduce_from_maps, r, *maps) for r in range(REDUCERS)]
        return [submit(batch_partition_sum, b, p) for p in range(PARTITIONS)]

    def wait(self, handle: Any) -> list[Any]:
        return list(self.client.gather(handle))


class RayPeer(PeerEngine):
    name = "ray"

    def start(self) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        self.ray = ray
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
        )
        self.sum = ray.remote(sum_list)
        self.map = ray.remote(num_returns=REDUCERS)(map_combine)
        self.reduce = ray.remote(reduce_pieces)
        self.batch_sum = ray.remote(batch_partition_sum)
        self.parts = [ray.put(partition_data(p)) for p in range(PARTITIONS)]

    def stop(self) -> None:
        self.ray.shutdown()

    def submit(self, workload: str, b: int) -> Any:
        if workload == "single-stage":
            return [self.sum.remote(part) for part in self.parts]
        if workload == "shuffle":
            maps = [self.map.remote(part) for part in self.parts]
            return [self.reduce.remote(*(m[r] for m in maps)) for r in range(REDUCERS)]
        return [self.batch_sum.remote(b, p) for p in range(PARTITIONS)]

    def wait(self, handle: Any) -> list[Any]:
        return list(self.ray.get(handle))


class SparkPeer(PeerEngine):
    name = "pyspark"

    def start(self) -> None:
        # The Python workers must be this interpreter (PySpark refuses mixed minor versions).
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
        from pyspark import SparkConf, SparkContext

        conf = (
            SparkConf()
            .setMaster("local[2]")
            .setAppName("adrizzle-bench")
            .set("spark.ui.enabled", "false")
            .set("spark.ui.showConsoleProgress", "false")
            .set("spark.driver.host", "127.0.0.1")
            .set("spark.driver.bindAddress", "127.0.0.1")
        )
        self.sc = SparkContext(conf=conf)
        self.sc.setLogLevel("ERROR")
        self.data = self.sc.parallelize(range(PARTITIONS * RECORDS), PARTITIONS).cache()
        self.data.count()
        self.pool = ThreadPoolExecutor(max_workers=SPARK_THREADS)

    def stop(self) -> None:
        self.pool.shutdown(wait=True)
        self.sc.stop()

    def _job(self, workload: str, b: int) -> list[Any]:
        if workload == "single-stage":
            return list(self.data.mapPartitions(sum_partition).collect())
        if workload == "shuffle":
            rdd = self.data.map(mod16_one).reduceByKey(operator.add, REDUCERS)
            return list(rdd.glom().collect())
        parts = self.sc.parallelize(range(PARTITIONS), PARTITIONS)
        return list(parts.map(functools.partial(batch_partition_sum, b)).collect())

    def submit(self, workload: str, b: int) -> Any:
        return self.pool.submit(self._job, workload, b)

    def wait(self, handle: Any) -> list[Any]:
        result: list[Any] = handle.result()
        return result


PEERS: dict[str, type[PeerEngine]] = {"dask": DaskPeer, "ray": RayPeer, "pyspark": SparkPeer}


# -- the measurement --------------------------------------------------------------------------


def check(workload: str, b: int, values: list[Any]) -> None:
    if workload == "single-stage":
        ok = values == single_stage_expected()
    elif workload == "shuffle":
        ok = flatten_sorted(values) == shuffle_expected()
    else:
        ok = values == [expected_partition_sum(b, p) for p in range(PARTITIONS)]
    if not ok:
        raise AssertionError(f"{workload} micro-batch {b}: wrong answer {values!r:.200}")


def measure(peer: PeerEngine, workload: str, mode: str, batches: int) -> list[float]:
    """ms per micro-batch (completion gaps) for ``batches`` micro-batches; answers checked."""
    total = 0
    done_at: list[float] = []
    start = time.perf_counter()
    if mode == "one-after-another":
        for b in range(batches):
            values = peer.wait(peer.submit(workload, b))
            done_at.append(time.perf_counter())
            check(workload, b, values)
            total += sum(values) if workload == "running-sum" else 0
    else:
        handles = [peer.submit(workload, b) for b in range(batches)]
        for b, handle in enumerate(handles):
            values = peer.wait(handle)
            done_at.append(time.perf_counter())
            check(workload, b, values)
            total += sum(values) if workload == "running-sum" else 0
    if workload == "running-sum" and total != running_sum_expected(batches):
        raise AssertionError(f"running sum {total} != {running_sum_expected(batches)}")
    return harness.completion_gaps(start, done_at)


def run_engine(engine: str, batches: int, warmup: int) -> dict[str, Any]:
    report: dict[str, Any] = {"engine": engine, "python": sys.version.split()[0]}
    missing = missing_requirement(engine)
    if missing is not None:
        return {**report, "status": "skipped", "reason": missing}
    report["version"] = version_of(engine)
    peer = PEERS[engine]()
    t0 = time.perf_counter()
    peer.start()
    report["start_s"] = time.perf_counter() - t0
    try:
        workloads: dict[str, dict[str, dict[str, float]]] = {}
        for workload in WORKLOADS:
            measure(peer, workload, "one-after-another", warmup)
            workloads[workload] = {
                mode: harness.summarize(measure(peer, workload, mode, batches)) for mode in MODES
            }
        report["workloads"] = workloads
    finally:
        peer.stop()
    return {**report, "status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    try:
        report = run_engine(args.engine, args.batches, args.warmup)
    except Exception as exc:
        traceback.print_exc()
        report = {"engine": args.engine, "status": "failed", "reason": f"{exc!r:.300}"}
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
