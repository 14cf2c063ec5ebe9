"""One simulated worker: a real control connection that answers launches as a worker and its
slots would, without running user code (what is simulated: ``adrizzle_bench.simworkers``).

``SimWorker`` dials the driver with the real handshake (``Connection`` and ``Channel`` from
``adrizzle.wire``, the cluster token, a ``Hello`` with role "worker", cores, pid and a data
address), decodes every frame with the real codec and answers each ``launch_group`` per slot
(``sim_plans.SlotShare``): one ``batch_result`` per micro-batch with result partitions on the
slot, or packed as ``slot_results.ResultSender`` packs them (kept while the slot has ready
work, sent when it runs out or after the launch's linger time), then one ``group_done`` per
group with the slots' totals. ``cancel_groups`` drops what is left
of those groups (no result, no ``group_done``); ``shutdown`` closes the connection.

Task cost (``SimSettings``): 0 runs a group at once; ``task_cost_us`` with ``spin=False`` keeps
a virtual clock per slot (a batch is due ``tasks x cost`` after the previous one, frames leave
at the first loop tick after that: libuv's timers tick in milliseconds), which models slots on
other machines; ``spin=True`` burns the CPU for real, so the workers of one process run their
tasks one after another.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import pickle
import time
from typing import TYPE_CHECKING, Any

from adrizzle.wire import auth
from adrizzle.wire.channel import Channel
from adrizzle.wire.checks import check_launch
from adrizzle.wire.connection import Connection
from adrizzle.wire.framing import FrameLimits
from adrizzle.wire.messages import (
    PROTOCOL_VERSION,
    BatchResult,
    CancelGroups,
    ClusterView,
    GroupDone,
    Heartbeat,
    Hello,
    LaunchGroup,
    Message,
    OffsetsLogged,
    Shutdown,
)
from adrizzle_bench.sim_plans import sim_value

if TYPE_CHECKING:
    from collections.abc import Callable

    from adrizzle_bench.sim_plans import Plans, SlotShare

DRIVER_MESSAGES = (LaunchGroup, ClusterView, CancelGroups, Shutdown, Heartbeat, OffsetsLogged)
RESULT_MODES = ("batch", "slot")
#: Metas of ``cluster_view`` frames start so (orjson keeps the tag first): counted, not decoded.
_VIEW_PREFIX = b'{"t":"cluster_view"'


@dataclasses.dataclass(frozen=True, slots=True)
class SimSettings:
    """How the simulated workers of one process behave."""

    host: str
    port: int
    token: str
    cores: int = 1
    task_cost_us: float = 0.0
    spin: bool = False
    results: str = "slot"  # "slot": packed as a real slot packs; "batch": a frame per batch
    handshake_timeout: float = 30.0
    data_address: str | None = None

    def __post_init__(self) -> None:
        if self.results not in RESULT_MODES:
            raise ValueError(f"results must be one of {RESULT_MODES}, got {self.results!r}")
        if self.cores < 1 or self.task_cost_us < 0:
            raise ValueError("a simulated worker needs cores >= 1 and task_cost_us >= 0")


@dataclasses.dataclass(slots=True)
class SimCounters:
    """What the simulated workers of a process did (summed by ``simworkers``)."""

    launches: int = 0
    groups_done: int = 0
    result_frames: int = 0
    batches: int = 0
    tasks: int = 0
    pushes: int = 0
    push_bytes: int = 0
    cancelled_groups: int = 0
    dropped_batches: int = 0
    heartbeats: int = 0
    cluster_views: int = 0


class _SimConnection(Connection):
    """A worker's connection that counts ``cluster_view`` frames instead of decoding them: a
    view lists every worker, is sent to every worker on every join, and a simulated worker
    pushes no map outputs, so decoding it would only spend this process's CPU. Any frame not
    recognisably a view (say, after a codec change) is decoded as usual."""

    def __init__(self, counters: SimCounters, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._counters = counters

    def _receive_open(self, frames: list[tuple[bytes, bytes]]) -> list[Any]:
        kept = [f for f in frames if not f[0].startswith(_VIEW_PREFIX)]
        self._counters.cluster_views += len(frames) - len(kept)
        return super()._receive_open(kept)


@dataclasses.dataclass(slots=True)
class _Run:
    """One group on one slot: its share, and how far the slot got."""

    group: int
    first_job: int
    share: SlotShare
    linger_s: float
    due: list[float]  # per batch, on the slot's virtual clock (sleep mode only)
    started: float
    next: int = 0
    busy_s: float = 0.0


class _Slot:
    """One simulated slot: its queue of groups and how its results leave. ``ResultSender``'s
    rule: finished batches wait while the slot has more ready work and go when it runs out, or
    once the first of them waited the linger time. A simulated slot always has ready work until
    its group ends (its reducers never wait for map outputs), so it sends at the group's end or
    at the linger time."""

    def __init__(self, worker: SimWorker, index: int) -> None:
        self.worker = worker
        self.index = index
        self.queue: collections.deque[_Run] = collections.deque()
        self.free_at = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.jobs: list[int] = []  # results waiting to be sent together
        self.parts: list[int] = []
        self.group = -1
        self.flush_timer: asyncio.TimerHandle | None = None

    def enqueue(self, run: _Run, cost_s: float, spin: bool) -> None:
        if cost_s and not spin:
            self._clock(run, cost_s)
        self.queue.append(run)
        if len(self.queue) == 1:
            self.advance()

    def _clock(self, run: _Run, cost_s: float) -> None:
        """When each batch of ``run`` is done on the slot's virtual clock (sleep mode)."""
        t = max(run.started, self.free_at)
        run.due = []
        for batch in run.share.batches:
            t += batch.tasks * cost_s
            run.due.append(t)
        self.free_at = t

    def advance(self) -> None:
        """Run what is due: every batch at once without a cost, else up to the clock."""
        self.timer = None
        worker = self.worker
        cost_s = worker.settings.task_cost_us / 1e6
        spin = worker.settings.spin
        while self.queue:
            run = self.queue[0]
            batches = run.share.batches
            now = time.monotonic()
            while run.next < len(batches):
                if run.due and run.due[run.next] > now:
                    self.timer = worker.loop.call_at(run.due[run.next], self.advance)
                    return
                batch = batches[run.next]
                if spin and cost_s:
                    t0 = time.perf_counter()
                    end = t0 + batch.tasks * cost_s
                    while time.perf_counter() < end:
                        pass
                    run.busy_s += time.perf_counter() - t0
                elif cost_s:
                    run.busy_s += batch.tasks * cost_s
                run.next += 1
                if batch.result:
                    self.result(run, run.first_job + batch.offset)
            self.queue.popleft()
            self.flush()  # the group's last results, then its acknowledgement
            worker.slot_done(run)

    def result(self, run: _Run, job: int) -> None:
        if not self.jobs:
            self.parts, self.group = run.share.result_parts, run.group
            if self.worker.settings.results == "slot":  # the linger clock starts
                self.flush_timer = self.worker.loop.call_later(run.linger_s, self.flush)
        self.jobs.append(job)
        if self.worker.settings.results == "batch":
            self.flush()

    def flush(self) -> None:
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        if not self.jobs:
            return
        jobs, self.jobs = self.jobs, []
        parts = self.parts
        values = [sim_value(job, p) for job in jobs for p in parts]  # flat, as a slot sends
        msg = BatchResult(group=self.group, jobs=jobs, parts=parts, failed=[0] * len(jobs))
        self.worker.send(msg, pickle.dumps(values, protocol=5))
        self.worker.counters.result_frames += 1
        self.worker.counters.batches += len(jobs)

    def cancel(self, groups: set[int]) -> None:
        """Drop these groups' runs and packed results (a worker was lost elsewhere)."""
        if self.group in groups and self.jobs:
            self.worker.counters.dropped_batches += len(self.jobs)
            self.jobs = []
        head = self.queue[0] if self.queue else None
        kept = collections.deque(r for r in self.queue if r.group not in groups)
        for run in self.queue:
            if run.group in groups:
                self.worker.counters.dropped_batches += sum(
                    1 for b in run.share.batches[run.next :] if b.result
                )
        self.queue = kept
        if head is not None and head.group in groups:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.free_at = time.monotonic()
            for run in self.queue:  # the slot is free now: what waited starts earlier
                if run.due and run.next == 0:
                    self._clock(run, self.worker.settings.task_cost_us / 1e6)
            if self.queue:
                self.advance()

    def stop(self) -> None:
        for timer in (self.timer, self.flush_timer):
            if timer is not None:
                timer.cancel()
        self.queue.clear()


@dataclasses.dataclass(slots=True)
class _Tally:
    slots_left: int
    tasks: int = 0
    busy_us: int = 0
    pushes: int = 0
    push_bytes: int = 0


class SimWorker:
    """One simulated worker: its control connection to the driver and its slots."""

    def __init__(
        self,
        name: str,
        settings: SimSettings,
        plans: Plans,
        counters: SimCounters,
        *,
        bind: str | None = None,
        on_gone: Callable[[SimWorker], None] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self.plans = plans
        self.counters = counters
        self.bind = bind
        self._on_gone = on_gone
        self.loop = asyncio.get_running_loop()
        self.channel: Channel | None = None
        self.slots = [_Slot(self, i) for i in range(settings.cores)]
        self._groups: dict[int, _Tally] = {}
        self.heard = time.monotonic()
        self.joined = False  # authenticated once
        self.gone = False  # and closed since

    async def connect(self) -> None:
        """Dial and authenticate (``OSError``/``ProtocolError`` when the driver refuses)."""
        s = self.settings
        hello = Hello(
            version=PROTOCOL_VERSION,
            role="worker",
            id=self.name,
            nonce=auth.new_nonce(),
            cores=s.cores,
            pid=os.getpid(),
            data_address=s.data_address,
        )
        conn = _SimConnection(
            self.counters,
            client=True,
            token=s.token,
            hello=hello,
            accepts=DRIVER_MESSAGES,
            limits=FrameLimits(max_meta=1 << 24, max_payload=1 << 30),
        )
        local = (self.bind, 0) if self.bind else None

        def made() -> Channel:
            self.channel = Channel(
                conn,
                on_message=self._on_message,
                on_authenticated=self._on_authenticated,
                on_closed=self._on_closed,
                handshake_timeout=s.handshake_timeout,
                name=self.name,
            )
            return self.channel

        try:
            _transport, channel = await self.loop.create_connection(
                made, s.host, s.port, local_addr=local
            )
            await channel.authenticated
        except BaseException:
            self.drop()  # a half-made connection must not stay registered under our name
            raise

    def send(self, msg: Message, payload: bytes = b"") -> None:
        channel = self.channel
        if channel is not None and channel.is_open:
            channel.send(msg, payload)

    def heartbeat(self) -> None:
        if self.channel is not None and self.channel.is_open:
            self.channel.send(Heartbeat())
            self.counters.heartbeats += 1

    def drop(self) -> None:
        """Vanish as a crashed worker does: the connection is aborted, nothing more is sent."""
        self._stop()
        if self.channel is not None:
            self.channel.abort(ConnectionAbortedError(f"simulated worker {self.name} dropped"))

    def close(self) -> None:
        self._stop()
        if self.channel is not None:
            self.channel.close()

    def _stop(self) -> None:
        for slot in self.slots:
            slot.stop()
        self._groups.clear()

    # -- driver -> worker ----------------------------------------------------------------

    def _on_authenticated(self, channel: Channel, hello: Hello) -> None:
        self.heard = time.monotonic()
        self.joined = True

    def _on_closed(self, channel: Channel, exc: BaseException | None) -> None:
        self._stop()
        if self.joined and not self.gone:
            self.gone = True
            if self._on_gone is not None:
                self._on_gone(self)

    def _on_message(self, channel: Channel, msg: Message, payload: bytes) -> None:
        self.heard = time.monotonic()
        if type(msg) is LaunchGroup:
            self._launch(msg, payload)
        elif type(msg) is CancelGroups:
            self._cancel(set(msg.groups))
        elif type(msg) is Shutdown:
            self.close()

    def _launch(self, msg: LaunchGroup, payload: bytes) -> None:
        n = len(msg.slot_ids)
        check_launch(msg, len(payload), len(self.slots))
        self.counters.launches += 1
        blob = payload[: msg.program_len]  # source blocks and state after it are not kept
        placement = self.plans.placement(msg)
        self._groups[msg.group] = _Tally(n)
        now = time.monotonic()
        cost_s = self.settings.task_cost_us / 1e6
        for slot_id in msg.slot_ids:
            share = self.plans.share(msg, blob, placement, self.name, slot_id)
            run = _Run(msg.group, msg.first_job, share, msg.linger_us / 1e6, [], now)
            self.slots[slot_id].enqueue(run, cost_s, self.settings.spin)

    def _cancel(self, groups: set[int]) -> None:
        for group in groups:
            if self._groups.pop(group, None) is not None:
                self.counters.cancelled_groups += 1
        for slot in self.slots:
            slot.cancel(groups)

    # -- slot -> worker ------------------------------------------------------------------

    def slot_done(self, run: _Run) -> None:
        """A slot finished its part of a group: the group's one ``group_done`` once all did."""
        tally = self._groups.get(run.group)
        if tally is None:
            return  # cancelled
        share = run.share
        tally.slots_left -= 1
        tally.tasks += share.tasks
        tally.pushes += share.pushes
        tally.push_bytes += share.push_bytes
        busy = run.busy_s or (time.monotonic() - run.started)
        tally.busy_us += int(busy * 1e6)
        if tally.slots_left:
            return
        del self._groups[run.group]
        c = self.counters
        c.groups_done += 1
        c.tasks += tally.tasks
        c.pushes += tally.pushes
        c.push_bytes += tally.push_bytes
        self.send(
            GroupDone(run.group, tally.tasks, 0, tally.busy_us, tally.pushes, tally.push_bytes)
        )
