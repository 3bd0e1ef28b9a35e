"""The fault-injection scenarios on Redis Streams (RedisStreamsAdapter).

On the shared Redis, 127.0.0.1:6379, except the broker restart: that scenario runs
on a redis-server of its own (see ``redis_server.py``), the only one it restarts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from missive.adapters.redis import RedisStreamsAdapter
from tests.faults import cases, retry_cases
from tests.faults.brokers import StreamsBroker
from tests.faults.redis_server import RedisServer, require_redis_server
from tests.faults.scenario import Mode, Run
from tests.services import require

POSTGRES_URL = os.environ.get("MISSIVE_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")

pytestmark = [pytest.mark.faults, pytest.mark.timeout(cases.TEST_TIMEOUT)]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, AOF fsynced at every write, in ``tmp_path``."""
    require_redis_server()
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def run(request: pytest.FixtureRequest, tmp_path: Path, mode: Mode) -> Iterator[Run]:
    mode.require_support(RedisStreamsAdapter)
    marker = request.node.get_closest_marker("scenario")
    if marker.kwargs.get("own_redis"):
        broker = StreamsBroker(request.getfixturevalue("own_redis").url)
    else:
        require("redis")
        broker = StreamsBroker()
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
def test_a_killed_workers_pending_entries_are_claimed_by_the_others(run: Run) -> None:
    cases.worker_killed(run)


@pytest.mark.scenario("3. worker SIGTERMed")
def test_a_terminated_worker_drains_and_hands_back_without_duplicates(run: Run) -> None:
    cases.worker_terminated(run)


@pytest.mark.scenario("4a. connections killed (CLIENT KILL)")
def test_workers_reconnect_after_the_server_kills_their_connections(run: Run) -> None:
    cases.connections_killed(run)


@pytest.mark.scenario("4b. TCP path stalled, then cut")
def test_workers_go_on_after_the_tcp_path_stalls_and_is_cut(run: Run) -> None:
    cases.path_broken(run)


@pytest.mark.scenario("5. broker restart (own redis-server, AOF)", own_redis=True)
def test_entries_survive_a_restart_of_a_redis_with_aof_fsynced_always(
    run: Run, own_redis: RedisServer
) -> None:
    cases.broker_restart(run, own_redis.restart, "redis-server SIGTERMed, appendfsync always")


@pytest.mark.scenario("6. DLQ locked past its timeout")
def test_dead_letters_wait_unacked_while_the_dlq_is_locked(run: Run) -> None:
    cases.dlq_locked(run)


@pytest.mark.scenario("6b. PostgreSQL DLQ sessions terminated")
def test_dead_letters_go_in_after_the_postgres_dlq_sessions_are_terminated(run: Run) -> None:
    require("postgres")
    cases.dlq_sessions_terminated(run, POSTGRES_URL)


@pytest.mark.scenario("7. poison message (os._exit)")
def test_a_poison_message_is_quarantined_after_max_deliveries(run: Run) -> None:
    run.workers.env.update(FAULT_MAX_DELIVERIES="3", FAULT_BATCH="10", FAULT_CLAIM_MS="1000")
    cases.poison(run)


@pytest.mark.scenario("8. hostile input")
def test_hostile_bodies_are_dead_lettered_and_the_worker_runs_on(run: Run) -> None:
    cases.hostile_input(run)


@pytest.mark.scenario("poison neighbours")
def test_entries_handled_before_a_poison_entry_are_not_quarantined(run: Run) -> None:
    run.workers.env.update(FAULT_MAX_DELIVERIES="2", FAULT_BATCH="10", FAULT_CLAIM_MS="300")
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
