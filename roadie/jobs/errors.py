"""The retry taxonomy: a job fails for good, or is retried with backoff."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any


class JobError(Exception):
    """An error a job handler raises on purpose, with a stable machine-readable code."""

    code = "job_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class PermanentError(JobError):
    """Retrying cannot help (bad input, undecodable audio): the job fails at once."""

    code = "permanent_error"


class TransientError(JobError):
    """The world may be better next time (network, timeout, 5xx, lock contention): retry.

    ``retry_after_s`` is the handler's own delay before the next attempt (a webhook's retry schedule);
    None: the platform's exponential backoff.
    """

    code = "transient_error"

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class JobCancelled(Exception):  # noqa: N818 - a signal, not an error
    """Raised inside a handler when the job's cancellation was requested."""


class WaitForChildren(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a parent job's handler to free its worker until one of ``child_ids`` finishes.

    The job becomes ``waiting``; when one of its children finishes, a database trigger re-queues
    it through the outbox in the child's own transaction, and the handler runs again to advance.
    ``result`` is shown as the job's interim result meanwhile.
    """

    def __init__(self, child_ids: Iterable[uuid.UUID], result: dict[str, Any] | None = None) -> None:
        self.child_ids = list(child_ids)
        if not self.child_ids:
            raise ValueError("a job can only wait for child jobs it has")
        super().__init__(f"waiting for {len(self.child_ids)} child jobs")
        self.result = result
