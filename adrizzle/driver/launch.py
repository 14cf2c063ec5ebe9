"""A group's ``launch_group`` frames: the programs pickled once, plus per slot the source blocks
and stream state it lacks, and the placement arrays every slot derives its tasks from."""

from __future__ import annotations

from bisect import bisect_right
from typing import TYPE_CHECKING

import cloudpickle

from adrizzle.errors import SerializationError
from adrizzle.plan.program import ShippedSource, ShuffleRead, stage_waves
from adrizzle.plan.union import UnionRead
from adrizzle.wire.messages import LaunchGroup

if TYPE_CHECKING:
    from adrizzle.driver.blocks import BlockRegistry
    from adrizzle.driver.placement import GroupPlan, WorkerShare
    from adrizzle.plan.program import JobProgram


def serialize_programs(programs: list[JobProgram], first_job: int) -> bytes:
    try:
        return bytes(cloudpickle.dumps(programs))
    except Exception as exc:
        raise SerializationError(
            f"cannot serialize the job functions (jobs from {first_job}): "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def run_waves(program: JobProgram, pre_schedule: bool) -> list[list[int]]:
    """The stages launched together: all at once when pre-scheduled, else one wave each."""
    if pre_schedule:
        return [list(range(len(program.stages)))]
    return stage_waves(program.stages)


def program_runs(programs: list[JobProgram]) -> tuple[list[int], list[JobProgram]]:
    """``programs`` as runs of one program object repeated: each run's first index and its
    program (a run of one dataset repeated, ``run_jobs([data] * n, ...)``, is one run)."""
    starts: list[int] = []
    runs: list[JobProgram] = []
    for i, program in enumerate(programs):
        if not runs or program is not runs[-1]:
            starts.append(i)
            runs.append(program)
    return starts, runs


class LaunchEncoder:
    """Encodes one run's launches (``pre_schedule``: every stage in one launch; else one wave
    of stages per launch, BSP). The last group's programs' pickle is reused by identity: a run
    of one dataset repeated (``run_jobs([data] * n, ...)``) pickles its program once. A group
    costs per run of one program it holds, not per job (``program_runs``, found once per run:
    at G=100 the per-job ``id`` loops were ~15 % of the driver's CPU, cProfile)."""

    def __init__(
        self,
        programs: list[JobProgram],
        blocks: BlockRegistry,
        linger_us: int,
        pre_schedule: bool,
    ) -> None:
        self.programs = programs
        self._blocks = blocks
        self._linger_us = linger_us
        self._pre_schedule = pre_schedule
        self._waves = run_waves(programs[0], pre_schedule) if programs else [[]]
        self._run_starts, self._runs = program_runs(programs)
        self._blob_cache: tuple[tuple[int, ...], bytes] = ((), b"")
        self._placement: tuple[int, list[str], list[int], dict[tuple[str, int], int]] = (
            -1,
            [],
            [],
            {},
        )

    def runs_in(self, first: int, last: int) -> list[tuple[int, JobProgram]]:
        """Jobs ``first .. last - 1`` as (count, program) runs of one program repeated."""
        starts, runs = self._run_starts, self._runs
        i = max(bisect_right(starts, first) - 1, 0)
        out = []
        while i < len(starts) and starts[i] < last:
            end = starts[i + 1] if i + 1 < len(starts) else len(self.programs)
            out.append((min(end, last) - max(starts[i], first), runs[i]))
            i += 1
        return out

    def program_blob(self, plan: GroupPlan) -> bytes:
        """The group's programs, pickled (``SerializationError`` when they cannot be)."""
        key = tuple(x for n, p in self.runs_in(plan.first_job, plan.last_job) for x in (n, id(p)))
        if key != self._blob_cache[0]:
            programs = self.programs[plan.first_job : plan.last_job]
            self._blob_cache = (key, serialize_programs(programs, plan.first_job))
        return self._blob_cache[1]

    def frame(
        self,
        plan: GroupPlan,
        share: WorkerShare,
        blob: bytes,
        checkpoint: bool,
        restore: dict[tuple[str, int], bytes] | None,
    ) -> tuple[LaunchGroup, bytes]:
        """One worker's launch: the meta and its payload (the source blocks it gets are
        counted as shipped)."""
        stages = self._waves[plan.wave]
        placement_workers, placement_slots, slot_index = self._placement_of(plan)
        data = [
            self._blocks.missing_blocks(
                share.worker,
                slot,
                self._sources_on_slot(plan, stages, slot_index[(share.worker, slot)]),
            )
            for slot in share.slot_ids
        ]
        state = [restore.get((share.worker, s), b"") for s in share.slot_ids] if restore else []
        msg = LaunchGroup(
            group=plan.group,
            first_job=plan.first_job,
            last_job=plan.last_job,
            stages=stages,
            placement_workers=placement_workers,
            placement_slots=placement_slots,
            slot_ids=share.slot_ids,
            slot_data=[len(d) for d in data],
            program_len=len(blob),
            release=self._blocks.take_released(share.worker),
            linger_us=self._linger_us,
            hold=0 if self._pre_schedule else 1,
            fetch=self._fetch_list(plan, stages),
            slot_state=[len(b) for b in state],
            checkpoint=1 if checkpoint else 0,
        )
        if not any(data) and not any(state):
            return msg, blob
        parts = [blob]
        for i, d in enumerate(data):
            parts += (d, state[i]) if state else (d,)
        return msg, b"".join(parts)

    def _fetch_list(self, plan: GroupPlan, stages: list[int]) -> list[int]:
        """BSP: the shuffles this wave's reducers fetch from the map sides."""
        if self._pre_schedule:
            return []
        program = self.programs[plan.first_job]
        return sorted(
            {
                i
                for j in stages
                if isinstance(inp := program.stages[j].input, ShuffleRead)
                for i, _maps in inp.shuffles
            }
        )

    def _placement_of(
        self, plan: GroupPlan
    ) -> tuple[list[str], list[int], dict[tuple[str, int], int]]:
        """The placement arrays of the plan's slots (rebuilt only when the slots change)."""
        if self._placement[0] != id(plan.slots):
            slots = plan.slots
            self._placement = (
                id(plan.slots),
                [s.worker for s in slots],
                [s.slot for s in slots],
                {(s.worker, s.slot): i for i, s in enumerate(slots)},
            )
        return self._placement[1], self._placement[2], self._placement[3]

    def _sources_on_slot(
        self, plan: GroupPlan, stages: list[int], slot_index: int
    ) -> list[tuple[int, list[int]]]:
        n = len(plan.slots)
        out = []
        runs = self.runs_in(plan.first_job, plan.last_job)
        for program in {id(p): p for _n, p in runs}.values():
            for j in stages:
                stage = program.stages[j]
                if isinstance(stage.input, ShippedSource):
                    parts = list(range(slot_index, stage.partitions, n))
                    if parts:
                        out.append((stage.input.node_id, parts))
                elif isinstance(stage.input, UnionRead):  # its sides' sources, by side index
                    out += stage.input.shipped(list(range(slot_index, stage.partitions, n)))
        return out
