"""``adrizzle-worker`` flags from ``ADRIZZLE_*`` variables, and the connect back-off schedule."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest

from adrizzle.worker.cli import build_parser, env_name, parse_args
from adrizzle.worker.retry import backoff_delays, retrying


def test_every_flag_documents_its_variable() -> None:
    parser = build_parser()
    text = " ".join(parser.format_help().split())
    names = [env_name(a) for a in parser._actions if a.dest != "help"]
    assert "ADRIZZLE_DRIVER" in names
    assert "ADRIZZLE_CONNECT_RETRY" in names
    assert "ADRIZZLE_MAX_CONNECTIONS_PER_ADDRESS" in names
    for name in names:
        assert name is not None
        assert f"[{name}]" in text
    assert "ADRIZZLE_AUTH_TOKEN" in text  # the token's variable, not a flag's


def test_variables_set_defaults_and_flags_win() -> None:
    env = {
        "ADRIZZLE_DRIVER": "tcp://driver:7077",
        "ADRIZZLE_CORES": "3",
        "ADRIZZLE_CONNECT_RETRY": "45",
        "ADRIZZLE_LOG_JSON": "yes",
        "ADRIZZLE_LOG_LEVEL": "debug",
        "ADRIZZLE_TLS_CA_FILE": "/ca.pem",
        "ADRIZZLE_EXTRA_ARGS": "--ignored",  # not a flag's variable: ignored
    }
    args = parse_args([], env)
    assert (args.driver, args.cores, args.connect_retry) == ("tcp://driver:7077", 3, 45.0)
    assert (args.log_json, args.log_level, args.tls_ca_file) == (True, "debug", "/ca.pem")
    args = parse_args(["tcp://other:1", "--cores", "5", "--log-level", "error"], env)
    assert (args.driver, args.cores, args.log_level) == ("tcp://other:1", 5, "error")
    assert not parse_args([], {**env, "ADRIZZLE_LOG_JSON": "0"}).log_json
    # Nothing set: the parser's own defaults.
    args = parse_args(["tcp://d:1"], {})
    assert (args.connect_retry, args.log_json, args.name) == (0.0, False, None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ADRIZZLE_CORES": "many"}, "ADRIZZLE_CORES='many': not a valid value for --cores"),
        ({"ADRIZZLE_LOG_JSON": "maybe"}, "ADRIZZLE_LOG_JSON='maybe': --log-json is a switch"),
        ({"ADRIZZLE_LOG_LEVEL": "loud"}, "--log-level takes one of debug, info"),
        ({}, "the driver address is required"),
    ],
)
def test_bad_variables_exit_2_naming_the_variable(
    env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [] if not env else ["tcp://d:1"]
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv, env)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_backoff_doubles_to_the_cap_with_jitter() -> None:
    low = backoff_delays(first=0.1, cap=5.0, rng=lambda: 0.0)
    high = backoff_delays(first=0.1, cap=5.0, rng=lambda: 1.0)
    lows = [next(low) for _ in range(10)]
    highs = [next(high) for _ in range(10)]
    assert highs[:6] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    assert highs[6:] == pytest.approx([5.0] * 4)
    assert lows == pytest.approx([h / 2 for h in highs])


async def test_retrying_gives_up_after_its_seconds(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def unreachable() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("cannot connect")

    caplog.set_level(logging.INFO, "adrizzle.worker")
    start = time.monotonic()
    with pytest.raises(ConnectionError):
        await retrying(unreachable, 0.5, (ConnectionError,), delays=iter([0.1] * 100))
    assert 0.5 <= time.monotonic() - start < 1.0
    # At least the 0.1 s steps that fit; no upper bound: the last delay is cut to what is left,
    # and with uvloop's millisecond timers a wake a hair before the deadline retries once more
    # (seen: 8 calls).
    assert calls >= 4
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == calls - 1  # one line per retry, none for the last failure
    assert all(r.levelno == logging.INFO for r in retries)


async def test_retrying_stops_at_once_on_other_errors_and_returns_success() -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise PermissionError("wrong token")

    with pytest.raises(PermissionError):
        await retrying(refused, 30, (ConnectionError,))
    assert calls == 1
    with pytest.raises(ConnectionError):  # 0 s: one attempt, no retry
        await retrying(_fails_then(1, "ok"), 0, (ConnectionError,))
    assert await retrying(_fails_then(3, "ok"), 10, (ConnectionError,), delays=iter([0.01] * 9))


def _fails_then(failures: int, value: str) -> Callable[[], Awaitable[str]]:
    left = failures

    async def attempt() -> str:
        nonlocal left
        await asyncio.sleep(0)
        if left:
            left -= 1
            raise ConnectionError("not yet")
        return value

    return attempt


def test_workers_readme_lists_every_variable() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "workers" / "README.md").read_text()
    for action in build_parser()._actions:
        name = env_name(action)
        if name is not None:
            assert f"`{name}`" in readme, name
