"""The retry taxonomy: a job fails for good, or is retried with backoff."""

from __future__ import annotations


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
    """The world may be better next time (network, timeout, 5xx, lock contention): retry."""

    code = "transient_error"


class JobCancelled(Exception):  # noqa: N818 - a signal, not an error
    """Raised inside a handler when the job's cancellation was requested."""
