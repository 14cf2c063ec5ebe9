"""A slot's shuffle inbox: the map outputs that arrived for its reduce tasks.

Map outputs arrive as ``map_output_ready`` frames (one output, possibly split into chunks when
it is bigger than the frame cap) or as ``map_outputs`` bundles (several outputs of one group,
back to back). Either way each output is filed under its attempt (the group id), job, shuffle
stage and reduce partition; a reduce task takes its inputs once every map partition is in.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

from adrizzle.plan import shared
from adrizzle.plan.failure import TaskFailure
from adrizzle.plan.program import ShuffleRead, StageProgram
from adrizzle.wire.checks import check_map_outputs

if TYPE_CHECKING:
    from collections.abc import Callable

    from adrizzle.wire.messages import MapOutputReady, MapOutputs
    from adrizzle.worker.slot_tasks import Inbox


class UpstreamFailure(Exception):
    """A map task this task depends on failed; carries that original failure."""

    def __init__(self, failure: TaskFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class ShuffleInbox:
    """Map outputs by attempt, and the pieces of split outputs still being joined."""

    def __init__(self) -> None:
        # (group, job, shuffle, reduce partition) -> {map partition: block}
        self.blocks: Inbox = {}
        # (group, job, shuffle, map partition, reducer slot) -> chunks of a split output so far
        self.partial: dict[tuple[int, int, int, int, int], dict[int, bytes]] = {}
        # Told of every filing: (key, outputs now here) -- the running group's TaskQueue.
        self.listener: Callable[[tuple[int, int, int, int], int], None] | None = None

    def file(
        self, group: int, job: int, shuffle: int, map_part: int, blocks: dict[int, Any]
    ) -> None:
        for reduce_part, block in blocks.items():
            key = (group, job, shuffle, reduce_part)
            arrived = self.blocks.setdefault(key, {})
            arrived[map_part] = block
            if self.listener is not None:
                self.listener(key, len(arrived))

    def receive_one(self, msg: MapOutputReady, payload: bytes) -> None:
        """File one map output (once all its chunks are in, when it was split)."""
        if msg.chunks > 1:
            key = (msg.group, msg.job, msg.shuffle, msg.map_part, msg.slot)
            pieces = self.partial.setdefault(key, {})
            pieces[msg.chunk] = payload
            if len(pieces) < msg.chunks:
                return
            del self.partial[key]
            payload = b"".join(pieces[i] for i in range(msg.chunks))
        self.file(msg.group, msg.job, msg.shuffle, msg.map_part, pickle.loads(payload))

    def receive_bundle(self, msg: MapOutputs, payload: bytes) -> None:
        """File every map output of a ``map_outputs`` bundle."""
        check_map_outputs(msg, len(payload))
        view = memoryview(payload)
        offset = 0
        for job, shuffle, map_part, length in msg.outputs:
            blocks = pickle.loads(view[offset : offset + length])
            offset += length
            self.file(msg.group, job, shuffle, map_part, blocks)

    def take(self, group: int, job: int, stage: StageProgram, p: int, waited: float) -> Any:
        """The shuffle read of reduce task ``p``; raises ``TimeoutError`` (after ``waited`` s)
        naming the missing map partitions, or ``UpstreamFailure`` when a map task failed."""
        read = stage.input
        if not isinstance(read, ShuffleRead):
            return None
        per_shuffle: list[list[Any]] = []
        for shuffle, maps in read.shuffles:
            key = (group, job, shuffle, p)
            if len(self.blocks.get(key, ())) < maps:
                have = sorted(self.blocks.pop(key, {}))
                missing = sorted(set(range(maps)) - set(have))
                raise TimeoutError(
                    f"reduce task (job {job}, partition {p}) waited {waited:g} s "
                    f"for the outputs of stage {shuffle}: {len(have)} of {maps} map outputs "
                    f"arrived, missing map partitions {missing[:10]}"
                )
            arrived = self.blocks.pop(key)
            per_shuffle.append([shared.absorb(arrived[m]) for m in range(maps)])  # accumulators
        for blocks in per_shuffle:
            for block in blocks:
                if isinstance(block, TaskFailure):
                    raise UpstreamFailure(block)
        return read.read(per_shuffle)

    def drop(self, groups: set[int]) -> None:
        """Forget the outputs of these (cancelled) attempts."""
        for key in [k for k in self.blocks if k[0] in groups]:
            del self.blocks[key]
        for chunk_key in [k for k in self.partial if k[0] in groups]:
            del self.partial[chunk_key]
