"""Public exception classes: every error adrizzle raises to a caller is one of these."""

from __future__ import annotations

from typing import Self


class AdrizzleError(Exception):
    """Base class of all adrizzle errors."""


class ProtocolError(AdrizzleError):
    """A connection broke the wire protocol; the connection is closed."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow (a bug on this side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow (bad frame, wrong order, ...)."""


class AuthenticationError(RemoteProtocolError):
    """The peer failed the HMAC challenge: it does not hold the cluster token."""


class VersionMismatchError(RemoteProtocolError):
    """The peer speaks another protocol version."""


class SerializationError(AdrizzleError, ValueError):
    """A function or value could not be pickled for shipping to workers."""


class WorkerLostError(AdrizzleError):
    """A worker went away while it held work that could not be recovered."""


class RunTimeoutError(AdrizzleError, TimeoutError):
    """A run did not finish within the timeout its caller gave."""


class NoWorkersError(AdrizzleError):
    """A job needed workers and none were connected in time."""


class TaskError(AdrizzleError):
    """User code raised inside a task.

    Carries the remote traceback and where it happened: the worker, the job (micro-batch)
    index in the call that ran it, the partition, and for a stream the stream's batch number
    (``batch``; None outside streams).
    """

    def __init__(
        self,
        *,
        job: int,
        partition: int,
        worker: str,
        exc_type: str,
        message: str,
        remote_traceback: str,
        batch: int | None = None,
    ) -> None:
        self.job = job
        self.partition = partition
        self.worker = worker
        self.exc_type = exc_type
        self.message = message
        self.remote_traceback = remote_traceback
        self.batch = batch
        where = f"job {job}" if batch is None else f"stream batch {batch}"
        super().__init__(
            f"{exc_type}: {message} ({where}, partition {partition}, worker {worker})\n"
            f"remote traceback:\n{remote_traceback}"
        )

    def at_batch(self, batch: int) -> TaskError:
        """The same error, saying which stream batch it happened in."""
        fields = (self.job, self.partition, self.worker, self.exc_type, self.message)
        return _rebuild_task_error(*fields, self.remote_traceback, batch)

    def __reduce__(self) -> tuple[object, ...]:
        fields = (self.job, self.partition, self.worker, self.exc_type, self.message)
        return (_rebuild_task_error, (*fields, self.remote_traceback, self.batch))


def _rebuild_task_error(
    job: int,
    partition: int,
    worker: str,
    exc_type: str,
    message: str,
    remote_traceback: str,
    batch: int | None = None,
) -> TaskError:
    return TaskError(
        job=job,
        partition=partition,
        worker=worker,
        exc_type=exc_type,
        message=message,
        remote_traceback=remote_traceback,
        batch=batch,
    )


class StateOrderError(AdrizzleError, RuntimeError):
    """Stream state cannot be used as asked: a stateful step saw its micro-batches out of
    order, its state is missing on the slot, or a checkpoint does not fit the stream."""


class StateRollback(AdrizzleError):
    """A run with stream state lost a worker (or a frame, or a data link): its groups were
    dropped and the state must be restored from the last checkpoint. ``Stream.run`` handles
    it by restarting from there; a caller only sees it if it runs stateful datasets itself."""


class ReplayNeeded(AdrizzleError):
    """A run with stream state cannot start at its first micro-batch: the state exists only
    as of an earlier batch (the last checkpoint), so the batches from ``from_batch`` on must be
    run again first. Raised before anything is launched; ``Stream.run`` handles it."""

    def __init__(self, from_batch: int, message: str) -> None:
        super().__init__(message)
        self.from_batch = from_batch


class _ConnectorError(AdrizzleError):
    """A connector failed: says which one (its ``name``), the partition, the micro-batch when
    known, and the cause. Picklable, so it crosses from a slot process to the driver intact."""

    def __init__(
        self, name: str, cause: str, *, partition: int | None = None, batch: int | None = None
    ) -> None:
        self.name = name
        self.cause = cause
        self.partition = partition
        self.batch = batch
        where = [name]
        if partition is not None:
            where.append(f"partition {partition}")
        if batch is not None:
            where.append(f"batch {batch}")
        super().__init__(f"{', '.join(where)}: {cause}")

    def at_batch(self, batch: int) -> Self:
        """The same error, saying which micro-batch it happened in (readers do not know it;
        the engine does)."""
        return type(self)(self.name, self.cause, partition=self.partition, batch=batch)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_connector_error,
            (type(self), self.name, self.cause, self.partition, self.batch),
        )


def _rebuild_connector_error(
    cls: type[_ConnectorError], name: str, cause: str, partition: int | None, batch: int | None
) -> _ConnectorError:
    return cls(name, cause, partition=partition, batch=batch)


class SourceError(_ConnectorError):
    """A source connector could not list, read or commit: an unreachable or failing broker, a
    stream or topic that is gone, a replay whose records are no longer there, bad input.
    ``name`` is the source's ``name``; ``partition`` and ``batch`` are None when unknown."""


class SinkError(_ConnectorError):
    """A sink connector could not commit a micro-batch; nothing of that batch was committed
    (see each sink's notes for the exceptions). ``name`` is the sink's ``name``."""
