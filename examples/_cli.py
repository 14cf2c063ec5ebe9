"""The command line shared by the examples: ``batches group_size`` like Drizzle's, plus the
local cluster's shape and the output mode. Examples run as scripts, so this sits next to them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an int >= ``minimum``, with a clear error otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def group_size_arg(text: str) -> int | str:
    """An argparse type: ``auto`` or an int >= 1."""
    return "auto" if text == "auto" else at_least(1)(text)


def example_parser(doc: str | None, group_size: Callable[[str], Any], help_g: str) -> Any:
    """``batches group_size --workers --cores --partitions --records --warmup --timeout --json``."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("batches", type=at_least(1), help="number of micro-batches N")
    parser.add_argument("group_size", type=group_size, help=help_g)
    parser.add_argument("--workers", type=at_least(1), default=2, help="local worker processes")
    parser.add_argument("--cores", type=at_least(1), default=1, help="slot processes per worker")
    parser.add_argument("--partitions", type=at_least(1), default=4, help="partitions P")
    parser.add_argument("--records", type=at_least(0), default=1000, help="ints per partition K")
    parser.add_argument("--warmup", type=at_least(0), default=1, help="untimed micro-batches")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for the whole run")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary")
    return parser
