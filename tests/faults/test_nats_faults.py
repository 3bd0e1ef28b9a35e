"""The fault-injection scenarios on NATS JetStream (NATSJetStreamAdapter).

On the shared NATS, 127.0.0.1:4222, each test with its own stream and durable
consumer, except the server restart: that scenario runs on a ``nats-server -js`` of
its own, with its own store on a free loopback port (see ``nats_server.py``), the
only one it restarts. nats-server 2.9 cannot kick a client, so the workers connect
through a TCP proxy that "connections killed" resets (see ``JetStreamBroker``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from missive.adapters.nats import NATSJetStreamAdapter
from tests.faults import cases
from tests.faults.brokers import JetStreamBroker
from tests.faults.nats_server import NATSServer, require_nats_server
from tests.faults.scenario import Mode, Run
from tests.services import require

pytestmark = [pytest.mark.faults, pytest.mark.timeout(cases.TEST_TIMEOUT)]


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NATSServer]:
    """A nats-server -js of this test's own, its store in ``tmp_path``."""
    require_nats_server()
    with NATSServer(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def run(request: pytest.FixtureRequest, tmp_path: Path, mode: Mode) -> Iterator[Run]:
    mode.require_support(NATSJetStreamAdapter)
    marker = request.node.get_closest_marker("scenario")
    if marker.kwargs.get("own_nats"):
        broker = JetStreamBroker(request.getfixturevalue("own_nats").url)
    else:
        require("nats")
        broker = JetStreamBroker()
    run = Run(broker, tmp_path, marker.args[0], cases.N, mode)
    try:
        yield run
    finally:
        try:
            run.workers.close()
        finally:
            broker.close()


@pytest.mark.scenario("2. worker SIGKILLed")
def test_a_killed_workers_unacked_messages_come_back_after_ack_wait(run: Run) -> None:
    cases.worker_killed(run)


@pytest.mark.scenario("3. worker SIGTERMed")
def test_a_terminated_worker_drains_and_hands_back_without_duplicates(run: Run) -> None:
    cases.worker_terminated(run)


@pytest.mark.scenario("4a. connections killed (proxy reset)")
def test_workers_reconnect_after_their_connections_are_killed(run: Run) -> None:
    cases.connections_killed(run, "(reset at the workers' proxy)")


@pytest.mark.scenario("5. server restart (own nats-server -js)", own_nats=True)
def test_stored_messages_survive_a_restart_of_the_server(run: Run, own_nats: NATSServer) -> None:
    cases.broker_restart(run, own_nats.restart, "nats-server SIGTERMed, file store")


@pytest.mark.scenario("7. poison message (os._exit)")
def test_a_poison_message_is_quarantined_after_max_deliveries(run: Run) -> None:
    run.workers.env.update(FAULT_MAX_DELIVERIES="3", FAULT_BATCH="10")
    cases.poison(run)
