"""The registry of job types: each has a payload schema, a queue and its limits.

The API validates payloads against it; the worker runtime finds the handler in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from models.platform import PRIORITY_DEFAULT, PRIORITY_MAX, PRIORITY_MIN

if TYPE_CHECKING:
    from roadie.jobs.runtime import JobContext

QUEUES = ("media", "ipfs", "chain", "ledger", "indexer", "webhooks", "default")

Handler = Callable[[Any, "JobContext"], dict[str, Any]]


@dataclass(frozen=True)
class JobType:
    name: str
    payload_model: type[BaseModel]
    handler: Handler
    queue: str = "default"
    max_attempts: int = 5
    soft_time_limit_s: int = 300
    hard_time_limit_s: int = 360
    description: str = ""
    #: The scope a client needs to submit it; most job types need only ``jobs:write``.
    scope: str = "jobs:write"
    #: Its jobs' priority when the request names none (0 lowest, 9 highest).
    priority: int = PRIORITY_DEFAULT


_REGISTRY: dict[str, JobType] = {}


def job_type(
    name: str,
    payload_model: type[BaseModel],
    *,
    queue: str = "default",
    max_attempts: int = 5,
    soft_time_limit_s: int = 300,
    hard_time_limit_s: int = 360,
    scope: str = "jobs:write",
    priority: int = PRIORITY_DEFAULT,
) -> Callable[[Handler], Handler]:
    """Declare a job type whose handler is the decorated plain function."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(f"priority {priority} is not {PRIORITY_MIN}-{PRIORITY_MAX}")

    def register(handler: Handler) -> Handler:
        if name in _REGISTRY:
            raise ValueError(f"job type {name!r} is declared twice")
        _REGISTRY[name] = JobType(
            name=name,
            payload_model=payload_model,
            handler=handler,
            queue=queue,
            max_attempts=max_attempts,
            soft_time_limit_s=soft_time_limit_s,
            hard_time_limit_s=hard_time_limit_s,
            scope=scope,
            priority=priority,
            description=(handler.__doc__ or "").strip().splitlines()[0] if handler.__doc__ else "",
        )
        return handler

    return register


def job_types() -> dict[str, JobType]:
    """Every declared job type, after importing the task modules that declare them."""
    import tasks  # noqa: F401 - importing the package declares the job types

    return dict(_REGISTRY)
