"""RedisPubSubAdapter against the real Redis on 127.0.0.1:6379: the suite, then specifics.

Each test uses its own channel (random suffix).
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import missive
from missive.adapters._redis_pubsub_transport import _END, _WAKE
from missive.adapters.redis import RedisPubSubAdapter
from missive.runtime import Fault
from missive.testing.conformance.adapter_suite import AdapterSuite
from missive.testing.conformance.events_suite import EventsSuite
from missive.testing.conformance.harness import WithOptions
from missive.testing.conformance.support import Recorder, memory_growth, running, wait_until
from tests.conformance.redis_harness import URL, RedisPubSubHarness
from tests.services import require


@pytest.fixture
def harness() -> Iterator[RedisPubSubHarness]:
    require("redis")
    h = RedisPubSubHarness()
    yield h
    h.close()


class TestRedisPubSubConformance(AdapterSuite, EventsSuite):
    """Every test of the adapter and events suites, on Redis Pub/Sub."""



class TestRedisPubSubConcurrentConformance(AdapterSuite, EventsSuite):
    """The same suites with eight messages in flight (``concurrency=8``)."""

    @pytest.fixture
    def harness(self, harness: RedisPubSubHarness) -> WithOptions:
        return WithOptions(harness, concurrency=8)


# -- Pub/Sub specifics -------------------------------------------------------------------


def test_the_specs_two_argument_call_subscribes_to_the_default_channel(
    harness: RedisPubSubHarness,
) -> None:
    # Given the adapter built exactly as the quickstart prints it
    processor = missive.Processor()
    received: list[missive.RawMessage] = []

    @processor.handle_for(lambda m: m.raw_data == b"Hello")
    def greet(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        received.append(message)
        ctx.ack()

    redis_pubsub_processor = RedisPubSubAdapter(missive.RawMessage, processor)
    # When "Hello" is published on the channel "missive"
    with running(redis_pubsub_processor):
        harness.client.publish("missive", b"Hello")
        wait_until(lambda: received, "the message is handled")
    # Then the handler got it, with its channel
    assert redis_pubsub_processor.channels == ("missive",)
    assert received[0].attributes["channel"] == "missive"


def test_the_url_comes_from_redis_url_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given REDIS_URL in the environment
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/3")
    processor = missive.Processor()
    # When adapters are built with and without a url
    # Then the environment is the default and an explicit url wins
    assert RedisPubSubAdapter(missive.RawMessage, processor).url == "redis://127.0.0.1:6379/3"
    given = RedisPubSubAdapter(missive.RawMessage, processor, url="redis://127.0.0.1:6379/5")
    assert given.url == "redis://127.0.0.1:6379/5"
    monkeypatch.delenv("REDIS_URL")
    assert RedisPubSubAdapter(missive.RawMessage, processor).url == "redis://127.0.0.1:6379/0"


def test_a_pattern_subscription_receives_matching_channels_with_the_pattern(
    harness: RedisPubSubHarness,
) -> None:
    # Given an adapter subscribed to a pattern
    recorder = Recorder()
    pattern = f"{harness.channel}.*"
    with running(harness.adapter(missive.RawMessage, recorder.processor, patterns=pattern)):
        # When messages go to a matching and a non-matching channel
        harness.client.publish(f"{harness.channel}.eu", b"match")
        harness.client.publish(f"{harness.channel}-other", b"no match")
        wait_until(lambda: recorder.count() == 1, "the matching message is handled")
        time.sleep(0.2)
    # Then only the matching one arrived, naming its channel and the pattern
    [message] = recorder.messages
    assert message.raw_data == b"match"
    assert dict(message.attributes) == {"channel": f"{harness.channel}.eu", "pattern": pattern}


def test_a_message_that_cannot_be_handled_without_a_dlq_is_logged_and_the_adapter_goes_on(
    harness: RedisPubSubHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a processor without a DLQ whose handler fails on "bad"
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    handled: list[bytes] = []

    @processor.handle_for(lambda m: True)
    def picky(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        if message.raw_data == b"bad":
            raise ValueError("secret payload detail")
        handled.append(message.raw_data)
        ctx.ack()

    # When "bad" then "good" are published
    with running(harness.adapter(missive.RawMessage, processor)):
        harness.publish([b"bad", b"good"])
        wait_until(lambda: handled, "the next message is handled")
    # Then the lost message is logged at ERROR with its id, without the exception text
    assert handled == [b"good"]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "is lost" in record.getMessage()
    assert "b'" in record.getMessage()  # the message id
    assert "secret payload detail" not in record.getMessage()


def test_a_stop_handles_what_redis_sent_before_the_unsubscribe(
    harness: RedisPubSubHarness,
) -> None:
    # Given 50 messages received while the handler is slow, and a stop after the first
    adapters: list[missive.Adapter[Any]] = []

    def slow(message: missive.Message) -> None:
        adapters[0].stop()
        time.sleep(0.005)

    recorder = Recorder(slow)
    adapter = harness.adapter(missive.RawMessage, recorder.processor)
    adapters.append(adapter)
    # When the adapter stops while they are buffered
    with running(adapter):
        harness.publish([b"%d" % i for i in range(50)])
        wait_until(lambda: adapter.stop_requested, "the adapter is asked to stop")
    # Then every one of them was handled before run() returned
    assert recorder.bodies == [b"%d" % i for i in range(50)]


def test_messages_still_buffered_after_the_drain_timeout_are_dead_lettered(
    harness: RedisPubSubHarness,
) -> None:
    # Given a very slow handler, a short drain timeout and 30 messages received
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    handled: list[bytes] = []
    adapters: list[missive.Adapter[Any]] = []

    @processor.handle_for(lambda m: True)
    def slow(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        adapters[0].stop()
        time.sleep(0.05)
        handled.append(message.raw_data)
        ctx.ack()

    dlq: dict[bytes, tuple[missive.Message, str]] = {}
    processor.set_dlq(dlq)
    adapter = harness.adapter(missive.RawMessage, processor, drain_timeout=0.2)
    adapters.append(adapter)
    # When the adapter stops
    with running(adapter):
        harness.publish([b"%d" % i for i in range(30)])
        wait_until(lambda: adapter.stop_requested, "the adapter is asked to stop")
    # Then none was dropped silently: handled, or dead-lettered with a reason saying why
    stored = [message.raw_data for message, _ in dlq.values()]
    assert stored
    assert sorted(handled + stored, key=int) == [b"%d" % i for i in range(30)]
    assert all("drain_timeout" in reason for _, reason in dlq.values())


def test_a_killed_connection_is_logged_and_the_subscription_restored(
    harness: RedisPubSubHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a subscribed adapter
    recorder = Recorder()
    with running(harness.adapter(missive.RawMessage, recorder.processor)):
        # When the server kills its connection
        harness.kill_connections()
        # Then it subscribes again (a published message arrives) and a warning says why
        wait_until(
            lambda: harness.client.publish(harness.channel, b"probe") and recorder.count(),
            "a message is handled after the reconnection",
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("connection to Redis lost or refused" in w for w in warnings)


PUBLISHER = textwrap.dedent(
    """
    import sys, redis
    client = redis.Redis.from_url(sys.argv[1])
    count = int(sys.argv[3])
    with client.pipeline(transaction=False) as pipe:
        for i in range(count):
            pipe.publish(sys.argv[2], b'{"n": %d, "pad": "................................"}' % i)
            if len(pipe) >= 1000:
                pipe.execute()
        pipe.execute()
    client.close()
    """
)


@pytest.mark.timeout(180)
def test_a_burst_of_200000_messages_loses_nothing(harness: RedisPubSubHarness) -> None:
    # Given a subscribed adapter whose handler decodes each JSON message
    count = 200_000
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    seen = bytearray(count)
    lock = threading.Lock()

    @processor.handle_for(lambda m: True)
    def handle(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        seen[message.get_json()["n"]] += 1
        ctx.ack()

    def handled() -> int:
        with lock:
            return count - seen.count(0)

    with running(harness.adapter(missive.JSONMessage, processor)):
        # When another process publishes 200,000 messages as fast as it can
        subprocess.run(
            [sys.executable, "-c", PUBLISHER, URL, harness.channel, str(count)],
            check=True,
            timeout=120,
        )
        # Then every one of them is handled, once
        wait_until(lambda: handled() == count, "all 200,000 messages are handled", 120)
    assert max(seen) == 1


def test_importing_without_redis_py_names_the_extra_to_install() -> None:
    # Given a Python where redis-py cannot be imported
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "try:\n    import missive.adapters.redis\n"
        "except ImportError as exc:\n    print(type(exc).__name__, exc)\n"
    )
    # When missive.adapters.redis is imported
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    # Then the error is MissingExtraError naming missive[redis]
    assert result.stdout.startswith("MissingExtraError")
    assert "pip install 'missive[redis]'" in result.stdout


class BlackHoleProxy:
    """A TCP proxy to Redis that can swallow its connections' traffic without closing them.

    It stands for a network that silently drops a connection (a NAT or firewall
    forgetting it): no FIN, no RST, just no more bytes. :meth:`swallow` affects the
    connections open at the time; later ones are forwarded normally.
    """

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = [self._server]
        self._swallowed: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def swallow(self) -> None:
        self._swallowed.update(self._sockets)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", 6379))
            self._sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if source not in self._swallowed:
                    target.sendall(data)
        except OSError:
            return

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


def test_a_silently_dead_connection_is_noticed_by_health_checks_and_replaced(
    harness: RedisPubSubHarness, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an adapter behind a proxy, with health checks every second
    proxy = BlackHoleProxy()
    recorder = Recorder()
    adapter = harness.adapter(
        missive.RawMessage,
        recorder.processor,
        url=f"redis://127.0.0.1:{proxy.port}/0",
        health_check_interval=1,
    )
    try:
        with running(adapter):
            # When the network silently stops carrying its connection
            proxy.swallow()
            # Then within a few seconds it is declared dead, logged and replaced
            wait_until(
                lambda: harness.client.publish(harness.channel, b"probe") and recorder.count(),
                "a message is handled on a new connection",
                15,
            )
    finally:
        proxy.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no reply from Redis to a health check" in w for w in warnings)


SIGNAL_SCRIPT = """
import sys
import missive
from missive.adapters.redis import RedisPubSubAdapter

processor = missive.Processor()
processor.handle_for(lambda m: True)(lambda message, ctx: ctx.ack())
processor.after_processing(lambda ctx: print("after", flush=True))
adapter = RedisPubSubAdapter(missive.RawMessage, processor, sys.argv[1], url=sys.argv[2])
adapter._set_ready = lambda: print("ready", flush=True)  # say when subscribed
adapter.run()
print("returned", flush=True)
"""


def test_sigterm_in_the_main_thread_stops_gracefully(harness: RedisPubSubHarness) -> None:
    # Given a worker process subscribed in its main thread
    process = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_SCRIPT, harness.channel, URL],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        # When it receives SIGTERM
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=10)
    finally:
        process.kill()
        process.wait()
    # Then it ran the after_processing hooks and run() returned normally
    assert out == "after\nreturned\n"
    assert process.returncode == 0


def test_memory_stays_flat_over_thousands_of_messages(harness: RedisPubSubHarness) -> None:
    # Given an adapter that handled 1,000 messages
    # When it handles 5,000 more
    growth = memory_growth(harness)
    # Then they left less than 20 bytes each behind (a kept message costs hundreds)
    assert growth < 100_000, f"memory grew by {growth} bytes"


def test_the_transport_hands_over_rows_before_an_error_queued_behind_them() -> None:
    # Given a transport whose reader queued two messages, a wake, then a connection error
    adapter = RedisPubSubAdapter(missive.RawMessage, missive.Processor(), patterns="p.*")
    transport: Any = adapter.transport()
    queue = transport._queue
    queue.put([b"message", b"c", b"one"])
    queue.put([b"pmessage", b"p.*", b"p.x", b"two"])
    queue.put(_WAKE)
    queue.put(redis.ConnectionError("gone"))
    # When the loop receives
    batch = transport.receive(100, 1.0)
    # Then the messages come first, the wake is skipped, and the error on the next receive
    assert batch.bodies == [b"one", b"two"]
    assert batch.attributes == [{"channel": "c"}, {"channel": "p.x", "pattern": "p.*"}]
    assert batch.ids == [None, None]
    assert batch.counts == [1, 1]
    with pytest.raises(redis.ConnectionError):
        transport.receive(100, 1.0)
    assert transport.fault(redis.ConnectionError("gone")) is Fault.RECONNECT
    assert transport.fault(ValueError("bug")) is Fault.FATAL
    # And the end of the subscription ends the input
    queue.put(_END)
    assert transport.receive(100, 1.0).ended
