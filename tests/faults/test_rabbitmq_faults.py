"""The fault-injection scenarios on RabbitMQ (RabbitMQAdapter), 127.0.0.1:5672."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from missive.adapters.rabbitmq import RabbitMQAdapter
from tests.faults import cases, retry_cases
from tests.faults.brokers import RabbitBroker, restart_rabbitmq
from tests.faults.scenario import Mode, Run
from tests.services import require

POSTGRES_URL = os.environ.get("MISSIVE_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")

pytestmark = [pytest.mark.faults, pytest.mark.timeout(cases.TEST_TIMEOUT)]


@pytest.fixture
def run(request: pytest.FixtureRequest, tmp_path: Path, mode: Mode) -> Iterator[Run]:
    mode.require_support(RabbitMQAdapter)
    require("rabbitmq")
    marker = request.node.get_closest_marker("scenario")
    broker = RabbitBroker(marker.kwargs.get("queue_type", "classic"))
    run = Run(broker, tmp_path, marker.args[0], cases.N, mode)
    try:
        yield run
    finally:
        try:
            run.workers.close()
        finally:
            try:
                broker.close()
            finally:
                run.drop_postgres_dlq()


@pytest.mark.scenario("1. handlers raise on 10%")
def test_messages_whose_handler_raises_end_in_the_dlq(run: Run) -> None:
    cases.handlers_raise(run)


@pytest.mark.scenario("2. worker SIGKILLed")
def test_a_killed_workers_unacked_messages_are_redelivered(run: Run) -> None:
    cases.worker_killed(run)


@pytest.mark.scenario("3. worker SIGTERMed")
def test_a_terminated_worker_drains_and_hands_back_without_duplicates(run: Run) -> None:
    cases.worker_terminated(run)


@pytest.mark.scenario("4a. connections killed (close_connection)")
def test_workers_reconnect_after_the_broker_closes_their_connections(run: Run) -> None:
    cases.connections_killed(run)


@pytest.mark.scenario("4b. TCP path stalled, then cut")
def test_workers_go_on_after_the_tcp_path_stalls_and_is_cut(run: Run) -> None:
    cases.path_broken(run)


@pytest.mark.scenario("5. broker restart (stop_app/start_app)")
def test_durable_persistent_messages_survive_a_broker_restart(run: Run) -> None:
    cases.broker_restart(run, restart_rabbitmq)


@pytest.mark.scenario("6. DLQ locked past its timeout")
def test_dead_letters_wait_unacked_while_the_dlq_is_locked(run: Run) -> None:
    cases.dlq_locked(run)


@pytest.mark.scenario("6b. PostgreSQL DLQ sessions terminated")
def test_dead_letters_go_in_after_the_postgres_dlq_sessions_are_terminated(run: Run) -> None:
    require("postgres")
    cases.dlq_sessions_terminated(run, POSTGRES_URL)


@pytest.mark.scenario("7. poison message (os._exit)", queue_type="quorum")
def test_a_poison_message_is_quarantined_after_max_deliveries(run: Run) -> None:
    run.workers.env.update(FAULT_MAX_DELIVERIES="3", FAULT_PREFETCH="10")
    cases.poison(run)


@pytest.mark.scenario("8. hostile input")
def test_hostile_bodies_are_dead_lettered_and_the_worker_runs_on(run: Run) -> None:
    cases.hostile_input(run)


@pytest.mark.scenario("poison neighbours", queue_type="quorum")
def test_messages_handled_before_a_poison_message_are_not_quarantined(run: Run) -> None:
    run.workers.env.update(FAULT_MAX_DELIVERIES="2", FAULT_PREFETCH="10")
    cases.handled_before_poison(run)


@pytest.mark.scenario("9. dependency down 10 s (delayed retries)")
def test_messages_failing_while_a_dependency_is_down_are_retried_until_it_is_back(
    run: Run,
) -> None:
    retry_cases.dependency_down(run)


@pytest.mark.scenario("10. worker SIGKILLed while retries wait")
def test_messages_waiting_for_a_retry_survive_the_worker(run: Run) -> None:
    retry_cases.killed_while_waiting(run)


@pytest.mark.scenario("11. 10% always fail (6 attempts)")
def test_messages_that_always_fail_are_dead_lettered_with_their_history(run: Run) -> None:
    retry_cases.always_failing(run)
