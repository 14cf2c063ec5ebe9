"""The Yahoo streaming benchmark (YSB) as an adrizzle stream.

100 campaigns x 10 ads. Ad events (JSON: user_id, page_id, ad_id, ad_type, event_type in
{view, click, purchase}, event_time in ms, ip) are generated deterministically at ``--rate``
events per second of wall-clock time, like a Kafka topic read from an offset: micro-batch ``b``
of partition ``p`` holds the events of the ``b``-th batch interval that fall in partition ``p``,
and the slot reads it once that interval is over. The pipeline: parse -> keep views -> project
(ad_id, event_time) -> join ad to campaign (a broadcast table) -> count per campaign per 10 s
event-time window. A window's count is emitted once the watermark (largest event time seen)
passes the window's end; its latency is the time that count reaches the driver minus the
window's end.

    python examples/ysb.py --seconds 30 --rate 20000 --group-size auto
    python examples/ysb.py --seconds 12 --rate 5000 --group-size 10 --check --json

``--check`` recomputes every window's count in plain Python over the same events and counts the
windows that differ. The last line with ``--json`` is a JSON summary.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import math
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import adrizzle

CAMPAIGNS = 100
ADS_PER_CAMPAIGN = 10
AD_TYPES = ("banner", "modal", "sponsored-search", "mail", "mobile")
EVENT_TYPES = ("view", "click", "purchase")
POOL = 100  # distinct users, pages and ips


# What determines the events: seed, rate (events per second), interval_ms (batch interval),
# t0_ms (event time of the first event, epoch ms) and partitions. Small on purpose: it travels
# with every group; the ads, users, pages and ips to draw from and the ad -> campaign table are
# derived from the seed once per process (``pools``, ``campaign_table``).
Setup = dict[str, Any]


def make_setup(seed: int, rate: int, interval_ms: int, t0_ms: int, partitions: int) -> Setup:
    return {
        "seed": seed,
        "rate": rate,
        "interval_ms": interval_ms,
        "t0_ms": t0_ms,
        "partitions": partitions,
    }


@functools.lru_cache(maxsize=4)
def pools(seed: int) -> dict[str, tuple[str, ...]]:
    """The ads (10 per campaign, in campaign order), users, pages and ips events draw from."""
    rng = random.Random(seed)

    def ids(n: int) -> tuple[str, ...]:
        return tuple(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n))

    return {
        "ads": ids(CAMPAIGNS * ADS_PER_CAMPAIGN),
        "users": ids(POOL),
        "pages": ids(POOL),
        "ips": tuple(".".join(str(rng.randrange(1, 255)) for _ in range(4)) for _ in range(POOL)),
    }


@functools.lru_cache(maxsize=4)
def campaign_table(seed: int) -> dict[str, str]:
    """ad_id -> campaign_id: 10 consecutive ads per campaign (campaign ids are deterministic)."""
    rng = random.Random(seed + 1)
    campaigns = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(CAMPAIGNS)]
    return {ad: campaigns[i // ADS_PER_CAMPAIGN] for i, ad in enumerate(pools(seed)["ads"])}


def batch_range(setup: Setup, batch: int) -> range:
    """Global indices of the events in batch ``batch`` (event i happens at i / rate s)."""
    per_ms = setup["rate"] * setup["interval_ms"]
    return range(batch * per_ms // 1000, (batch + 1) * per_ms // 1000)


def events(setup: Setup, batch: int, partition: int) -> list[str]:
    """The source: batch ``batch`` of partition ``partition`` (events i with i % P == p)."""
    span = batch_range(setup, batch)
    partitions = setup["partitions"]
    first = span.start + (partition - span.start) % partitions
    indices = range(first, span.stop, partitions)
    n = len(indices)
    rng = random.Random(setup["seed"] * 1_000_003 + batch * 1009 + partition)
    pool = pools(setup["seed"])
    ads = rng.choices(pool["ads"], k=n)
    users = rng.choices(pool["users"], k=n)
    pages = rng.choices(pool["pages"], k=n)
    ips = rng.choices(pool["ips"], k=n)
    ad_types = rng.choices(AD_TYPES, k=n)
    kinds = rng.choices(EVENT_TYPES, k=n)
    t0, rate = setup["t0_ms"], setup["rate"]
    return [
        f'{{"user_id": "{users[j]}", "page_id": "{pages[j]}", "ad_id": "{ads[j]}", '
        f'"ad_type": "{ad_types[j]}", "event_type": "{kinds[j]}", '
        f'"event_time": {t0 + i * 1000 // rate}, "ip": "{ips[j]}"}}'
        for j, i in enumerate(indices)
    ]


# -- the pipeline's functions -------------------------------------------------------------


def parse(line: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(line)
    return event


def is_view(event: dict[str, Any]) -> bool:
    return event["event_type"] == "view"


def project(event: dict[str, Any]) -> tuple[str, int]:
    return (event["ad_id"], event["event_time"])


def join_campaigns(seed: int, ad_times: Iterable[tuple[str, int]]) -> Iterator[tuple[str, float]]:
    """(ad_id, event_time ms) -> (campaign_id, event_time s): the join with the ad table (a
    hash join against the table each process holds, as YSB's Flink and Storm versions do)."""
    table = campaign_table(seed)
    return ((table[ad], t / 1000) for ad, t in ad_times)


def event_seconds(campaign_time: tuple[str, float]) -> float:
    return campaign_time[1]


def expected_counts(setup: Setup, batches: int, window_ms: int) -> collections.Counter[Any]:
    """Plain Python over the same events: (campaign, window index) -> views."""
    table = campaign_table(setup["seed"])
    counts: collections.Counter[Any] = collections.Counter()
    for b in range(batches):
        for p in range(setup["partitions"]):
            for line in events(setup, b, p):
                e = json.loads(line)
                if e["event_type"] == "view":
                    counts[(table[e["ad_id"]], e["event_time"] // window_ms)] += 1
    return counts


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def run_ysb(
    engine: adrizzle.Engine,
    *,
    seconds: float,
    rate: int,
    group_size: Any,
    batch_interval: float = 0.01,
    window: float = 10.0,
    partitions: int = 4,
    seed: int = 7,
    lead: float = 0.3,
    check: bool = False,
    align: bool = False,
    progress: bool = False,
    give_up_behind: float | None = None,
    on_batch: Callable[[adrizzle.StreamBatch], Any] | None = None,
) -> dict[str, Any]:
    """One YSB run on ``engine``; returns the summary (see the module doc).

    ``give_up_behind``: stop early once a batch is done more than this many seconds after its
    interval ended (the rate is not sustainable); the summary then says ``gave_up``.
    ``on_batch(update)`` is called with every micro-batch's output as it arrives (a benchmark
    records latencies there, or kills a worker at a chosen batch)."""
    interval_ms = round(batch_interval * 1000)
    if interval_ms < 1 or abs(interval_ms - batch_interval * 1000) > 1e-6:
        raise ValueError("the batch interval must be a whole number of milliseconds")
    window_ms = round(window * 1000)
    start = time.time() + lead
    if align:  # start on a window boundary, so every window but the last is whole
        start = math.ceil(start * 1000 / window_ms) * window_ms / 1000
    t0_ms = round(start * 1000)
    batches = max(1, round(seconds * 1000 / interval_ms))
    setup = make_setup(seed, rate, interval_ms, t0_ms, partitions)
    stream = engine.stream(
        functools.partial(events, setup),
        partitions,
        batch_interval=interval_ms / 1000,
        start=t0_ms / 1000,
        batches=batches,
    )
    counts = (
        stream.map(parse)
        .filter(is_view)
        .map(project)
        .map_partitions(functools.partial(join_campaigns, seed))
        .window_count(window, event_time=event_seconds)
    )
    found: dict[tuple[str, int], int] = {}
    duplicates = 0
    window_latency: dict[int, float] = {}
    batch_latency: list[float] = []
    last_done = start
    run = counts.run(group_size=group_size, timeout=60.0)
    updates = aiter(run)
    gave_up = False
    async for update in updates:
        if on_batch is not None:
            on_batch(update)
        last_done = update.done_at
        if give_up_behind is not None and (update.latency or 0.0) > give_up_behind:
            gave_up = True
            await updates.aclose()  # type: ignore[attr-defined]
            break
        if update.latency is not None:
            batch_latency.append(update.latency)
        for r in update.values:
            w = round(r.start / window)
            if (r.key, w) in found:
                duplicates += 1
            found[(r.key, w)] = r.value
            if r.complete:
                window_latency[w] = max(window_latency.get(w, 0.0), update.done_at - r.end)
        if progress and update.batch % max(1, batches // 10) == 0:
            print(
                f"batch {update.batch}/{batches}: behind by {(update.latency or 0.0) * 1e3:.1f} ms",
                file=sys.stderr,
            )
    delivered = batches if not gave_up else len(batch_latency)
    total_events = sum(len(batch_range(setup, b)) for b in range(delivered))
    elapsed = last_done - start
    mismatches = duplicates
    windows_checked = 0
    if check and not gave_up:
        expected = expected_counts(setup, batches, window_ms)
        windows_checked = len(expected.keys() | found.keys())
        mismatches += sum(1 for k in expected.keys() | found.keys() if expected[k] != found.get(k))
    latencies = list(window_latency.values())
    return {
        "seconds": seconds,
        "rate": rate,
        "batch_interval_ms": interval_ms,
        "window_s": window,
        "batches": batches,
        "events": total_events,
        "events_per_s": total_events / elapsed if elapsed > 0 else None,
        "windows": len(found),
        "windows_complete": len(latencies),
        "windows_checked": windows_checked,
        "mismatches": mismatches if check and not gave_up else None,
        "latency_p50_ms": _ms(statistics.median(latencies) if latencies else None),
        "latency_p99_ms": _ms(percentile(latencies, 0.99)),
        "batch_latency_p50_ms": _ms(statistics.median(batch_latency) if batch_latency else None),
        "batch_latency_p99_ms": _ms(percentile(batch_latency, 0.99)),
        "behind_at_end_ms": _ms(batch_latency[-1] if batch_latency else None),
        "gave_up": gave_up,
        "group_size": group_size if isinstance(group_size, int) else "auto",
        "group_sizes": {str(k): v for k, v in run.group_sizes().items()},
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def group_size_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a positive int or 'auto'") from None
    if value < 1:
        raise argparse.ArgumentTypeError("a positive int or 'auto'")
    return value


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    # This module is shipped to the workers, whose slots import it: the pipeline's functions
    # travel by reference, like a job module installed on a cluster, and the per-process
    # caches below live as long as the slots. (Pickled by value instead, every group would
    # carry the code and its data.)
    engine = adrizzle.Engine.local(workers=args.workers, cores=args.cores, py_files=[__file__])
    async with engine:
        return await run_ysb(
            engine,
            seconds=args.seconds,
            rate=args.rate,
            group_size=args.group_size,
            batch_interval=args.batch_interval / 1000,
            window=args.window,
            partitions=args.partitions,
            seed=args.seed,
            check=args.check,
            align=args.align,
            progress=not args.json,
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="event time to generate")
    parser.add_argument("--rate", type=int, default=10_000, help="events per second")
    parser.add_argument("--group-size", type=group_size_arg, default="auto", help="G or auto")
    parser.add_argument("--batch-interval", type=int, default=10, help="milliseconds")
    parser.add_argument("--window", type=float, default=10.0, help="window length, seconds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--align", action="store_true", help="start on a window boundary")
    parser.add_argument("--check", action="store_true", help="verify every window count")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rate < 1:
        parser.error("--seconds and --rate must be positive")
    summary = adrizzle.run(main_async(args))
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>22}: {value}")
    return 1 if summary["mismatches"] else 0


if __name__ == "__main__":
    # Run as the importable module ``ysb`` (not ``__main__``), so functions pickle by reference.
    import ysb

    raise SystemExit(ysb.main())
