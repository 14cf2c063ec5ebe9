"""An example driver program for the Kubernetes base: a stateful stream that runs until stopped.

Every second (``--batch-interval``) each of ``--partitions`` partitions reads 1000 events;
the stream keeps a running count per event type as state (checkpointed, restored after a
worker loss) and logs the totals. Replace it with your own program in the driver image
(``workers/Containerfile.driver``): keep ``Engine(listen=...)`` on 0.0.0.0 and the token from
``ADRIZZLE_AUTH_TOKEN``. SIGTERM (a rollout, ``kubectl delete``) closes the engine: the workers
are told to shut down and the StatefulSet starts them again, waiting for the next driver.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import operator
import os
import signal
import sys

import adrizzle
from adrizzle.deploy.driver import LISTEN_ENV, STATUS_ENV, WORKERS_ENV
from adrizzle.wire.auth import TOKEN_ENV

log = logging.getLogger("driver")
KINDS = ("view", "click", "purchase")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="driver.py", description=__doc__.split("\n")[0])
    p.add_argument("--listen", default=os.environ.get(LISTEN_ENV, "0.0.0.0:7077"))
    p.add_argument("--status", default=os.environ.get(STATUS_ENV), metavar="HOST:PORT")
    p.add_argument("--workers", type=int, default=int(os.environ.get(WORKERS_ENV, "1")))
    p.add_argument("--partitions", type=int, default=None, help="default: all worker cores")
    p.add_argument("--batch-interval", type=float, default=1.0, metavar="SECONDS")
    return p


def events(batch: int, partition: int) -> list[tuple[str, int]]:
    """Replayable input: batch b of partition p is always the same 1000 events."""
    base = (batch * 7919 + partition * 104729) % 1000
    return [(KINDS[(base + i) % len(KINDS)], 1) for i in range(1000)]


def add(values: list[int], total: int | None) -> int:
    return (total or 0) + sum(values)


async def main() -> int:
    args = build_parser().parse_args()
    token = os.environ.get(TOKEN_ENV, "")
    if not token or token.startswith("REPLACE-ME"):
        log.error("set a real token in the adrizzle-token Secret (see workers/README.md)")
        return 2
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with adrizzle.Engine(listen=args.listen, status=args.status) as engine:
        log.info("waiting for %d workers on %s", args.workers, engine.address)
        await engine.wait_for_workers(args.workers, timeout=None)
        counts = engine.stream(
            events, partitions=args.partitions, batch_interval=args.batch_interval
        ).update_state(add, combine=operator.add)

        async def run() -> None:
            async for update in counts.run(group_size="auto"):
                log.info("batch %d: %s", update.batch, dict(update.values))

        runner = asyncio.ensure_future(run())
        await asyncio.wait((runner, stop), return_when=asyncio.FIRST_COMPLETED)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    sys.exit(adrizzle.run(main()))
