"""``TaskFailure``: what stands in a task's result when its user code raised."""

from __future__ import annotations

import traceback
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """Stands in a result list for a task whose user code raised."""

    exc_type: str
    message: str
    traceback: str

    @classmethod
    def capture(cls, exc: BaseException) -> TaskFailure:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__qualname__, str(exc), tb)
