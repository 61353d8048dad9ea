"""The worker's consumer, with Flower's task events sent in batches.

Celery buffers a worker's task events (received, started, succeeded...) and flushes them on the
event loop's next turn, which comes between almost every two events: three broker publishes per
job, each a round trip made by the worker's main process while the pool waits for its next
message. That was a fifth of a no-op job's end-to-end cost. Here the first buffered event schedules
one flush a short while later, and everything buffered meanwhile goes out as one ``task.multi``
message, which Flower reads like any other; Celery still flushes at once when 24 events are
waiting. Flower shows a task at most ``EVENTS_FLUSH_DELAY_S`` later.
"""

from __future__ import annotations

from celery.worker import consumer

#: How long a task event may wait for others to share its publish.
EVENTS_FLUSH_DELAY_S = 0.1


class Consumer(consumer.Consumer):  # type: ignore[misc]  # Celery's classes are untyped
    _events_flush_scheduled = False

    def on_send_event_buffered(self) -> None:
        if self.hub is not None and not self._events_flush_scheduled:
            self._events_flush_scheduled = True
            self.hub.call_later(EVENTS_FLUSH_DELAY_S, self._flush_buffered_events)

    def _flush_buffered_events(self) -> None:
        self._events_flush_scheduled = False
        self._flush_events()
