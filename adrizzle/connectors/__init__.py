"""Connectors: sources that read brokers and sinks that write stores, exactly once.

The protocols are in ``adrizzle.connectors.base``; each connector is its own module and imports
its client library (an optional extra: ``adrizzle[redis]``, ``[kafka]``, ``[postgres]``, or
``[connectors]`` for all) only when that module is imported:

- ``adrizzle.connectors.redis``: ``RedisStreamSource``, ``RedisSink``;
- ``adrizzle.connectors.kafka``: ``KafkaSource``, ``KafkaRecord``;
- ``adrizzle.connectors.postgres``: ``PostgresSink``;
- ``adrizzle.connectors.files``: ``FileSource``, ``FileSink`` (standard library only).

See docs/connectors.md.
"""

from __future__ import annotations

from adrizzle.connectors.base import Position, Sink, SinkWriter, Source, SourceReader

__all__ = ["Position", "Sink", "SinkWriter", "Source", "SourceReader"]
