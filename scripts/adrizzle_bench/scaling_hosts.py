"""``bench.py scaling --hosts N --rtt-ms X,...``: group size against round-trip time on several
hosts for real (network namespaces, ``adrizzle_bench.netns``; needs root).

    python scripts/bench.py scaling --hosts 4 --rtt-ms 0,0.5,2 [--repeats 3] [--quick]

For each RTT: N hosts, each a real ``adrizzle-worker`` of 1 core in its own namespace behind a
delay proxy adding RTT/2 each way (between the driver and a worker, and between workers), the
driver on the bridge. Steady state: cached single-stage micro-batches (2 partitions of 100 ints
per worker) at G=1 and G=100: ms per micro-batch and driver CPU per micro-batch. G=1 pays a
round trip every micro-batch, G=100 once per group. Then the recovery: a paced running sum (10 ms
batches, G=10, state checkpointed; ``recovery``'s workload) while the link of the host holding
the state is pulled (``ip link set ... down``: silence, no FIN): results checked exactly, and
"back to normal" judged as ``bench.py recovery`` judges it (rolling median of 9 batches within
2x the latency before, for 1 s), measured from the driver's detection (its warning naming the
host; heartbeat timeout 1.5 s). Delay 0 still runs every byte through the proxies (~0.1 ms of
thread hand-off per hop). Results: bench-results/scaling-hosts.md, scaling-hosts*.png.
"""

from __future__ import annotations

import argparse
import functools
import operator
import statistics
import time
from typing import Any

import adrizzle
from adrizzle.plan.partitioning import partition_of
from adrizzle_bench import harness, recovery
from adrizzle_bench.netns import Hosts

RTTS = (0.0, 0.5, 2.0)
RECORDS = 100
BATCHES = {1: 200, 100: 1000}
BATCHES_QUICK = {1: 60, 100: 300}
FAST = {"heartbeat_interval": 0.2, "heartbeat_timeout": 1.5}
FAST_WORKER = ["--heartbeat-interval", "0.2", "--heartbeat-timeout", "1.5"]
TOKEN = "adrizzle-bench-hosts"
RECOVERY_G = 10
RECOVERY_SECONDS = {False: 8.0, True: 5.0}  # quick: shorter
PULL_AT = 0.35  # of the stream's batches
TARGET_SPEEDUP = 20.0
TARGET_BACK_S = 2.0


async def steady(
    engine: adrizzle.Engine, data: adrizzle.Dataset, batches: int, size: int
) -> dict[str, float]:
    await engine.wait_settled(timeout=30)
    with harness.timed() as t:
        results = await engine.run_jobs([data] * batches, sum, group_size=size, timeout=300)
    expected = [sum(range(p * RECORDS, (p + 1) * RECORDS)) for p in range(data.partitions)]
    return {
        "exact": float(results == [expected] * batches),
        "ms_per_batch": t.wall / batches * 1e3,
        "cpu_us_per_batch": t.cpu / batches * 1e6,
    }


async def pulled_link_run(
    hosts: Hosts, engine: adrizzle.Engine, seconds: float, rtt_ms: float
) -> recovery.Trace:
    """The paced running sum while the state owner's link is pulled (see the docstring)."""
    interval = 0.01
    batches = round(seconds / interval)
    pull_batch = round(batches * PULL_AT)
    trace = recovery.Trace(f"running sum, {rtt_ms:g} ms RTT", RECOVERY_G, batches, interval, None)
    parts = recovery.PARTITIONS
    owner = partition_of(recovery.SUM_KEY, parts) % len(hosts.hosts)  # 1 slot per host
    trace.victim, trace.kill_batch = hosts.hosts[owner].worker_name, pull_batch
    with harness.driver_warnings(trace.log), recovery.failures_reported(trace):
        await recovery.warm_up(engine)
        source = functools.partial(recovery.numbers, 250)
        stream = engine.stream(source, parts, batch_interval=interval, batches=batches)
        totals = stream.map(recovery.keyed).update_state(recovery.add_up, combine=operator.add)
        run = totals.run(group_size=RECOVERY_G, timeout=60.0)
        try:
            async for update in run:
                expected = trace.numbers[-1] + 1 if trace.numbers else 0
                if update.batch != expected:
                    trace.problem(f"batch {update.batch} delivered where {expected} was next")
                trace.numbers.append(update.batch)
                trace.latency.append(update.latency or 0.0)
                trace.done_at.append(update.done_at)
                want = [(recovery.SUM_KEY, recovery.prefix_total(update.batch + 1, 250))]
                if update.values != want:
                    trace.problem(f"batch {update.batch}: {update.values} != {want}")
                if update.batch == pull_batch:
                    await hosts.pull_link(owner)
                    trace.kill_time = time.time()
        finally:
            trace.recoveries = engine.statistics()["recoveries"]
    recovery.finish(trace)
    return trace


async def bench_rtt(
    n: int, rtt_ms: float, repeats: int, batches: dict[int, int], quick: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    async with Hosts(n, rtt_ms=rtt_ms) as hosts:
        engine = adrizzle.Engine(listen=f"{hosts.driver_ip}:0", token=TOKEN, **FAST)
        async with engine:
            await hosts.start_workers(engine.address, TOKEN, FAST_WORKER)
            await engine.wait_for_workers(n, timeout=60)
            partitions = 2 * n
            data = engine.parallelize(range(partitions * RECORDS), partitions).cache()
            await engine.run_jobs([data] * 20, sum, group_size=5, timeout=60)  # warm-up
            runs: dict[int, list[dict[str, float]]] = {1: [], 100: []}
            for _ in range(repeats):
                for size in runs:  # interleaved
                    runs[size].append(await steady(engine, data, batches[size], size))
            trace = await pulled_link_run(hosts, engine, RECOVERY_SECONDS[quick], rtt_ms)
    row: dict[str, Any] = {"hosts": n, "rtt_ms": rtt_ms, "repeats": repeats}
    for size, rows in runs.items():
        row[f"g{size}_ms"] = statistics.median(r["ms_per_batch"] for r in rows)
        row[f"g{size}_cpu_us"] = statistics.median(r["cpu_us_per_batch"] for r in rows)
        row[f"g{size}_exact"] = all(r["exact"] for r in rows)
    row["speedup"] = row["g1_ms"] / row["g100_ms"]
    rec = recovery.summarize(trace)
    rec["rtt_ms"] = rtt_ms
    return row, rec


def _fmt(value: Any, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def report(
    rows: list[dict[str, Any]], recs: list[dict[str, Any]], batches: dict[int, int]
) -> list[str]:
    n = rows[0]["hosts"]
    lines = [
        f"### scaling on {n} hosts (network namespaces, real workers of 1 core), round trip "
        f"injected by delay proxies; {batches[1]} micro-batches at G=1, {batches[100]} at "
        f"G=100; median of {rows[0]['repeats']}",
        "",
        "| RTT ms | G=1 ms / micro-batch | G=100 ms / micro-batch | G=1 / G=100 "
        "| driver CPU µs / batch, G=1 | G=100 | exact |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        exact = "yes" if r["g1_exact"] and r["g100_exact"] else "NO"
        lines.append(
            f"| {r['rtt_ms']:g} | {r['g1_ms']:.3f} | {r['g100_ms']:.3f} | {r['speedup']:.1f}x "
            f"| {r['g1_cpu_us']:.0f} | {r['g100_cpu_us']:.0f} | {exact} |"
        )
    lines += [
        "",
        f"A host's link pulled mid-stream (paced running sum, 10 ms batches, G={RECOVERY_G}, "
        "the pulled host holds the state):",
        "",
        "| RTT ms | batches | normal p50 ms | worst ms after | detected s after the pull "
        "| back within 2x: s after detection | recoveries | exact |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in recs:
        lines.append(
            f"| {r['rtt_ms']:g} | {r['delivered']}/{r['batches']} | {_fmt(r.get('normal_ms'))} "
            f"| {_fmt(r.get('worst_ms'), 1)} | {_fmt(r.get('detected_s'))} "
            f"| {_fmt(r.get('from_detection_s'))} | {r['recoveries']} "
            f"| {'yes' if r['exact'] else 'NO: ' + '; '.join(r['problems'][:2])} |"
        )
    lines += ["", "Targets (issue 18; 4 hosts, 2 ms RTT):", ""]
    at2 = next((r for r in rows if r["rtt_ms"] == 2.0), None)
    rec2 = next((r for r in recs if r["rtt_ms"] == 2.0), None)
    if at2 is None or rec2 is None or n != 4:
        lines.append("- not measured in this run (needs --hosts 4 and 2 in --rtt-ms).")
    else:
        met = at2["speedup"] >= TARGET_SPEEDUP
        back = rec2.get("from_detection_s")
        ok = rec2["exact"] and back is not None and back <= TARGET_BACK_S
        lines += [
            f"- G=100 is {at2['speedup']:.1f}x faster per micro-batch than G=1 (target ≥ "
            f"{TARGET_SPEEDUP:g}x: {'met' if met else 'not met'}).",
            f"- Pulled link: exact {'yes' if rec2['exact'] else 'NO'}, back within 2x normal "
            f"{_fmt(back)} s after detection (target ≤ {TARGET_BACK_S:g} s, exact: "
            f"{'met' if ok else 'not met'}).",
        ]
    lines += [
        "",
        "No seed numbers: adrizzle had not run on several hosts before. The proxies, workers "
        "and driver share this machine's cores, so a G=100 micro-batch also measures them.",
        "",
    ]
    return lines


def plots(rows: list[dict[str, Any]], recs: list[dict[str, Any]], directory: Any) -> list[Any]:
    figure = harness.plot_xy_panels(
        directory / "scaling-hosts.png",
        [
            harness.XYPanel(
                "ms per micro-batch vs injected RTT",
                "ms per micro-batch",
                {f"G={g}": {r["rtt_ms"]: r[f"g{g}_ms"] for r in rows} for g in (1, 100)},
            )
        ],
        xlabel="round-trip time between hosts, ms",
        title=f"{rows[0]['hosts']} hosts: G=1 pays the RTT every micro-batch, G=100 once a group",
        logx=False,
    )
    series = [
        harness.Series(f"{r['rtt_ms']:g} ms RTT", r["t"], r["latency_ms"])
        for r in recs
        if r.get("t")
    ]
    timeline = harness.plot_timeline(
        directory / "scaling-hosts-pulled-link.png",
        [harness.Panel("latency per micro-batch around a pulled host link", series)],
        xlabel="seconds since the link was pulled",
        ylabel="ms",
        event="link pulled",
    )
    return [p for p in (figure, timeline) if p is not None]


async def bench_scaling_hosts(args: argparse.Namespace) -> dict[str, Any]:
    quick = bool(getattr(args, "quick", False))
    repeats = 1 if quick else max(1, int(args.repeats or 1))
    batches = BATCHES_QUICK if quick else BATCHES
    rtts = tuple(getattr(args, "rtt_ms", None) or RTTS)
    rows, recs = [], []
    for rtt in rtts:
        row, rec = await bench_rtt(int(args.hosts), rtt, repeats, batches, quick)
        rows.append(row)
        recs.append(rec)
    lines = report(rows, recs, batches)
    directory = harness.results_dir(args)
    done = plots(rows, recs, directory)
    lines += harness.plot_links(done)
    harness.save_section(directory, "scaling-hosts", lines)
    exact = all(r["g1_exact"] and r["g100_exact"] for r in rows) and all(r["exact"] for r in recs)
    return {
        "name": "scaling-hosts",
        "rows": rows,
        "recovery": [{k: v for k, v in r.items() if k not in ("t", "latency_ms")} for r in recs],
        "plots": [str(p) for p in done],
        "lines": lines,
        "passed": exact,
    }
