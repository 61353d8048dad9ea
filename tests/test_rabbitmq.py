"""The platform on RabbitMQ: a representative subset of the end-to-end tests, with AMQP as the broker.

The subset runs as a pytest session of its own (a subprocess), because the broker URL is fixed
for a whole session: every subprocess the fixtures start inherits it. That session gets its own
vhost (made with rabbitmqctl, see tests/conftest.py) and purges the platform queues before each
test. Run the whole suite on RabbitMQ with ``ROADIE_TEST_BROKER_URL=amqp://guest:guest@127.0.0.1:5672// pytest``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from tests.conftest import ROOT

RABBITMQ_URL = os.environ.get("ROADIE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")

#: submit -> succeed, transient retry, a SIGKILLed pool child redelivered, /readyz, Flower watching the worker,
#: a high priority overtaking a backlog (x-max-priority queues).
SUBSET = [
    "tests/test_jobs_api.py::test_an_echo_job_is_accepted_then_succeeds_with_its_payload_as_result",
    "tests/test_jobs_api.py::test_a_transient_failure_is_retried_with_backoff_until_it_succeeds",
    "tests/test_durability.py::test_a_sigkilled_pool_child_s_job_is_redelivered_and_completes_exactly_once",
    "tests/test_api_contract.py::test_health_and_readiness",
    "tests/test_flower.py::test_a_job_run_by_the_worker_appears_in_flower_s_task_list",
    "tests/test_priorities.py::test_a_high_priority_job_starts_before_a_backlog_of_500_low_priority_ones_drains",
]


def rabbitmq_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=2):
            return True
    except OSError:
        return False


def run_on_rabbitmq(tests: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``tests`` as a pytest session of their own with RabbitMQ as the broker."""
    if not rabbitmq_reachable(RABBITMQ_URL):
        if os.environ.get("CI"):
            pytest.fail(f"RabbitMQ is not reachable at {urlsplit(RABBITMQ_URL).netloc} (.ci/services.sh starts it)")
        pytest.skip(f"RabbitMQ is not reachable at {urlsplit(RABBITMQ_URL).netloc}")
    env = dict(os.environ, ROADIE_TEST_BROKER_URL=RABBITMQ_URL)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", *tests],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


ON_RABBITMQ_ALREADY = pytest.mark.skipif(
    os.environ.get("ROADIE_TEST_BROKER_URL", "").startswith("amqp"),
    reason="this session already runs on RabbitMQ",
)


@ON_RABBITMQ_ALREADY
def test_the_end_to_end_subset_passes_with_rabbitmq_as_the_broker() -> None:
    started = time.monotonic()
    done = run_on_rabbitmq(SUBSET, timeout=240)

    report = f"{done.stdout[-8000:]}\n{done.stderr[-2000:]}"
    assert done.returncode == 0, report
    assert f"{len(SUBSET)} passed" in done.stdout, report
    assert time.monotonic() - started < 120, report


@ON_RABBITMQ_ALREADY
def test_a_worker_outlives_a_30_s_network_cut_to_rabbitmq() -> None:
    done = run_on_rabbitmq(["tests/test_broker_outage.py"], timeout=300)

    report = f"{done.stdout[-8000:]}\n{done.stderr[-2000:]}"
    assert done.returncode == 0, report
    assert "1 passed" in done.stdout, report
