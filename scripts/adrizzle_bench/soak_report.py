"""What one ``bench.py soak`` saw, its verdict and its markdown: plain data, no processes.

``soak`` fills a ``Record`` while it runs; ``summarize`` turns it into the JSON summary with the
verdict (every fresh engine ran, no stall, exact, RSS growth of the driver and of the workers
each under ``RSS_LIMIT_PERCENT``), and ``render`` into bench-results/soak.md's section.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from adrizzle_bench import harness

RSS_LIMIT_PERCENT = 10.0


# -- one soak's record --------------------------------------------------------------------


@dataclasses.dataclass
class Record:
    """What one soak saw: counters and short lists, nothing per batch (the record must not
    grow the driver's memory it measures)."""

    minutes: float
    engines: int
    kill_every: float
    shape: Mapping[str, float] = dataclasses.field(default_factory=dict)  # for the report
    engines_run: int = 0
    runs: int = 0
    batches: int = 0
    kills: list[str] = dataclasses.field(default_factory=list)
    recoveries: int = 0
    fresh_recoveries: int = 0
    stalls: list[str] = dataclasses.field(default_factory=list)
    stall_count: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    problem_count: int = 0
    longest_pause_s: float = 0.0
    slowest_run_s: float = 0.0
    slowest_start_s: float = 0.0
    warnings: list[tuple[float, str]] = dataclasses.field(default_factory=list)
    rss: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    python_blocks: dict[str, int] = dataclasses.field(default_factory=dict)
    rss_timeline: list[tuple[float, int, int]] = dataclasses.field(default_factory=list)
    workers_measured: tuple[int, int] = (0, 0)

    @property
    def warmup_s(self) -> float:
        """The warm-up before the start measurement: a tenth of the run, at most a minute."""
        return min(60.0, self.minutes * 6.0)

    load: tuple[float, float] = (0.0, 0.0)
    busy: int = 0
    pids: set[int] = dataclasses.field(default_factory=set)
    busy_pids: list[int] = dataclasses.field(default_factory=list)

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < 20:  # the first few say enough
            self.problems.append(text)

    def stall(self, text: str) -> None:
        self.stall_count += 1
        if len(self.stalls) < 20:
            self.stalls.append(text)


# -- what it says --------------------------------------------------------------------


def rss_verdict(start: int | None, end: int | None) -> dict[str, Any]:
    """MiB at the start and end, growth in percent, and whether it stayed under the limit."""
    if not start or end is None:
        return {"start_mib": None, "end_mib": None, "growth_percent": None, "ok": False}
    growth = harness.growth_percent(start, end)
    return {
        "start_mib": start / 2**20,
        "end_mib": end / 2**20,
        "growth_percent": growth,
        "ok": growth < RSS_LIMIT_PERCENT,
    }


def summarize(rec: Record) -> dict[str, Any]:
    """The soak's numbers and verdict as plain data (the JSON summary)."""
    rss = {who: rss_verdict(m.get("start"), m.get("end")) for who, m in rec.rss.items()}
    exact = rec.problem_count == 0 and rec.batches > 0
    rss_ok = set(rss) == {"driver", "workers"} and all(r["ok"] for r in rss.values())
    complete = rec.engines_run == rec.engines
    return {
        "name": "soak",
        "minutes": rec.minutes,
        "engines": rec.engines,
        "kill_every_s": rec.kill_every,
        "warmup_s": rec.warmup_s,
        "engines_run": rec.engines_run,
        "runs": rec.runs,
        "stalls": rec.stall_count,
        "stall_reasons": rec.stalls,
        "kills": len(rec.kills),
        "killed": rec.kills,
        "recoveries": rec.recoveries,
        "fresh_engine_recoveries": rec.fresh_recoveries,
        "batches": rec.batches,
        "exact": exact,
        "problems": rec.problem_count,
        "problem_list": rec.problems,
        "longest_pause_s": rec.longest_pause_s,
        "slowest_run_s": rec.slowest_run_s,
        "slowest_start_s": rec.slowest_start_s,
        "rss": rss,
        "rss_ok": rss_ok,
        "shape": dict(rec.shape),
        "driver_python_blocks": rec.python_blocks,
        "rss_timeline": [(t, d / 2**20, w / 2**20) for t, d, w in rec.rss_timeline],
        "workers_measured": list(rec.workers_measured),
        "busy_loops": rec.busy,
        "load": list(rec.load),
        "driver_warnings": len(rec.warnings),
        "passed": exact and rec.stall_count == 0 and rss_ok and complete,
        "pids": sorted(rec.pids),
        "busy_pids": rec.busy_pids,
    }


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(s: Mapping[str, Any]) -> list[str]:
    """The soak's markdown section (without the machine line the harness adds)."""
    rss, shape = s["rss"], s["shape"]

    def rss_row(label: str, who: str) -> str:
        r = rss.get(who) or rss_verdict(None, None)
        growth = "-" if r["growth_percent"] is None else f"{r['growth_percent']:+.1f} %"
        return (
            f"| {label} | {_mib(r['start_mib'])} | {_mib(r['end_mib'])} | {growth} "
            f"| {'yes' if r['ok'] else '**no**'} |"
        )

    start_n, end_n = s["workers_measured"]
    exact = "yes" if s["exact"] else f"**no** ({s['problems']} problems)"
    lines = [
        f"### soak: {s['minutes']:g} min, {s['engines']} fresh engines and one stateful stream, "
        f"{s['busy_loops']} busy loops on {os.cpu_count()} cores, a worker SIGKILLed about "
        f"every {s['kill_every_s']:g} s",
        "",
        "- stream: `Engine.local(workers=3, cores=1)`, a per-key running sum "
        f"({shape['keys']} keys, `update_state(..., combine=operator.add)`) over "
        f"{shape['partitions']} partitions x {shape['records']} ints per batch, unpaced, "
        f'`run({shape["chunk"]}, group_size="auto")` after `run()` on the same stream; every '
        "batch checked against plain Python (batch numbers once and in order, every key's "
        "total).",
        f"- kills: a random worker of the stream's engine, about every {s['kill_every_s']:g} s "
        f"(+-{shape['jitter']:.0%}), then `add_workers(1)`: "
        + (", ".join(s["killed"]) if s["killed"] else "none"),
        "- fresh engines: `Engine.local(workers=2, cores=1)`, one after another across the run "
        "(the first during the warm-up); each runs 40 single-stage, 20 shuffle and 30 generated "
        "micro-batches (group size auto), every answer checked.",
        "- stall: a run or the stream without progress for more than "
        f"{shape['stall_timeout_s']:g} s (the engines' `stall_timeout`), or a driver warning "
        "\"no progress\". Recoveries: the stream engine's `statistics()['recoveries']` (fresh "
        "engines lose no worker: theirs should be 0).",
        "- memory: resident set size after the warm-up "
        f"({shape['warmup_batches']} stream batches, the first fresh engine, then "
        f"{s.get('warmup_s', 0):g} s of the stream with one worker kill: the adaptive group size "
        "grows and the first recovery allocates what later ones reuse) and at the end; "
        f"workers: the stream engine's ({start_n} at the start, {end_n} at the end, the latter "
        "including the ones added back), each with its slot process.",
        "",
        "| engines run | stalls | worker kills | recoveries | fresh-engine recoveries "
        "| batches run | exact | longest stream pause s | slowest run s | load 1 min |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
        f"| {s['engines_run']}/{s['engines']} | {s['stalls']} | {s['kills']} | {s['recoveries']} "
        f"| {s['fresh_engine_recoveries']} | {s['batches']} | {exact} "
        f"| {s['longest_pause_s']:.3f} | {s['slowest_run_s']:.3f} "
        f"| {s['load'][0]:.2f} -> {s['load'][1]:.2f} |",
        "",
        "| resident memory (RSS) | at start MiB | at end MiB | growth "
        f"| under {RSS_LIMIT_PERCENT:g} % |",
        "|---|---:|---:|---:|---|",
        rss_row("driver (this process)", "driver"),
        rss_row("stream engine's workers + slots", "workers"),
        "",
        f"Verdict: {'**pass**' if s['passed'] else '**FAIL**'} (every fresh engine ran, "
        f"no stall, exact, RSS growth under {RSS_LIMIT_PERCENT:g} %).",
    ]
    if s["rss_timeline"]:
        lines += [
            "",
            "RSS across the run (seconds after the start, negative: in the warm-up; driver / "
            "workers MiB): "
            + "; ".join(f"{t:g}: {d:.1f} / {w:.1f}" for t, d, w in s["rss_timeline"]),
        ]
    blocks = s["driver_python_blocks"]
    if blocks.get("start") and "end" in blocks:
        lines += [
            "",
            f"The driver's live Python blocks (`sys.getallocatedblocks()` after a collection): "
            f"{blocks['start']} -> {blocks['end']} "
            f"({harness.growth_percent(blocks['start'], blocks['end']):+.1f} %); RSS growing "
            "while these stay flat is the allocator keeping freed memory, not objects kept alive.",
        ]
    if s["stall_reasons"]:
        lines += ["", "Stalls: " + "; ".join(s["stall_reasons"][:5])]
    if s["problem_list"]:
        lines += ["", "Problems: " + "; ".join(p[:200] for p in s["problem_list"][:5])]
    return [*lines, "", "Machine:", "", *harness.environment()]
