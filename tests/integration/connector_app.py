"""A driver program for the connector tests, run as a real process (so it can be SIGKILLed and
started again with the same checkpoint directory): a connector source -> count per key per
batch -> a sink on the workers, until the source is idle and a "done" file exists.

    python -m tests.integration.connector_app --source redis URL STREAMS... --sink postgres DSN
        --checkpoint-dir D [--state] [--max-records N] [--done FILE] [--idle N]

Prints ``batch B RECORDS`` per micro-batch and ``exit`` at the end (flushed: the test reads it).
"""

from __future__ import annotations

import argparse
import operator
import sys
from typing import Any

import cloudpickle

import adrizzle
from adrizzle.connectors.base import Sink, Source

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def key_of_redis(record: tuple[str, dict[str, str]]) -> tuple[str, int]:
    return (record[1]["key"], 1)


def key_of_kafka(record: Any) -> tuple[str, int]:
    return (record.value.decode(), 1)


def key_of_line(line: str) -> tuple[str, int]:
    return (line, 1)


def build(args: argparse.Namespace) -> tuple[Source, Sink, Any]:
    kind, *rest = args.source
    source: Source
    if kind == "redis":
        from adrizzle.connectors.redis import RedisStreamSource

        source = RedisStreamSource(
            rest[0], rest[1:], max_records_per_batch=args.max_records, group="adrizzle"
        )
        key = key_of_redis
    elif kind == "kafka":
        from adrizzle.connectors.kafka import KafkaSource

        source = KafkaSource(
            rest[0], rest[1], group_id="adrizzle", max_records_per_batch=args.max_records
        )
        key = key_of_kafka
    else:
        from adrizzle.connectors.files import FileSource

        source = FileSource(
            rest[0], "*.txt", partitions=int(rest[1]), max_records_per_batch=args.max_records
        )
        key = key_of_line
    sink: Sink
    kind, *rest = args.sink
    if kind == "postgres":
        from adrizzle.connectors.postgres import PostgresSink

        sink = PostgresSink(rest[0], rest[1], ["key", "n"])
    else:
        from adrizzle.connectors.files import FileSink

        sink = FileSink(rest[0])
    return source, sink, key


def add(values: list[int], total: int | None) -> int:
    return (total or 0) + sum(values)


async def main(args: argparse.Namespace) -> None:
    source, sink, key = build(args)
    async with adrizzle.Engine.local(
        workers=args.workers, cores=1, checkpoint_dir=args.checkpoint_dir
    ) as engine:
        stream = engine.stream(source, batch_interval=0.01, name=args.name).map(key)
        if args.state:  # running totals per key; the sink gets each batch's new totals
            counted = stream.update_state(add, combine=operator.add, partitions=2)
        else:
            counted = stream.count_by_key(partitions=2)
        idle = 0
        async for batch in counted.sink(sink).run(group_size=args.group_size, timeout=60):
            assert batch.positions is not None
            records = sum(1 for s, e in batch.positions.values() if s != e)
            print(f"batch {batch.batch} {records}", flush=True)
            idle = 0 if records else idle + 1
            if idle >= args.idle and (args.done is None or _exists(args.done)):
                break
    print("exit", flush=True)


def _exists(path: str) -> bool:
    import os

    return os.path.exists(path)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--source", nargs="+", required=True)
    p.add_argument("--sink", nargs="+", required=True)
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--state", action="store_true")
    p.add_argument("--max-records", type=int, default=None)
    p.add_argument("--group-size", default="4")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--done", default=None)
    p.add_argument("--idle", type=int, default=30)
    p.add_argument("--name", default="counts", help="the stream's name (keys sink progress)")
    args = p.parse_args(argv)
    args.group_size = args.group_size if args.group_size == "auto" else int(args.group_size)
    return args


if __name__ == "__main__":
    adrizzle.run(main(parse()))
