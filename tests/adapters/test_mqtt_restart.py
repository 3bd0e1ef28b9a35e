"""MQTTAdapter when its broker restarts, on a Mosquitto of the test's own.

The shared Mosquitto is never restarted: each test starts one on a free loopback port,
with persistence in its own directory (a temporary config file), and stops it after.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import missive
from missive.adapters.mqtt import MQTTAdapter
from missive.testing.conformance.support import (
    Recorder,
    RecordingObserver,
    running,
    wait_until,
)


class Mosquitto:
    """A mosquitto process on a free loopback port, with persistence in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            f"user {getpass.getuser()}\n"  # root keeps its rights to the directory
            f"log_dest file {directory}/mosquitto.log\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(["mosquitto", "-c", str(self.config)])
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its sessions and messages, then exits."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)
            self.process = None

    def restart(self, down: float = 0.3) -> None:
        self.stop()
        time.sleep(down)
        self.start()

    def publish(self, topic: str, bodies: list[bytes]) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        try:
            for info in [client.publish(topic, body, qos=1) for body in bodies]:
                info.wait_for_publish(10)
                assert info.is_published()
        finally:
            client.disconnect()
            client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if shutil.which("mosquitto") is None:
        problem = "mosquitto is not installed: apt-get install mosquitto"
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    server = Mosquitto(tmp_path)
    server.start()
    yield server
    server.stop()


def adapter(
    broker: Mosquitto, processor: missive.Processor[Any], **options: Any
) -> MQTTAdapter[Any]:
    options.setdefault("group", "workers")
    return MQTTAdapter(
        missive.RawMessage,
        processor,
        "orders/#",
        url=broker.url,
        client_id="worker-1",
        max_reconnect_delay=0.3,
        **options,
    )


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_messages_kept_for_a_stopped_worker_survive_a_broker_restart(
    broker: Mosquitto, protocol: str
) -> None:
    # Given a worker that ran once, then stopped, and messages kept for it
    first = Recorder()
    with running(adapter(broker, first.processor, protocol=protocol)):
        pass
    broker.publish("orders/1", [b"kept-%d" % i for i in range(50)])
    # When the broker restarts, then the worker starts again
    broker.restart()
    second = Recorder()
    with running(adapter(broker, second.processor, protocol=protocol)):
        wait_until(lambda: second.count() >= 50, "the kept messages are handled")
        time.sleep(0.3)  # room for a wrong duplicate
    # Then none was lost or handled twice
    assert second.bodies == [b"kept-%d" % i for i in range(50)]


@pytest.mark.parametrize("group", [None, "workers"])
def test_a_running_worker_reconnects_after_a_broker_restart_and_loses_nothing(
    broker: Mosquitto, group: str | None
) -> None:
    # Given a worker consuming, whose handler is slow, with messages still unacknowledged
    recorder = Recorder(lambda m: time.sleep(0.01))
    worker = adapter(broker, recorder.processor, group=group)
    observer = worker.add_observer(RecordingObserver())
    with running(worker):
        broker.publish("orders/1", [b"%d" % i for i in range(200)])
        wait_until(lambda: recorder.count() >= 20, "some messages are handled")
        # When the broker restarts in the middle, and more messages come after
        broker.restart()
        if group is not None:
            # Mosquitto 2.0.11 restores a session's shared subscriptions only when its
            # client subscribes again (docs/mqtt.md): until then it drops their messages.
            wait_until(lambda: "connection_restored" in observer.events(), "it reconnected")
        broker.publish("orders/2", [b"%d" % i for i in range(200, 300)])
        everything = {b"%d" % i for i in range(300)}
        try:
            wait_until(lambda: set(recorder.bodies) >= everything, "all handled")
        except AssertionError as exc:
            missing = sorted(everything - set(recorder.bodies), key=int)
            raise AssertionError(f"{len(missing)} missing: {missing[:20]}") from exc
    # Then every message was handled (some twice: those in hand when it went down)
    assert len(set(recorder.bodies)) == 300
    assert len(recorder.bodies) - 300 <= 2 * 100  # at most the unacked window again


def test_mosquitto_drops_what_a_shared_subscription_gets_before_its_worker_reconnects(
    broker: Mosquitto,
) -> None:
    # Given a worker in a group that ran once (its session and subscription exist)
    with running(adapter(broker, Recorder().processor)):
        pass
    # When the broker restarts, and a message is published before the worker is back
    broker.restart()
    broker.publish("orders/1", [b"published while no worker was connected"])
    recorder = Recorder()
    with running(adapter(broker, recorder.processor)):
        time.sleep(1)
    # Then it is lost: the fact docs/mqtt.md warns about (Mosquitto 2.0.11, measured;
    # without a group the session's subscription is restored and the message kept)
    if recorder.count():
        pytest.fail("this Mosquitto keeps it now: update docs/mqtt.md (broker restarts)")



def test_after_a_restart_only_the_first_window_of_dup_messages_counts_as_redelivered(
    broker: Mosquitto,
) -> None:
    # Given a running worker with a window of 5, slow, and 50 messages for it
    for attempt in range(3):
        recorder = Recorder(lambda message: time.sleep(0.02))
        with running(adapter(broker, recorder.processor, receive_maximum=5)):
            broker.publish(f"orders/{attempt}", [b"kept-%d" % i for i in range(50)])
            # When the broker restarts while it holds most of them (Mosquitto then sets
            # DUP on the messages it was sending, past the client's window)
            broker.restart()
            wait_until(
                lambda r=recorder: len(set(r.bodies)) >= 50, "the kept messages are handled"
            )
        dup = [m.attributes["dup"] for m in recorder.messages]
        if sum(dup) > 5:
            break
        # On a loaded machine the worker may have taken most of them before the
        # restart, leaving no more than its window marked: the case is not met, again.
    else:
        pytest.fail("Mosquitto marked no more than the window in 3 restarts")
    # Then only a window's worth could have been in flight before the restart: those
    # after them are first deliveries, whatever their DUP flag says
    counts = [m.attributes["delivery_count"] for m in recorder.messages]
    assert counts.count(None) <= 5
