"""Three library internals Roadie leans on, checked for shape so an upgrade that moves them fails here, loudly.

- ``workers/consumer.py`` batches Flower's task events by overriding Celery's consumer hook
  ``on_send_event_buffered`` and calling its private ``_flush_events`` later, through kombu's
  ``Hub.call_later`` (``bench.throughput``: 408 → 486 jobs/s when it was introduced).
- ``workers/telemetry.py`` re-selects prometheus_client's private ``values.ValueClass`` when the
  multiprocess directory is set after the library was imported.
- ``roadie/chain/client.py`` sends ``getRecentPrioritizationFees``, which solana-py has no method for,
  through its client's private ``_provider.make_request_unparsed`` (solana is pinned to 0.36.6).

pyproject.toml caps both libraries at the versions these checks were written against.
"""

from __future__ import annotations

import inspect

from celery.worker import consumer
from kombu.asynchronous import Hub
from prometheus_client import values
from solana.rpc.async_api import AsyncClient
from solana.rpc.providers.async_http import AsyncHTTPProvider


def test_celerys_consumer_still_buffers_task_events_behind_the_hooks_roadie_overrides() -> None:
    assert inspect.signature(consumer.Consumer.on_send_event_buffered).parameters.keys() == {"self"}
    assert inspect.signature(consumer.Consumer._flush_events).parameters.keys() == {"self"}
    assert "call_later" in dir(Hub)
    source = inspect.getsource(consumer.Consumer)
    assert "on_send_event_buffered" in source, "Celery no longer calls the hook this batching relies on"


def test_prometheus_client_still_chooses_its_value_class_as_roadie_reselects_it() -> None:
    assert callable(values.get_value_class)
    assert isinstance(values.ValueClass, type)
    assert getattr(values.MultiProcessValue(), "_multiprocess", False) is True  # type: ignore[no-untyped-call]


def test_solana_pys_client_still_sends_a_raw_request_through_its_provider() -> None:
    assert isinstance(AsyncClient("http://127.0.0.1:1")._provider, AsyncHTTPProvider)
    assert list(inspect.signature(AsyncHTTPProvider.make_request_unparsed).parameters) == ["self", "body"]
