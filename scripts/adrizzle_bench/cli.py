"""The ``scripts/bench.py`` command line: the sub-commands, their flags, running and printing.

    python scripts/bench.py SUB-COMMAND [--quick] [--json] [--results-dir DIR] [flags]

Every number is measured side by side in one run on this machine. Each sub-command prints its
markdown (the machine line, then its tables), writes it to bench-results/NAME.md and
reassembles bench-results/RESULTS.md from every NAME.md there. ``--json`` prints one JSON
object at the end instead. ``all`` runs every sub-command but ``soak`` (a long run of its own).
Percentiles are linear between the closest ranks (numpy's default) everywhere.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import adrizzle
from adrizzle.progress import progress
from adrizzle_bench import (
    checkpoint_cost,
    connectors,
    harness,
    peers,
    recovery,
    scaling,
    shuffle,
    single_stage,
    soak,
    streaming,
)

Bench = Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]

# name -> (the benchmark, what it measures); ``all`` runs them in this order, but soak.
BENCHES: dict[str, tuple[Bench, str]] = {
    "single-stage": (
        single_stage.bench_single_stage,
        "a cached single-stage micro-batch at G = 1, 10, 100 vs the hand-written floor",
    ),
    "shuffle": (
        shuffle.bench_shuffle,
        "a two-stage micro-batch, pre-scheduled at G = 1, 10, 100 vs BSP; worker memory",
    ),
    "recovery": (
        recovery.bench_recovery,
        "a worker SIGKILLed mid-stream (running sum, YSB): how fast latency recovers, exactness",
    ),
    "streaming": (
        streaming.bench_streaming,
        "Yahoo streaming benchmark: the highest rate each group size sustains",
    ),
    "scaling": (
        scaling.bench_scaling,
        "driver CPU and frames per task and group, 1 to 8 workers, G = 1 to 1000 (or "
        "--simulated N,..., or --hosts N --rtt-ms X,...)",
    ),
    "peers": (
        peers.bench_peers,
        "the same workloads on Dask, Ray and PySpark, side by side (bench extra)",
    ),
    "checkpoint-cost": (
        checkpoint_cost.bench_checkpoint_cost,
        "what checkpointing stream state at every group costs",
    ),
    "connectors": (
        connectors.bench_connectors,
        "Redis Streams / Kafka -> counts -> PostgreSQL / Redis, exactly once: rate and latency",
    ),
    "soak": (
        soak.bench_soak,
        "fresh engines and a long stateful stream under busy loops and worker SIGKILLs",
    ),
}
NOT_IN_ALL = ("soak",)
DEFAULT_REPEATS = {"checkpoint-cost": checkpoint_cost.DEFAULT_REPEATS}


def make_parser() -> argparse.ArgumentParser:
    listing = "\n".join(f"  {name:<16} {what}" for name, (_run, what) in BENCHES.items())
    parser = argparse.ArgumentParser(
        prog="bench.py",
        description=f"{__doc__}\nsub-commands:\n{listing}\n  {'all':<16} all of them but soak",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bench", choices=[*BENCHES, "all"], help="what to run (see above)")
    parser.add_argument("--batches", type=int, default=200, help="micro-batches per run")
    parser.add_argument(
        "--repeats", type=int, help="runs per row, median reported (default 3; checkpoint-cost 5)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="local workers (single-stage, shuffle)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats, for a smoke run")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    parser.add_argument(
        "--results-dir", help="where NAME.md, RESULTS.md and the plots go (default bench-results/)"
    )
    ysb = parser.add_argument_group("streaming")
    ysb.add_argument("--trial-seconds", type=float, help="event time per trial (default 10)")
    ysb.add_argument("--window", type=float, help="window length, s (default 2)")
    ysb.add_argument("--batch-interval", type=int, help="batch interval, ms (default 1)")
    ysb.add_argument("--start-rate", type=int, help="first events/s tried (default 1000)")
    ysb.add_argument("--max-rate", type=int, help="highest events/s tried (default 512000)")
    ysb.add_argument("--bisect", type=int, help="bisection steps per size (default 1)")
    scale = parser.add_argument_group("scaling")
    scale.add_argument(
        "--simulated",
        type=_ints,
        metavar="N,N,...",
        help="simulated workers instead of local ones, at these counts (e.g. 16,128,512,1024)",
    )
    scale.add_argument(
        "--scaling-workers",
        type=_ints,
        metavar="N,N,...",
        help="local workers at these counts (default 1,2,4,8; e.g. 1,32)",
    )
    scale.add_argument(
        "--scaling-records",
        type=int,
        help="local workers: ints per partition (default 1000; issue 18's table used 100)",
    )
    scale.add_argument(
        "--task-cost-us", type=float, help="--simulated: each task's cost, µs (default 0)"
    )
    scale.add_argument(
        "--sim-results",
        choices=["slot", "batch"],
        help="--simulated: result frames packed as a real slot packs them (slot, default: when "
        "it runs out of ready work or after the linger time) or one per micro-batch per slot",
    )
    scale.add_argument(
        "--hosts", type=int, help="real workers on this many network namespaces (needs root)"
    )
    scale.add_argument(
        "--rtt-ms",
        type=_floats,
        metavar="X,X,...",
        help="--hosts: round-trip times injected by delay proxies (default 0,0.5,2)",
    )
    long_run = parser.add_argument_group("soak")
    long_run.add_argument("--minutes", type=float, help="how long (default 10; --quick: 1)")
    long_run.add_argument("--engines", type=int, help="fresh engines (default 20; --quick: 4)")
    long_run.add_argument(
        "--kill-every", type=float, help="seconds between worker kills (default 30; --quick: 15)"
    )
    return parser


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 16,128, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0,0.5,2, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected numbers >= 0, got {text!r}")
    return values


def for_bench(args: argparse.Namespace, name: str) -> argparse.Namespace:
    """A copy of the arguments for one sub-command (they may fill in their own defaults)."""
    own = copy.copy(args)
    if own.quick:
        own.repeats = 1
    elif own.repeats is None:
        own.repeats = DEFAULT_REPEATS.get(name, 3)
    return own


def main(argv: Sequence[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    names = [n for n in BENCHES if n not in NOT_IN_ALL] if args.bench == "all" else [args.bench]
    summary: dict[str, Any] = {"machine": harness.machine(), "results": []}
    with progress(total=len(names), desc="benchmarks", quiet=args.json) as bar:
        for name in names:
            bar.set_postfix_str(name)
            result = adrizzle.run(BENCHES[name][0](for_bench(args, name)))
            lines = result.pop("lines")
            if not args.json:
                print(harness.section_text(lines), end="", flush=True)
            summary["results"].append(result)
            bar.update()
    if args.json:
        print(json.dumps(summary))
    if any(r.get("passed") is False for r in summary["results"]):
        sys.exit(1)  # a run with a verdict (soak) failed it
