"""The run as one I/O-free state machine: ``RunScheduler.handle(event) -> list[ev.Instruction]``.

Every rule of a run lives here (docs/architecture.md, "The run state machine"): which groups to
plan and when (group size, the window of groups in flight, backpressure from the caller,
regrowing after a loss), what a result or an acknowledgement changes, how a lost worker, a lost
data link or a stall is recovered (re-run the unfinished jobs in place, or, for a run with
stream state, roll back to the last checkpoint), when to checkpoint, what to do when workers
join or drain, and when a finished run stops awaiting acknowledgements. The asyncio shell
(``adrizzle.driver.execution``) only turns frames and timers into events and carries out the
instructions; unit tests drive this class with plain calls (tests/unit/test_run_state.py).

A group's state lives in one place, its ``GroupState`` in ``in_flight``: plan, workers still to
acknowledge, checkpoint pieces, and its timing for the adaptive group size.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from adrizzle.driver import run_events as ev
from adrizzle.driver.adaptive import GroupTiming
from adrizzle.driver.jobs import Completion, GroupState, JobLedger, StatePolicy
from adrizzle.driver.placement import GroupPlan, place_partitions
from adrizzle.errors import (
    AdrizzleError,
    NoWorkersError,
    SerializationError,
    StateRollback,
    WorkerLostError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from adrizzle.driver.adaptive import GroupSizeController
    from adrizzle.driver.placement import SlotRef, WorkerShare


class RunScheduler:
    """One ``run_jobs``/``iter_jobs`` call (or one run of a stream) as a state machine.

    Plans groups of ``group_size`` consecutive jobs (or the ``controller``'s size, at most
    ``group_size``), keeps ``window`` of them in flight, and stops planning while ``max_buffered``
    delivered outcomes wait for the caller. ``stage_partitions``: every stage's partition count
    (a slot with a task in any stage takes part); ``waves``: launches per group (1 when
    pre-scheduled, one per stage wave in BSP mode). ``stateful``: the run has stream state.
    """

    def __init__(
        self,
        *,
        n_jobs: int,
        partitions: int,
        group_size: int,
        window: int,
        slots: list[SlotRef],
        group_ids: Iterator[int],
        stage_partitions: tuple[int, ...] = (),
        waves: int = 1,
        controller: GroupSizeController | None = None,
        stateful: StatePolicy | None = None,
        max_buffered: int = 64,
        no_workers_timeout: float = 30.0,
        start_small: bool = False,
        sources: int = 0,
    ) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.n_jobs = n_jobs
        self.partitions = partitions
        self.group_size = group_size
        self.window = window
        self.waves = waves
        self.stage_partitions = stage_partitions
        self.controller = controller
        self.stateful = stateful
        self.max_buffered = max_buffered
        self.no_workers_timeout = no_workers_timeout
        self._group_ids = group_ids
        self.slots: list[SlotRef] = []
        self.shares = self._place(slots)
        self.slots = list(slots)
        self.jobs = JobLedger(n_jobs, partitions, sources)
        self.completion = Completion()
        self.in_flight: dict[int, GroupState] = {}
        self.next_job = 0
        # Recovery: jobs of aborted groups, re-run one per group, lowest first; then new
        # groups grow back from 1 to the group size by doubling.
        self.redo: list[int] = []
        self._regrow: int | None = 1 if start_small else None
        self.buffered = 0  # delivered outcomes the caller has not taken yet
        self.failure: BaseException | None = None
        self.closed = False
        self.groups_launched = 0
        self.recoveries = 0
        self._waiting_for_workers = False
        self._last_checkpoint = -1e18
        self._last_done: float | None = None
        self._lost: list[str] = []
        self._handlers: dict[type, Callable[[Any, list[ev.Instruction]], None]] = {
            ev.Start: self._on_start,
            ev.ResultsArrived: self._on_results,
            ev.GroupAcked: self._on_acked,
            ev.Launched: self._on_launched,
            ev.CheckpointArrived: self._on_checkpoint,
            ev.LoadFailed: self._on_load_failed,
            ev.Broken: self._on_broken,
            ev.WorkerLost: self._on_worker_lost,
            ev.LinkLost: self._on_link_lost,
            ev.Stalled: self._on_stalled,
            ev.PlacementChanged: self._on_placement,
            ev.Consumed: self._on_consumed,
            ev.NoWorkersTimeout: self._on_no_workers,
            ev.Closed: self._on_closed,
        }

    def handle(self, event: ev.Event) -> list[ev.Instruction]:
        """Apply one event; return what the shell must do, in order."""
        out: list[ev.Instruction] = []
        self._handlers[type(event)](event, out)
        return out

    # -- queries -----------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Every job was delivered (groups may still await acknowledgements)."""
        return self.jobs.finished

    def wants(self, group: int) -> bool:
        """Whether frames of ``group`` still matter (else they are an aborted attempt's)."""
        return group in self.in_flight

    def uses_worker(self, worker: str) -> bool:
        """Whether a group in flight has work on ``worker`` (a draining worker waits)."""
        return any(worker in state.plan.workers for state in self.in_flight.values())

    def loss_of(self, worker: str) -> WorkerLostError | None:
        """What losing ``worker`` takes from this run, or None if it held nothing of it."""
        involved = [st for st in self.in_flight.values() if worker in st.awaiting]
        if not involved and not any(s.worker == worker for s in self.shares):
            return None
        if not involved and self.next_job >= self.n_jobs:
            return None
        if involved:
            jobs = f"jobs {involved[0].plan.first_job}..{involved[-1].plan.last_job - 1}"
            return WorkerLostError(f"worker {worker} was lost while running {jobs}")
        return WorkerLostError(f"worker {worker}, which holds partitions of this run, was lost")

    def describe_progress(self) -> str:
        """One line on where the run stands, for timeout and stall errors."""
        groups = ", ".join(
            f"group {g} (jobs {st.plan.first_job}..{st.plan.last_job - 1}) awaiting "
            f"{sorted(st.awaiting)}"
            for g, st in self.in_flight.items()
        )
        return (
            f"{self.jobs.next_to_deliver} of {self.n_jobs} jobs delivered; in flight: "
            f"{groups or 'none'}; {self.jobs.describe_missing() or 'no partial job'}"
        )

    # -- planning ----------------------------------------------------------------------

    def _place(self, slots: list[SlotRef]) -> list[WorkerShare]:
        if not slots or not self.partitions:
            return []
        return place_partitions(self.partitions, slots, self.stage_partitions)

    def _launch_more(self, now: float, out: list[ev.Instruction]) -> None:
        while self.failure is None and not self.closed and self.buffered < self.max_buffered:
            launch = self._plan_next(now)
            if launch is None:
                return
            out.append(launch)

    def _plan_next(self, now: float) -> ev.Launch | None:
        if len(self.in_flight) >= self.window or not self.shares:
            return None
        if self.redo:
            first = self.redo.pop(0)
            last = first + 1
        elif self.next_job < self.n_jobs:
            target = self._planned_size()
            size = target
            if self._regrow is not None:
                size = min(size, self._regrow)
                self._regrow = None if size >= target else size * 2
            first = self.next_job
            last = min(first + size, self.n_jobs)
            self.next_job = last
        else:
            return None
        plan = GroupPlan(next(self._group_ids), first, last, self.shares, slots=self.slots)
        restore = checkpoint = False
        if self.stateful is not None:
            restore, self.stateful.restore = self.stateful.restore, False
            if self.stateful.checkpoints and now - self._last_checkpoint >= self.stateful.interval:
                self._last_checkpoint = now
                checkpoint = True
        self.in_flight[plan.group] = GroupState(
            plan,
            plan.workers,
            launched_at=now,
            pieces=[] if checkpoint else None,
            start=now,
            slots_of={share.worker: len(share.slot_ids) for share in plan.shares},
        )
        self.jobs.open(plan.jobs)
        self.groups_launched += 1
        return ev.Launch(plan, restore, checkpoint)

    def _planned_size(self) -> int:
        if self.controller is None:
            return self.group_size
        size = self.controller.next_size()
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"the group size hook answered {size!r}, not a positive int")
        return min(size, self.group_size)

    def _set_slots(self, slots: list[SlotRef], out: list[ev.Instruction]) -> None:
        self.slots, self.shares = list(slots), self._place(slots)
        waiting = bool(self.partitions) and not self.shares
        if waiting != self._waiting_for_workers:
            self._waiting_for_workers = waiting
            out.append(ev.WaitForWorkers(self.no_workers_timeout if waiting else None))

    def _stop_planning(self) -> None:
        """Plan no more groups: the run ends once the groups launched are delivered."""
        self.redo = []
        self.n_jobs = self.jobs.n_jobs = min(self.n_jobs, self.next_job)

    # -- events ------------------------------------------------------------------------

    def _on_start(self, event: ev.Start, out: list[ev.Instruction]) -> None:
        if self.partitions and not self.shares:
            self._waiting_for_workers = True
            out.append(ev.WaitForWorkers(self.no_workers_timeout))
        self._launch_more(event.now, out)

    def _on_results(self, event: ev.ResultsArrived, out: list[ev.Instruction]) -> None:
        state = self.in_flight.get(event.group)
        if state is None:
            return  # an aborted attempt's late frame
        if len(event.values) != len(event.jobs) or len(event.failed) != len(event.jobs):
            detail = f"{len(event.jobs)} jobs but {len(event.values)} value lists"
            self._fail(self._unreadable(event, detail), out)
            return
        try:
            outcomes, completed = self.jobs.record_frame(
                event.worker, event.jobs, event.parts, event.values, event.failed, state.launched_at
            )
        except ValueError as exc:
            self._fail(self._unreadable(event, str(exc)), out)
            return
        if event.positions:
            outcomes += self.jobs.add_positions(list(event.positions), state.launched_at)
        if completed:
            if state.first_done is None:
                # The group could not produce before the previous group's last result.
                if self._last_done is not None and self._last_done > state.start:
                    state.start = self._last_done
                state.first_done = event.now
            state.last_done = self._last_done = event.now
        if outcomes:
            self.buffered += len(outcomes)
            out.append(ev.Deliver(outcomes))

    @staticmethod
    def _unreadable(event: ev.ResultsArrived, detail: str) -> AdrizzleError:
        return AdrizzleError(
            f"cannot read results of jobs {event.jobs} from {event.worker}: {detail}"
        )

    def _on_acked(self, event: ev.GroupAcked, out: list[ev.Instruction]) -> None:
        state = self.in_flight.get(event.group)
        if state is None:
            return
        state.awaiting.discard(event.worker)
        state.cost_s += event.cost_s
        per_slot = event.busy_s / max(1, state.slots_of.get(event.worker, 1))
        if state.busy_s is None or per_slot > state.busy_s:
            state.busy_s = per_slot
        if state.awaiting:
            return
        plan = state.plan
        if plan.wave + 1 < self.waves:  # BSP: the next wave of stages
            state.plan = dataclasses.replace(plan, wave=plan.wave + 1)
            state.awaiting = plan.workers
            out.append(ev.Launch(state.plan, checkpoint=state.pieces is not None))
            return
        del self.in_flight[event.group]
        out.append(ev.Forget(event.group, acked=True))
        if state.pieces is not None and self.stateful is not None:
            out.append(ev.Commit(state.pieces))
        if self.stateful is not None:  # a replay starts after the last completion point
            point = state.pieces is not None or not self.stateful.checkpoints
            through = self.completion.acked(plan.first_job, plan.last_job, point)
            if through is not None:
                out.append(ev.Completed(through))
        if self.controller is not None and state.first_done is not None:
            timing = GroupTiming(
                event.group,
                plan.last_job - plan.first_job,
                state.start,
                state.first_done,
                state.last_done or state.first_done,
                state.cost_s,
                state.busy_s,
            )
            out.append(ev.Observed(self.controller.observe(timing)))
        self._launch_more(event.now, out)

    def _on_launched(self, event: ev.Launched, out: list[ev.Instruction]) -> None:
        state = self.in_flight.get(event.group)
        if state is not None:
            state.cost_s += event.cost_s

    def _on_checkpoint(self, event: ev.CheckpointArrived, out: list[ev.Instruction]) -> None:
        state = self.in_flight.get(event.group)
        if state is not None and state.pieces is not None:
            state.pieces.append(event.piece)

    def _on_load_failed(self, event: ev.LoadFailed, out: list[ev.Instruction]) -> None:
        self._fail(SerializationError(event.reason), out)

    def _on_broken(self, event: ev.Broken, out: list[ev.Instruction]) -> None:
        self._fail(event.error, out)

    def _on_worker_lost(self, event: ev.WorkerLost, out: list[ev.Instruction]) -> None:
        worker = event.worker
        if self.failure is not None or self.finished or self.closed:
            # Nothing to re-run, but acks from it will never come: stop waiting for them
            # (wait_settled, and a stateful stream's next run waiting for its checkpoint).
            for group in [g for g, st in self.in_flight.items() if worker in st.awaiting]:
                del self.in_flight[group]
                out.append(ev.Forget(group))
            return
        loss = self.loss_of(worker)
        if loss is not None:
            self._lost.append(str(loss))
        if self.stateful is not None:
            if loss is not None or self.uses_worker(worker):
                self._rollback(f"worker {worker} was lost", worker, out)
            return
        aborted = [st.plan for st in self.in_flight.values() if worker in st.plan.workers]
        self._abort(aborted, f"worker {worker} was lost", worker, out)
        self._set_slots(event.slots, out)
        self._launch_more(event.now, out)

    def _on_link_lost(self, event: ev.LinkLost, out: list[ev.Instruction]) -> None:
        if self.failure is not None or self.finished or self.closed:
            return
        both = {event.worker, event.peer}
        aborted = [st.plan for st in self.in_flight.values() if both <= st.plan.workers]
        reason = f"data link {event.worker} <-> {event.peer} lost"
        if self.stateful is not None:
            if aborted:
                self._rollback(reason, None, out)
            return
        self._abort(aborted, reason, None, out)
        self._launch_more(event.now, out)

    def _on_stalled(self, event: ev.Stalled, out: list[ev.Instruction]) -> None:
        if not self.in_flight and not self.jobs.incomplete:
            return
        if self.failure is not None or self.finished or self.closed:
            for group in list(self.in_flight):  # their acks were lost: stop awaiting them
                del self.in_flight[group]
                out.append(ev.Forget(group))
            return
        in_flight = sorted(self.in_flight)
        reason = f"no progress for {event.silent_s:.1f} s (groups in flight: {in_flight or 'none'})"
        if self.stateful is not None:
            self._rollback(f"no progress for {event.silent_s:.1f} s", None, out)
            return
        aborted = []
        for group, state in list(self.in_flight.items()):
            if any(self.jobs.is_open(job) for job in state.plan.jobs):
                aborted.append(state.plan)
            else:  # every result is in: only its acknowledgements were lost
                del self.in_flight[group]
                out.append(ev.Forget(group))
        covered = {job for plan in aborted for job in plan.jobs}
        # Jobs of groups that were acknowledged although a result frame never came.
        orphans = [job for job in self.jobs.open_jobs() if job not in covered]
        for job in orphans:
            self.jobs.reset(job)
        self._abort(aborted, reason, None, out, also=orphans)
        self._launch_more(event.now, out)

    def _on_placement(self, event: ev.PlacementChanged, out: list[ev.Instruction]) -> None:
        if self.failure is not None or self.finished or self.closed or event.slots == self.slots:
            return
        if self.stateful is not None and event.slots:
            # State lives on the slots: plan no more groups here; the stream's next run
            # moves the partitions (restoring their state from the checkpoint).
            self._stop_planning()
            return
        self._set_slots(event.slots, out)
        self._launch_more(event.now, out)

    def _on_consumed(self, event: ev.Consumed, out: list[ev.Instruction]) -> None:
        self.buffered = max(0, self.buffered - event.n)
        self._launch_more(event.now, out)

    def _on_no_workers(self, event: ev.NoWorkersTimeout, out: list[ev.Instruction]) -> None:
        if self.shares or self.failure is not None:
            return
        lost = f" ({'; '.join(self._lost)})" if self._lost else ""
        self._fail(
            NoWorkersError(
                f"every worker was lost{lost} and none joined within "
                f"{self.no_workers_timeout:g} s: {self.describe_progress()}"
            ),
            out,
        )

    def _on_closed(self, event: ev.Closed, out: list[ev.Instruction]) -> None:
        self.closed = True

    # -- recovery ----------------------------------------------------------------------

    def _abort(
        self,
        plans: list[GroupPlan],
        reason: str,
        lost: str | None,
        out: list[ev.Instruction],
        also: list[int] | None = None,
    ) -> None:
        """Drop these groups here and on the workers; their unfinished jobs (and ``also``)
        are re-run one job per group (what arrived for them is dropped: each (job,
        partition) is delivered once, from one attempt); finished jobs stay done."""
        if not plans and not also:
            return
        redo = list(also or [])
        for plan in plans:
            del self.in_flight[plan.group]
            for job in plan.jobs:
                if self.jobs.is_open(job):
                    self.jobs.reset(job)
                    redo.append(job)
        self.redo = sorted({*self.redo, *redo})
        self._regrow = 1
        self.recoveries += 1
        groups = [plan.group for plan in plans]
        if groups:
            out.append(ev.Cancel(groups, lost))
            out += [ev.Forget(group) for group in groups]
        out.append(ev.Recovered(reason, groups, sorted(redo)))

    def _rollback(self, reason: str, lost: str | None, out: list[ev.Instruction]) -> None:
        """Stream state may be lost or ahead of its checkpoint: drop every group in flight
        and end the run with ``StateRollback``; the stream restores the last checkpoint on
        the workers left and replays the batches since."""
        plans = list(self.in_flight.values())
        self.in_flight.clear()
        for state in plans:
            for job in state.plan.jobs:
                self.jobs.reset(job)
        self.redo = []
        self.recoveries += 1
        groups = [state.plan.group for state in plans]
        if groups:
            out.append(ev.Cancel(groups, lost))
            out += [ev.Forget(group) for group in groups]
        out.append(ev.Recovered(reason, groups, []))
        out.append(ev.Rollback(reason))
        self._fail(StateRollback(f"{reason}: {self.describe_progress()}"), out)

    def _fail(self, error: BaseException, out: list[ev.Instruction]) -> None:
        if self.failure is None:
            self.failure = error
            out.append(ev.Fail(error))
