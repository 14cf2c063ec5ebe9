"""Word count over a stream of sentences, one micro-batch at a time, in two stages.

Each micro-batch reads ``--partitions`` partitions of sentences (generated deterministically
from the batch and partition number, like a replayable log read from an offset). Stage 1 splits
the sentences into words and pre-counts them per partition; the counts are shuffled by word
(pushed worker to worker, pre-scheduled: the driver is not involved between the stages); stage 2
sums them. Each batch's counts print as soon as that batch is done.

    python examples/word_count.py 50 10                 # 50 micro-batches in groups of 10
    python examples/word_count.py 50 auto               # adaptive group size
    python examples/word_count.py 20 1 --bsp --check    # Spark-style stages, verify counts
    python examples/word_count.py 100 10 --json         # last line: JSON summary
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import operator
import random
import sys
import time

from _cli import at_least, group_size_arg

import adrizzle

WORDS = (
    "the quick brown fox jumps over the lazy dog while a small group of micro batches "
    "streams through the engine and every word is counted exactly once"
).split()


def sentences(batch: int, sentences_per_partition: int, partition: int) -> list[str]:
    """The sentences of one partition of one micro-batch (deterministic)."""
    rng = random.Random(batch * 1_000_003 + partition)
    return [
        " ".join(rng.choices(WORDS, k=rng.randint(3, 12))) for _ in range(sentences_per_partition)
    ]


def expected_counts(batch: int, partitions: int, per_partition: int) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for p in range(partitions):
        for sentence in sentences(batch, per_partition, p):
            counts.update(sentence.split())
    return dict(counts)


def to_pair(word: str) -> tuple[str, int]:
    return (word, 1)


async def word_count(args: argparse.Namespace) -> dict[str, object]:
    async with adrizzle.Engine.local(workers=args.workers, cores=args.cores) as engine:
        jobs = [
            engine.generate(
                functools.partial(sentences, b, args.sentences), partitions=args.partitions
            )
            .flat_map(str.split)
            .map(to_pair)
            .reduce_by_key(operator.add, partitions=args.reducers)
            for b in range(args.batches)
        ]
        mismatches = 0
        total_words = 0
        started = time.perf_counter()
        async for job in engine.iter_jobs(
            jobs, dict, group_size=args.group_size, pre_schedule=not args.bsp, timeout=120
        ):
            assert job.values is not None
            counts: dict[str, int] = {}
            for part in job.values:
                counts.update(part)
            total_words += sum(counts.values())
            if args.check and counts != expected_counts(job.index, args.partitions, args.sentences):
                mismatches += 1
                print(f"batch {job.index}: counts differ from plain Python", file=sys.stderr)
            if not args.json:
                top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:4]
                words = ", ".join(f"{w}={n}" for w, n in top)
                print(f"batch {job.index:4d}: {sum(counts.values()):6d} words; top: {words}")
        elapsed = time.perf_counter() - started
    return {
        "batches": args.batches,
        "group_size": args.group_size,
        "mode": "bsp" if args.bsp else "pre-scheduled",
        "ms_per_batch": elapsed / args.batches * 1e3,
        "total_words": total_words,
        "checked": args.check,
        "mismatches": mismatches,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "batches", type=at_least(1), nargs="?", default=20, help="number of micro-batches N"
    )
    parser.add_argument(
        "group_size",
        type=group_size_arg,
        nargs="?",
        default=10,
        help="micro-batches per group G, or auto (adaptive)",
    )
    parser.add_argument("--workers", type=at_least(1), default=2, help="local worker processes")
    parser.add_argument("--cores", type=at_least(1), default=1, help="slot processes per worker")
    parser.add_argument("--partitions", type=int, default=4, help="map partitions per batch")
    parser.add_argument("--reducers", type=int, default=2, help="reduce partitions per batch")
    parser.add_argument("--sentences", type=int, default=200, help="per partition and batch")
    parser.add_argument("--bsp", action="store_true", help="driver barrier between stages")
    parser.add_argument("--check", action="store_true", help="verify against plain Python")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary")
    args = parser.parse_args()
    summary = adrizzle.run(word_count(args))
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['batches']} micro-batches ({summary['mode']}, group size "
            f"{summary['group_size']}): {summary['ms_per_batch']:.2f} ms per micro-batch, "
            f"{summary['total_words']} words"
            + (f", {summary['mismatches']} mismatches" if args.check else "")
        )
    return 1 if summary["mismatches"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
