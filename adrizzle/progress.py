"""Progress bars for long command-line work (examples, benchmarks), quiet unless wanted.

A bar is drawn on stderr only when stderr is a terminal and the caller is not ``quiet`` (pass
``quiet=args.json`` so machine-readable output stays clean); otherwise every call is a no-op.

    with progress(total=len(configs), desc="configurations", quiet=args.json) as bar:
        for config in configs:
            ...
            bar.update()

    async with job_progress(engine, total=n, desc="G=10", quiet=args.json):
        await engine.run_jobs([data] * n, sum, group_size=10)

``job_progress`` follows the micro-batches the engine delivers by reading
``engine.statistics()`` a few times a second, so the run itself pays nothing per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import TYPE_CHECKING, Any, Protocol, TextIO

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


class HasStatistics(Protocol):
    """What ``job_progress`` follows: an engine (anything with ``statistics()``)."""

    def statistics(self) -> dict[str, Any]: ...


class Bar:
    """What ``progress`` yields: ``update(n)`` and ``set_postfix_str(text)``; a tqdm bar, or
    nothing at all when quiet."""

    def __init__(self, bar: Any = None) -> None:
        self._bar = bar

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_total_done(self, done: int) -> None:
        """Move the bar to ``done`` (for counts read from elsewhere)."""
        if self._bar is not None and done != self._bar.n:
            self._bar.update(done - self._bar.n)

    def set_postfix_str(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)


def wanted(quiet: bool = False, stream: TextIO | None = None) -> bool:
    """Whether to draw: not ``quiet`` and ``stream`` (default stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return not quiet and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextlib.contextmanager
def progress(
    total: int | None,
    desc: str = "",
    *,
    quiet: bool = False,
    unit: str = "it",
    stream: TextIO | None = None,
) -> Iterator[Bar]:
    """A progress bar of ``total`` steps on ``stream`` (stderr), or a no-op ``Bar``."""
    if not wanted(quiet, stream):
        yield Bar()
        return
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr if stream is None else stream,
        dynamic_ncols=True,
        leave=False,  # the summary the program prints afterwards is what stays on screen
        mininterval=0.1,
    )
    try:
        yield Bar(bar)
    finally:
        bar.close()


@contextlib.asynccontextmanager
async def job_progress(
    engine: HasStatistics,
    total: int,
    desc: str = "micro-batches",
    *,
    quiet: bool = False,
    interval: float = 0.1,
    stream: TextIO | None = None,
) -> AsyncIterator[Bar]:
    """A bar of the micro-batches ``engine`` delivers while the block runs (``total`` of
    them expected), refreshed every ``interval`` s from ``engine.statistics()``."""
    with progress(total, desc, quiet=quiet, unit="batch", stream=stream) as bar:
        if not bar.shown:
            yield bar
            return
        start = engine.statistics()["micro_batches_completed"]

        def follow() -> None:
            bar.set_total_done(min(total, engine.statistics()["micro_batches_completed"] - start))

        async def poll() -> None:
            while True:
                await asyncio.sleep(interval)
                follow()

        task = asyncio.ensure_future(poll())
        try:
            yield bar
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            follow()
