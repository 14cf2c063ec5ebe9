"""The real servers as session-scoped pytest fixtures (``redis_url``, ``postgres_dsn``,
``kafka_bootstrap``; loaded by tests/conftest.py). A server that is not installed is a skip that
says why, or a failure under ``CI=true``, where scripts/test installs them all. The servers
themselves are in ``adrizzle_bench.servers`` (the connector benchmark starts them too)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from adrizzle_bench.servers import (
    ServerUnavailable,
    free_port,
    kafka_broker,
    postgres_server,
    redis_server,
)

__all__ = ["free_port", "kafka_bootstrap", "postgres_dsn", "redis_url"]


def _serve(start: Callable[[], contextlib.AbstractContextManager[Any]]) -> Iterator[Any]:
    try:
        manager = start()
        server = manager.__enter__()
    except ServerUnavailable as why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}; scripts/test installs it under CI=true")
        pytest.skip(str(why))
    try:
        yield server
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    for server in _serve(redis_server):
        yield server.url


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    for server in _serve(postgres_server):
        yield server.dsn


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    for server in _serve(kafka_broker):
        yield server.bootstrap
