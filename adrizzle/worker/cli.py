"""``adrizzle-worker``: the command operators run on each host.

Every flag ``--foo-bar`` can also be given as the environment variable ``ADRIZZLE_FOO_BAR``
(the driver address as ``ADRIZZLE_DRIVER``); a flag on the command line wins. Launchers and
container manifests use that to configure workers without building command lines.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

import orjson

from adrizzle.wire import auth
from adrizzle.wire.address import parse_address

if TYPE_CHECKING:
    from collections.abc import Mapping

ENV_PREFIX = "ADRIZZLE_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


class _JsonFormatter(logging.Formatter):
    worker: str | None = None  # set once the worker's id is known: one field to group logs by

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="adrizzle-worker",
        description="Join an adrizzle cluster: dial the driver, authenticate with the cluster "
        "token, and run tasks in --cores slot processes.",
        epilog=f"The token comes from --token-file or ${auth.TOKEN_ENV}. Anyone holding it can "
        "run code on this worker. Every flag --foo-bar may instead be set as the environment "
        f"variable {ENV_PREFIX}FOO_BAR (shown in [brackets]); a flag given on the command line "
        "wins. A switch's variable takes 1/true/yes/on or 0/false/no/off.",
    )
    p.add_argument("driver", nargs="?", help="driver address, tcp://HOST:PORT (default port 7077)")
    p.add_argument(
        "--cores",
        type=int,
        default=os.cpu_count() or 1,
        help="slot processes to run tasks in (default: CPU count)",
    )
    p.add_argument("--token-file", help="file holding the cluster token (mode 600)")
    p.add_argument(
        "--name", default=None, help="worker id shown by the driver (default: HOSTNAME-PID)"
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the driver to accept (default 10)",
    )
    p.add_argument(
        "--connect-retry",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="keep dialing a driver that does not answer yet for up to SECONDS (jittered "
        "exponential back-off, 0.1 s doubling to 5 s); a refused token is never retried "
        "(default 0: exit at once; the launchers in adrizzle.deploy turn it on)",
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=60.0,
        help="seconds the slot processes may take to start before the worker gives up (default 60)",
    )
    p.add_argument(
        "--max-frame-bytes",
        type=int,
        default=1 << 30,
        help="largest frame accepted from the driver (default 1 GiB)",
    )
    p.add_argument(
        "--data-listen",
        default=None,
        metavar="HOST:PORT",
        help="where to listen for shuffle blocks from other workers (default: the local "
        "address that reaches the driver, loopback for a loopback driver; a free port)",
    )
    p.add_argument(
        "--data-advertise",
        default=None,
        metavar="HOST:PORT",
        help="the data address other workers should dial, when it differs from --data-listen "
        "(NAT, containers, a proxy)",
    )
    p.add_argument(
        "--shuffle-timeout",
        type=float,
        default=60.0,
        help="seconds a reduce task waits for its map outputs before failing (default 60)",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=1.0,
        help="seconds between heartbeats to the driver (default 1)",
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=30.0,
        help="exit when the driver has been silent this many seconds of this worker's own "
        "listening time (default 30: longer than the driver's 5 s for workers, so that a "
        "driver whose loop is briefly blocked does not lose its cluster)",
    )
    p.add_argument(
        "--handshake-timeout",
        type=float,
        default=5.0,
        help="seconds a connection may take to authenticate (TLS included) before it is "
        "closed (default 5)",
    )
    p.add_argument(
        "--max-connections-per-address",
        type=int,
        default=64,
        help="open connections one host may have to the data port (default 64)",
    )
    p.add_argument(
        "--no-result-links",
        dest="result_links",
        action="store_false",
        help="send the slots' results and acknowledgements through this worker process "
        "instead of over each slot's own connection to the driver (default: result links "
        "on; they save a process hop per group)",
    )
    tls = p.add_argument_group(
        "TLS",
        "all three, or none: both ports then speak TLS and every peer must present a "
        "certificate signed by the CA",
    )
    tls.add_argument("--tls-ca-file", metavar="FILE", help="the cluster CA's certificate (PEM)")
    tls.add_argument("--tls-cert", metavar="FILE", help="this worker's certificate chain (PEM)")
    tls.add_argument("--tls-key", metavar="FILE", help="its private key (PEM, mode 600)")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="default info",
    )
    p.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    for action in p._actions:
        name = env_name(action)
        if name is not None:
            action.help = f"{action.help or ''} [{name}]".lstrip()
    return p


def env_name(action: argparse.Action) -> str | None:
    """``ADRIZZLE_FOO_BAR`` for ``--foo-bar`` (``ADRIZZLE_DRIVER`` for the positional)."""
    if action.dest == "help":
        return None
    longs = [s for s in action.option_strings if s.startswith("--")]
    flag = longs[0][2:] if longs else action.dest
    return ENV_PREFIX + flag.replace("-", "_").upper()


def apply_environment(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Make each ``ADRIZZLE_*`` variable set in ``environ`` its flag's default (so a flag on
    the command line still wins); a value the flag would refuse exits 2, naming the
    variable."""
    for action in parser._actions:
        name = env_name(action)
        if name is None or name not in environ:
            continue
        raw = environ[name]
        flag = "/".join(action.option_strings) or action.dest
        value: object = raw
        if action.nargs == 0:  # a switch (store_true)
            if raw.strip().lower() not in (*_TRUE, *_FALSE):
                parser.error(f"{name}={raw!r}: {flag} is a switch: use 1 or 0")
            value = raw.strip().lower() in _TRUE
        elif action.type is not None:
            try:
                value = action.type(raw)  # type: ignore[operator]
            except (TypeError, ValueError):
                parser.error(f"{name}={raw!r}: not a valid value for {flag}")
        if action.choices is not None and value not in action.choices:
            parser.error(f"{name}={raw!r}: {flag} takes one of {', '.join(action.choices)}")
        action.default = value


def parse_args(
    argv: list[str] | None = None, environ: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """The worker's options: the command line over ``ADRIZZLE_*`` variables over defaults."""
    parser = build_parser()
    apply_environment(parser, os.environ if environ is None else environ)
    args = parser.parse_args(argv)
    if not args.driver:
        parser.error(f"the driver address is required (tcp://HOST:PORT or ${ENV_PREFIX}DRIVER)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    json_formatter = _JsonFormatter()
    if args.log_json:
        handler.setFormatter(json_formatter)
    else:
        handler.setFormatter(logging.Formatter("adrizzle-worker: %(levelname)s %(message)s"))
    root = logging.getLogger("adrizzle")
    root.addHandler(handler)
    root.setLevel(args.log_level.upper())
    log = logging.getLogger("adrizzle.worker")

    from adrizzle.wire.tls import TlsConfig, TlsConfigError

    try:
        host, port = parse_address(args.driver, 7077)
        data_listen = parse_address(args.data_listen) if args.data_listen else None
        token = auth.resolve_token(None, args.token_file)
        tls = TlsConfig.from_options(args.tls_ca_file, args.tls_cert, args.tls_key, flag_style=True)
    except (ValueError, auth.TokenError, TlsConfigError) as exc:
        log.error("%s", exc)
        return 2
    if token is None:
        # A worker never runs without a token, whatever it binds to: its data port would
        # otherwise take shuffle blocks (pickles) from anyone who can reach it.
        log.error("no token: pass --token-file FILE or set %s", auth.TOKEN_ENV)
        return 2
    for flag, value in (
        ("--cores", args.cores),
        ("--max-connections-per-address", args.max_connections_per_address),
    ):
        if value < 1:
            log.error("%s must be at least 1", flag)
            return 2
    for flag, seconds in (
        ("--handshake-timeout", args.handshake_timeout),
        ("--start-timeout", args.start_timeout),
    ):
        if not seconds > 0:
            log.error("%s must be positive", flag)
            return 2
    if not args.connect_retry >= 0:
        log.error("--connect-retry must be 0 or more")
        return 2

    from adrizzle.worker.config import WorkerConfig
    from adrizzle.worker.runtime import WorkerRuntime

    name = args.name or f"{socket.gethostname()}-{os.getpid()}"
    json_formatter.worker = name
    config = WorkerConfig(
        host=host,
        port=port,
        token=token,
        cores=args.cores,
        name=name,
        connect_timeout=args.connect_timeout,
        start_timeout=args.start_timeout,
        max_frame_bytes=args.max_frame_bytes,
        data_listen=data_listen,
        shuffle_timeout=args.shuffle_timeout,
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        data_advertise=args.data_advertise,
        handshake_timeout=args.handshake_timeout,
        max_connections_per_address=args.max_connections_per_address,
        tls=tls,
        connect_retry=args.connect_retry,
        result_links=args.result_links,
    )
    runtime = WorkerRuntime(config)
    try:
        import uvloop

        return int(uvloop.run(runtime.run()))
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.run(runtime.run())


if __name__ == "__main__":
    raise SystemExit(main())
