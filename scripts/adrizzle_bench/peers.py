"""``bench.py peers``: adrizzle, the hand-written floor and Dask, Ray and PySpark, side by side.

    python scripts/bench.py peers [--batches 200] [--repeats 3] [--quick] [--json]

Three workloads (see ``peer_engines``): single-stage, the two-stage shuffle and a running
sum, each engine with 2 worker processes of 1 core on this machine, in one run. adrizzle runs
them at several group sizes (``auto`` when the engine has it) and once more with one
``run_jobs`` call per micro-batch; the floor (``floor``) runs the single-stage workload.
Each peer runs in a child process of its own, one after another, both one micro-batch after
another and with every micro-batch submitted at once. A peer that is not installed is reported
as skipped. Environment:

    BENCH_PEERS=dask,ray,pyspark      which peers to run (default: all three)
    BENCH_PEER_PYTHON=/path/to/python  the interpreter that runs them (default: this one), e.g.
                                       a separate venv with the peers when this one has none

"ms per micro-batch" is the gap between consecutive micro-batch completions (the first from the
start): its mean is wall time / micro-batches; p50 and p99 (the harness's percentiles) show how
bursty delivery is. Ratios use the mean. Results: bench-results/peers.md, RESULTS.md,
peers-*.png.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import operator
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import adrizzle
from adrizzle_bench import harness
from adrizzle_bench import peer_engines as pe
from adrizzle_bench.floor import floor_ms_per_batch_async

# The folder holding this package: a peer's interpreter finds ``adrizzle_bench`` there.
PACKAGE_PARENT = Path(__file__).resolve().parents[1]
PEER_LABELS = {"dask": "Dask distributed", "ray": "Ray", "pyspark": "PySpark"}
TABLE_SIZES: tuple[int | str, ...] = (1, 10, 100, "auto")
SWEEP_FULL = (1, 2, 5, 10, 20, 50, 100, 200)
SWEEP_QUICK = (1, 10, 100)
ONE_BY_ONE = "one run_jobs per micro-batch"
# (workload, adrizzle group size, peer mode, target ratio): "adrizzle at G is >= target x
# faster than the fastest peer in that mode" (mode "best" = the peer's faster mode).
TARGETS = (
    ("single-stage", 100, "best", 30.0),
    ("single-stage", 1, "one-after-another", 5.0),
    ("shuffle", 100, "best", 20.0),
)
FLOOR_TARGET = 3.0


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Run parameters from the bench.py arguments, the environment and ``--quick``."""
    quick = bool(getattr(args, "quick", False))
    peers = getattr(args, "peers", None)
    if peers is None:
        peers = [p for p in os.environ.get("BENCH_PEERS", ",".join(pe.ENGINES)).split(",") if p]
    unknown = sorted(set(peers) - set(pe.ENGINES))
    if unknown:
        raise SystemExit(f"BENCH_PEERS: unknown {unknown}; choose from {', '.join(pe.ENGINES)}")
    return {
        "quick": quick,
        "batches": args.batches,
        "repeats": 1 if quick else args.repeats,
        "sweep": SWEEP_QUICK if quick else SWEEP_FULL,
        "peers": peers,
        "peer_python": getattr(args, "peer_python", None)
        or os.environ.get("BENCH_PEER_PYTHON")
        or sys.executable,
        "peer_batches": min(20, args.batches) if quick else args.batches,
        "peer_warmup": 3 if quick else 10,
        "peer_timeout": 240.0 if quick else 1800.0,
        "results_dir": harness.results_dir(args),
    }


# -- adrizzle ---------------------------------------------------------------------------------


class Workload:
    """One workload on one engine: its datasets for ``batches`` micro-batches, action, check."""

    def __init__(self, name: str, engine: adrizzle.Engine) -> None:
        self.name = name
        self.engine = engine
        self.data = engine.parallelize(range(pe.PARTITIONS * pe.RECORDS), pe.PARTITIONS).cache()
        self.shuffled = self.data.map(pe.mod16_one).reduce_by_key(
            operator.add, partitions=pe.REDUCERS
        )

    def datasets(self, batches: int) -> list[adrizzle.Dataset]:
        if self.name == "single-stage":
            return [self.data] * batches
        if self.name == "shuffle":
            return [self.shuffled] * batches
        return [
            self.engine.generate(functools.partial(pe.batch_partition, b), pe.PARTITIONS)
            for b in range(batches)
        ]

    @property
    def action(self) -> Any:
        return list if self.name == "shuffle" else sum


async def adrizzle_gaps(
    workload: Workload, batches: int, group_size: int | str
) -> list[float] | None:
    """ms per micro-batch at ``group_size``, answers checked; None if the size is unsupported."""
    datasets = workload.datasets(batches)
    done_at: list[float] = []
    total = 0
    start = time.perf_counter()
    try:
        async for job in workload.engine.iter_jobs(
            datasets,
            workload.action,
            group_size=group_size,  # type: ignore[arg-type]
            timeout=120,
        ):
            done_at.append(time.perf_counter())
            assert job.values is not None
            pe.check(workload.name, job.index, job.values)
            total += sum(job.values) if workload.name == "running-sum" else 0
    except ValueError:
        if group_size == "auto" and not done_at:
            return None  # this adrizzle has no adaptive group size yet
        raise
    if workload.name == "running-sum":
        assert total == pe.running_sum_expected(batches), total
    return harness.completion_gaps(start, done_at)


async def adrizzle_one_by_one(workload: Workload, batches: int) -> list[float]:
    """One ``run_jobs`` call per micro-batch, each awaited before the next."""
    done_at: list[float] = []
    start = time.perf_counter()
    for b, ds in enumerate(workload.datasets(batches)):
        (values,) = await workload.engine.run_jobs([ds], workload.action, timeout=60)
        done_at.append(time.perf_counter())
        pe.check(workload.name, b, values)
    return harness.completion_gaps(start, done_at)


async def measure_adrizzle(cfg: dict[str, Any]) -> dict[str, dict[str, dict[str, float] | None]]:
    """workload -> row label ("G=1", ..., ONE_BY_ONE) -> summary (None: n/a)."""
    sizes: list[int | str] = sorted({*cfg["sweep"], 1, 10, 100}, key=int)
    sizes.append("auto")
    samples: dict[str, dict[str, list[float] | None]] = {}
    async with adrizzle.Engine.local(workers=2, cores=1) as engine:
        workloads = [Workload(name, engine) for name in pe.WORKLOADS]
        for w in workloads:  # warm-up: ship partitions, import in the slots, dial peers
            await adrizzle_gaps(w, 20, 10)
            samples[w.name] = {}
        for _ in range(cfg["repeats"]):
            for w in workloads:  # interleaved, so drift hits every size alike
                rows = samples[w.name]
                for g in sizes:
                    gaps = await adrizzle_gaps(w, cfg["batches"], g)
                    rows[f"G={g}"] = None if gaps is None else [*(rows.get(f"G={g}") or []), *gaps]
                one = await adrizzle_one_by_one(w, cfg["batches"])
                rows[ONE_BY_ONE] = [*(rows.get(ONE_BY_ONE) or []), *one]
    return {
        w: {label: harness.summarize(s) if s else None for label, s in rows.items()}
        for w, rows in samples.items()
    }


async def measure_floor(cfg: dict[str, Any]) -> dict[int, float]:
    """The hand-written group-scheduled loop, single-stage, mean ms per micro-batch per G."""
    sizes = sorted({*cfg["sweep"], 1, 10, 100})
    runs: dict[int, list[float]] = {g: [] for g in sizes}
    for _ in range(cfg["repeats"]):
        for g in sizes:
            runs[g].append(await floor_ms_per_batch_async(cfg["batches"], g, workers=2))
    return {g: statistics.median(v) for g, v in runs.items()}


# -- peers ------------------------------------------------------------------------------------


async def run_peer(
    engine: str, python: str, batches: int, warmup: int, timeout: float
) -> dict[str, Any]:
    """Run one peer in a child process; its report, or a failed one that says why."""
    # That interpreter may lack this project: it finds the package through PYTHONPATH.
    inherited = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    path = os.pathsep.join([str(PACKAGE_PARENT), *(p for p in inherited if p)])
    try:
        proc = await asyncio.create_subprocess_exec(
            python,
            "-m",
            "adrizzle_bench.peer_engines",
            engine,
            "--batches",
            str(batches),
            "--warmup",
            str(warmup),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # so a hung peer's whole process group can be ended
            env={**os.environ, "PYTHONPATH": path},
        )
    except OSError as exc:
        return {"engine": engine, "status": "skipped", "reason": f"cannot run {python}: {exc}"}
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await proc.wait()
        return {"engine": engine, "status": "failed", "reason": f"timed out after {timeout:.0f} s"}
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith("{"):
            report: dict[str, Any] = json.loads(line)
            if report.get("status") == "failed":
                tail = err.decode(errors="replace").strip().splitlines()[-3:]
                report["reason"] = f"{report.get('reason')} ({' / '.join(tail)})"[:600]
            return report
    tail = " / ".join(err.decode(errors="replace").strip().splitlines()[-3:])
    return {
        "engine": engine,
        "status": "failed",
        "reason": f"exit code {proc.returncode}, no report: {tail}"[:600],
    }


# -- report -----------------------------------------------------------------------------------


def fmt(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def fastest_peer(peers: list[dict[str, Any]], workload: str, mode: str) -> tuple[str, float] | None:
    """(label, mean ms) of the fastest peer in ``mode`` ("best": either mode), or None."""
    best: tuple[str, float] | None = None
    for report in peers:
        if report.get("status") != "ok":
            continue
        modes = pe.MODES if mode == "best" else (mode,)
        for m in modes:
            mean = report["workloads"][workload][m]["mean"]
            if best is None or mean < best[1]:
                best = (f"{PEER_LABELS[report['engine']]} {m}", mean)
    return best


def evaluate_targets(
    adz: dict[str, dict[str, dict[str, float] | None]],
    floor: dict[int, float],
    peers: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Each issue-9 target: what it compares, the measured ratio (None: n/a) and whether met."""
    out: list[dict[str, Any]] = []
    for workload, g, mode, target in TARGETS:
        ours = adz[workload][f"G={g}"]
        peer = fastest_peer(peers, workload, mode)
        what = f"{workload}, G={g} vs fastest peer ({mode.replace('-', ' ')})"
        if peer is None or ours is None:
            out.append({"target": what, "want": f">= {target:g}x", "ratio": None, "detail": ""})
            continue
        ratio = peer[1] / ours["mean"]
        out.append(
            {
                "target": what,
                "want": f">= {target:g}x",
                "ratio": ratio,
                "met": ratio >= target,
                "detail": f"{peer[0]} {fmt(peer[1])} ms / adrizzle {fmt(ours['mean'])} ms",
            }
        )
    for g in (1, 10, 100):
        ours = adz["single-stage"][f"G={g}"]
        assert ours is not None
        ratio = ours["mean"] / floor[g]
        out.append(
            {
                "target": f"single-stage, G={g}: adrizzle / hand-written floor",
                "want": f"<= {FLOOR_TARGET:g}x",
                "ratio": ratio,
                "met": ratio <= FLOOR_TARGET,
                "detail": f"adrizzle {fmt(ours['mean'])} ms / floor {fmt(floor[g])} ms",
            }
        )
    return out


def headline(targets: list[dict[str, Any]]) -> str:
    first = targets[0]
    if first["ratio"] is None:
        return "No peer ran, so there is no headline ratio (install the `bench` extra)."
    return (
        f"On this machine adrizzle at group size 100 runs a single-stage micro-batch "
        f"**{first['ratio']:.0f}x** faster than the fastest peer in its best mode "
        f"({first['detail']})."
    )


def render(
    cfg: dict[str, Any],
    adz: dict[str, dict[str, dict[str, float] | None]],
    floor: dict[int, float],
    peers: list[dict[str, Any]],
    targets: list[dict[str, Any]],
    plots: list[str],
) -> list[str]:
    lines = [
        "### peers: the same workloads on the same machine, 2 worker processes of 1 core each",
        "",
        f"adrizzle `Engine.local(workers=2, cores=1)`, {cfg['batches']} micro-batches x "
        f"{cfg['repeats']} repeat(s) per row; each peer {cfg['peer_batches']} micro-batches per "
        "mode after a warm-up (Dask `LocalCluster(n_workers=2, threads_per_worker=1, "
        "processes=True)` futures, Ray `num_cpus=2` tasks, PySpark `local[2]` RDDs). "
        "ms per micro-batch = gap between consecutive completions; ratios use the mean. "
        "The last column is the row's mean divided by adrizzle's at G=100.",
        "",
    ]
    for workload in pe.WORKLOADS:
        base = adz[workload]["G=100"]
        lines += [
            f"#### {workload}",
            "",
            "| engine | mode | mean ms | p50 ms | p99 ms | x adrizzle G=100 |",
            "|---|---|---:|---:|---:|---:|",
        ]

        def row(engine: str, mode: str, s: dict[str, float] | None, base: Any = base) -> str:
            if s is None:
                return f"| {engine} | {mode} | n/a | n/a | n/a | |"
            rel = f"{s['mean'] / base['mean']:.1f}" if base else ""
            return (
                f"| {engine} | {mode} | {fmt(s['mean'])} | {fmt(s['p50'])} "
                f"| {fmt(s['p99'])} | {rel} |"
            )

        for g in TABLE_SIZES:
            s = adz[workload].get(f"G={g}")
            mode = f"group size {g}"
            if s is None and g == "auto":
                mode += " (n/a: `group_size='auto'` not in this adrizzle yet)"
            lines.append(row("adrizzle", mode, s))
        lines.append(row("adrizzle", ONE_BY_ONE, adz[workload][ONE_BY_ONE]))
        if workload == "single-stage":
            for g in (1, 10, 100):
                rel = f"{floor[g] / base['mean']:.1f}" if base else ""
                lines.append(
                    f"| hand-written floor | group size {g} | {fmt(floor[g])} | | | {rel} |"
                )
        for report in peers:
            label = PEER_LABELS[report["engine"]]
            if report.get("status") != "ok":
                why = f"{report['status']}: {report.get('reason', '')}"
                lines.append(f"| {label} | {why} | | | | |")
                continue
            for m in pe.MODES:
                summary = _peer(report, workload, m)
                lines.append(row(f"{label} {report['version']}", m.replace("-", " "), summary))
        lines.append("")
    started = [
        f"{PEER_LABELS[r['engine']]} {r['start_s']:.1f} s"
        for r in peers
        if r.get("status") == "ok" and "start_s" in r
    ]
    if started:
        lines += ["Cluster start-up (not in the numbers above): " + ", ".join(started) + ".", ""]
    ran = [
        f"{PEER_LABELS[r['engine']]} {r['version']} (Python {r['python']})"
        for r in peers
        if r.get("status") == "ok"
    ]
    if ran:
        java = cfg.get("java") or "none found"
        lines += [f"Peer versions: {', '.join(ran)}; Java: {java}.", ""]
    lines += [
        "#### targets (issue 9)",
        "",
        "| target | wanted | measured | met | from |",
        "|---|---|---:|---|---|",
    ]
    for t in targets:
        if t["ratio"] is None:
            lines.append(f"| {t['target']} | {t['want']} | n/a | n/a (no peer ran) | |")
        else:
            met = "yes" if t["met"] else "**no**"
            lines.append(
                f"| {t['target']} | {t['want']} | {t['ratio']:.1f}x | {met} | {t['detail']} |"
            )
    lines += ["", headline(targets), ""]
    return [*lines, *harness.plot_links(plots)]


def _peer(report: dict[str, Any], workload: str, mode: str) -> dict[str, float]:
    summary: dict[str, float] = report["workloads"][workload][mode]
    return summary


def draw(
    cfg: dict[str, Any],
    adz: dict[str, dict[str, dict[str, float] | None]],
    floor: dict[int, float],
    peers: list[dict[str, Any]],
) -> list[str]:
    paths = []
    for workload in pe.WORKLOADS:
        sweep = {
            int(label[2:]): s["mean"]
            for label, s in adz[workload].items()
            if s is not None and label.startswith("G=") and label[2:].isdigit()
        }
        lines = {"adrizzle": sweep}
        if workload == "single-stage":
            lines["hand-written floor"] = dict(floor)
        flat = []
        for r in peers:
            if r.get("status") == "ok":
                for m in pe.MODES:
                    flat.append((PEER_LABELS[r["engine"]], m, _peer(r, workload, m)["mean"]))
        one = adz[workload][ONE_BY_ONE]
        if one is not None:
            flat.append(("adrizzle", ONE_BY_ONE, one["mean"]))
        path = harness.plot_vs_group_size(
            cfg["results_dir"] / f"peers-{workload}.png",
            f"{workload}: ms per micro-batch, 2 workers x 1 core (peers: horizontal lines)",
            lines,
            flat,
        )
        if path is not None:
            paths.append(str(path))
    return paths


async def bench_peers(args: argparse.Namespace) -> dict[str, Any]:
    cfg = settings(args)
    adz = await measure_adrizzle(cfg)
    floor = await measure_floor(cfg)
    peers = []
    for engine in pe.ENGINES:
        if engine not in cfg["peers"]:
            peers.append({"engine": engine, "status": "skipped", "reason": "not in BENCH_PEERS"})
            continue
        peers.append(
            await run_peer(
                engine,
                cfg["peer_python"],
                cfg["peer_batches"],
                cfg["peer_warmup"],
                cfg["peer_timeout"],
            )
        )
    cfg["java"] = harness.java_version()
    targets = evaluate_targets(adz, floor, peers)
    plots = draw(cfg, adz, floor, peers)
    lines = render(cfg, adz, floor, peers, targets, plots)
    harness.save_section(cfg["results_dir"], "peers", lines)
    return {
        "name": "peers",
        "adrizzle": adz,
        "floor": {str(g): v for g, v in floor.items()},
        "peers": peers,
        "targets": targets,
        "headline": headline(targets),
        "plots": plots,
        "lines": lines,
    }
