"""NATSJetStreamAdapter across a restart of a NATS server of its own (never the shared one).

The test starts ``nats-server -js -sd <tmpdir> -p <free port> -a 127.0.0.1``, restarts
that one with the same store, and checks that nothing was lost.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js import api

import missive
from missive.adapters.nats import NATSJetStreamAdapter
from missive.testing.conformance.support import Recorder, RecordingObserver, running, wait_until
from tests.conformance.nats_harness import Client
from tests.faults.private_server import free_port


class Server:
    """A nats-server with JetStream on a free loopback port and its own store."""

    def __init__(self, store: Path) -> None:
        self.store, self.port = store, free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["nats-server", "-js", "-sd", str(self.store), "-p", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "-a", "127.0.0.1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    if shutil.which("nats-server") is None:
        pytest.skip("nats-server is not installed: apt-get install nats-server")
    server = Server(tmp_path / "store")
    server.start()
    yield server
    server.stop()


def publish(server: Server, subject: str, bodies: list[bytes]) -> None:
    client = Client(server.url)
    try:
        for body in bodies:
            client.run(client.js.publish(subject, body))
    finally:
        client.close()


def test_a_server_restart_loses_nothing(server: Server) -> None:
    # Given a file-backed work-queue stream on the server, and an adapter consuming it
    client = Client(server.url)
    client.run(
        client.jsm.add_stream(
            name="restart", subjects=["restart.>"], retention=api.RetentionPolicy.WORK_QUEUE
        )
    )
    client.close()
    recorder = Recorder()
    adapter = NATSJetStreamAdapter(
        missive.RawMessage, recorder.processor, "restart", url=server.url, max_reconnect_delay=0.3
    )
    observer = adapter.add_observer(RecordingObserver())
    before = [b"before-%d" % i for i in range(100)]
    after = [b"after-%d" % i for i in range(100)]
    with running(adapter):
        publish(server, "restart.in", before)
        wait_until(lambda: recorder.count() >= 100, "the first messages are handled")
        # When the server restarts, and more messages are published
        server.stop()
        server.start()
        publish(server, "restart.in", after)
        # Then every message is handled, and the stream ends up empty
        wait_until(lambda: set(before + after) <= set(recorder.bodies), "every message is handled")
        client = Client(server.url)
        try:
            wait_until(
                lambda: client.run(client.jsm.stream_info("restart")).state.messages == 0,
                "every message is acked",
            )
        finally:
            client.close()
    # and the loss and the new connection were reported
    events = observer.events()
    assert events.index("connection_lost") < events.index("connection_restored")


WORKER = """
import sys, threading, time
import missive
from missive.adapters.nats import NATSJetStreamAdapter

processor = missive.Processor()
lock = threading.Lock()

@processor.handle_for(lambda m: True)
def handle(message, ctx):
    time.sleep(0.005)
    with lock:  # one whole line at a time, whichever worker thread prints
        sys.stdout.write(message.raw_data.decode() + "\\n")
        sys.stdout.flush()
    ctx.ack()

NATSJetStreamAdapter(missive.RawMessage, processor, sys.argv[1], durable="workers",
                     url=sys.argv[2], ack_wait=1.0, concurrency=int(sys.argv[3])).run()
"""


@pytest.mark.parametrize("concurrency", [1, 8])
def test_a_worker_killed_with_sigkill_loses_nothing(server: Server, concurrency: int) -> None:
    # Given 300 messages and a worker process consuming them
    client = Client(server.url)
    client.run(client.jsm.add_stream(name="killed", subjects=["killed.>"]))
    client.close()
    bodies = [b"%d" % i for i in range(300)]
    publish(server, "killed.in", bodies)
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, "killed", server.url, str(concurrency)],
        stdout=subprocess.PIPE,
    )
    assert worker.stdout is not None
    seen = [worker.stdout.readline().strip() for _ in range(50)]
    # When it is killed mid-stream (no stop, no acks sent)
    worker.kill()
    seen += worker.stdout.read().split()  # what it printed before it died (not communicate():
    worker.wait(10)  # with a timeout, it would skip what readline() buffered)
    worker.stdout.close()
    # Then another worker on the same durable gets the rest, and the unacked ones again
    recorder = Recorder()
    adapter = NATSJetStreamAdapter(
        missive.RawMessage, recorder.processor, "killed", durable="workers", url=server.url
    )
    with running(adapter):
        wait_until(lambda: set(bodies) <= set(seen) | set(recorder.bodies), "all handled")
        client = Client(server.url)
        try:
            wait_until(
                lambda: client.run(client.jsm.consumer_info("killed", "workers")).num_ack_pending
                == 0,
                "nothing is left unacked",
            )
            info = client.run(client.jsm.consumer_info("killed", "workers"))
        finally:
            client.close()
    assert info.num_pending == 0
    lost = set(bodies) - set(seen) - set(recorder.bodies)
    assert not lost
