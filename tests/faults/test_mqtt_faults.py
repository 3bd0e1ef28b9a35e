"""The fault-injection scenarios on MQTT (MQTTAdapter: MQTT 5, QoS 1, persistent sessions).

Every scenario runs on a ``mosquitto`` of its own, with persistence in the test's
directory, on a free loopback port (see ``mosquitto_server.py``), never on the shared
one on 1883: the restart would disturb other runs, and the shared one's default
``max_queued_messages 1000`` drops what a session holds beyond 1000 messages, which
N messages queued before the workers start exceed (a loss of the broker's
configuration, documented in docs/mqtt.md, not of the adapter).

Which of the generic scenarios run here, and why the others do not:

* 2 (SIGKILL) and 5 (broker restart), as issue 15 asks, unchanged: a worker's queue
  is its session, and ``apps.mqtt_worker`` gives a new worker the client id of a
  dead one (the lowest free one), so what the killed worker held comes back to its
  successor, DUP set. Lost must be 0, as everywhere.
* One expectation moves: "the broker holds none" cannot be asked while the workers
  hold their sessions (see ``MQTTBroker.remaining``), so it is checked after the
  case, once the workers stopped, by resuming every session: each must be empty.
* Not 1, 6, 6b and the hostile input here (not asked for, and MQTT has no nack: a
  failing handler's message is dead-lettered at once, and one the DLQ cannot take
  stops the worker, see docs/mqtt.md; scenario 6 would need a supervisor).
* Not 4a: Mosquitto cannot close one client's connection, except by a takeover of
  its client id, which is what a SIGKILL and restart does already.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from missive.adapters.mqtt import MQTTAdapter
from tests.faults import cases
from tests.faults.brokers import MQTTBroker
from tests.faults.mosquitto_server import MosquittoServer, require_mosquitto
from tests.faults.scenario import Mode, Run

pytestmark = [pytest.mark.faults, pytest.mark.timeout(cases.TEST_TIMEOUT)]


@pytest.fixture
def own_mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A mosquitto of this test's own, with persistence in ``tmp_path``."""
    require_mosquitto()
    with MosquittoServer(tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
def run(
    request: pytest.FixtureRequest, tmp_path: Path, mode: Mode, own_mosquitto: MosquittoServer
) -> Iterator[Run]:
    mode.require_support(MQTTAdapter)
    marker = request.node.get_closest_marker("scenario")
    broker = MQTTBroker(own_mosquitto.url)
    run = Run(broker, tmp_path, marker.args[0], cases.N, mode)
    try:
        yield run
    finally:
        try:
            run.workers.close()
        finally:
            broker.close()


def _sessions_are_empty(run: Run) -> None:
    # The broker's share of wait_done: see MQTTBroker.remaining.
    assert isinstance(run.broker, MQTTBroker)
    sessions = len(list(run.record_dir.glob("mqtt-client-*.lock")))
    assert run.broker.held(sessions) == 0, "a session still holds messages after the run"


@pytest.mark.scenario("2. worker SIGKILLed (QoS 1, persistent session)")
def test_a_killed_workers_session_is_resumed_by_its_successor(run: Run) -> None:
    cases.worker_killed(run)
    _sessions_are_empty(run)


@pytest.mark.scenario("5. broker restart (own mosquitto, persistence)")
def test_sessions_survive_a_restart_of_a_mosquitto_with_persistence(
    run: Run, own_mosquitto: MosquittoServer
) -> None:
    cases.broker_restart(run, own_mosquitto.restart, "mosquitto SIGTERMed, persistence true")
    _sessions_are_empty(run)
