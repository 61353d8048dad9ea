"""Webhooks pool job type: one try at one delivery (``roadie.webhooks.delivery``), counted in the metrics."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

from roadie.jobs.runtime import JobContext
from roadie.jobs.types import job_type
from roadie.webhooks.delivery import DeliveryFailedError, DeliveryRetryError, deliver
from workers import telemetry


class DeliveryPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delivery_id: uuid.UUID


#: Attempts are bounded by the retry schedule (``ROADIE_WEBHOOK_RETRY_SCHEDULE_S``, at most 50 steps),
#: which the delivery applies itself; this is only the runtime's upper bound.
@job_type("webhooks.deliver", DeliveryPayload, queue="webhooks", max_attempts=51, soft_time_limit_s=120)
def deliver_event(payload: DeliveryPayload, context: JobContext) -> dict[str, Any]:
    """POST one event to one endpoint, signed; retried on the webhook schedule, failed on a refusal."""
    try:
        outcome = deliver(payload.delivery_id, context.run_attempt)
    except (DeliveryRetryError, DeliveryFailedError) as exc:
        telemetry.observe_webhook(exc.outcome.event_type, exc.outcome.verdict.value, exc.outcome.latency_s)
        raise
    if outcome is None:
        return {"delivery_id": str(payload.delivery_id), "skipped": "the delivery is settled or gone"}
    telemetry.observe_webhook(outcome.event_type, outcome.verdict.value, outcome.latency_s)
    return outcome.result
