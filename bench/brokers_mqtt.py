"""MQTT throughput: Missive's MQTTAdapter against raw paho-mqtt and FastStream.

Each run makes a persistent session (MQTT 5, ``clean_start=False``) subscribed at QoS 1
to a fresh topic (``missive-bench/`` and a random suffix), publishes N messages of
about 100 bytes to it at QoS 1 while the session is offline, then one consumer
resumes the session and drains the backlog, doing the same work for each message:
count it and send its PUBACK (no decoding). Every consumer asks for the same window,
``receive_maximum=100``:

* **raw paho**: paho-mqtt 2.x, ``manual_ack=True``, ``client.ack(mid, qos)`` in
  ``on_message``, ``loop_forever()`` on the calling thread;
* **missive**: ``MQTTAdapter(RawMessage, ...)`` with the same client id, a handler
  calling ``ctx.ack()``, stopped by the handler of the last message;
* **faststream**: FastStream's ``MQTTBroker`` (zmqtt), ``clean_session=False`` with the
  same client id, a QoS 1 subscriber taking the ``MQTTMessage`` (acked after it
  returns); zmqtt's default window (it refuses a resumed session's in-flight
  messages beyond a window of 100). Needs ``faststream[mqtt]``; without it the
  table says so and has no row.

Timed from the first message handled to the last, wall and CPU time of this process
(all its threads). The contenders run interleaved (each repetition starts with the
next one); the medians are printed with their ratio to raw (raw's time / the
contender's: 1.0 is as fast as raw). Each session is removed after its run.

The runs use a private ``mosquitto`` on a free loopback port, started with a
temporary config and stopped at the end: the shared broker keeps at most 1,000
queued messages a session (``max_queued_messages``), which would drop most of the
backlog. ``--url`` uses a running broker instead.

    python bench/brokers_mqtt.py [--messages 20000] [--repeat 5] [--url mqtt://host:port]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import importlib
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from _compare import Clock, Result, Runs, interleave, payloads, table
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import missive
from missive.adapters.mqtt import MQTTAdapter

WINDOW = 100  # receive_maximum, for every consumer
EXPIRY = 300  # seconds a bench session outlives its connection, should cleanup not run

# -- The broker and a backlog per run ------------------------------------------------------


@contextlib.contextmanager
def private_mosquitto() -> Iterator[tuple[str, int]]:
    """A mosquitto on a free loopback port, without the per-session queue limit."""
    if shutil.which("mosquitto") is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto), or use --url")
    with tempfile.TemporaryDirectory(prefix="missive-bench-mqtt-") as directory:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = Path(directory) / "mosquitto.conf"
        config.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 0\n"  # unlimited: the whole backlog stays queued
            f"user {getpass.getuser()}\n"  # as root, mosquitto would switch to its own user
            f"log_dest file {directory}/mosquitto.log\n"
        )
        process = subprocess.Popen(["mosquitto", "-c", str(config)])
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("mosquitto did not start") from None
                    time.sleep(0.05)
            yield "127.0.0.1", port
        finally:
            process.terminate()
            process.wait(10)


def _client(client_id: str, manual_ack: bool = False) -> mqtt.Client:
    return mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )


def _session_properties(expiry: int) -> Properties:
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = expiry
    properties.ReceiveMaximum = WINDOW
    return properties


def _session(host: str, port: int, client_id: str, topic: str | None) -> None:
    """Make the session of ``client_id`` subscribed to ``topic``; ``None``: remove it."""
    client = _client(client_id)
    done = threading.Event()
    client.on_subscribe = lambda *args: done.set()
    client.on_connect = lambda *args: None if topic else done.set()
    client.connect(
        host,
        port,
        clean_start=topic is None,
        properties=_session_properties(EXPIRY if topic else 0),
    )
    client.loop_start()
    if topic:
        client.subscribe(topic, qos=1)
    if not done.wait(10):
        raise RuntimeError(f"no answer from the broker for the session {client_id!r}")
    client.disconnect()
    client.loop_stop()


def _publish(host: str, port: int, topic: str, count: int) -> None:
    """Publish ``count`` QoS 1 messages to ``topic``; return once the broker acked all."""
    client = _client(f"missive-bench-publisher-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    acked = threading.Semaphore(0)
    client.on_publish = lambda *args: acked.release()
    client.connect(host, port)
    client.loop_start()
    for body in payloads(count):
        client.publish(topic, body, qos=1)
    for _ in range(count):
        if not acked.acquire(timeout=60):
            raise RuntimeError("the broker did not acknowledge every message")
    client.disconnect()
    client.loop_stop()


Contender = Callable[[str, int, str, str, int], Result]  # (host, port, client_id, topic, count)


def on_fresh_backlog(contender: Contender, host: str, port: int, count: int) -> Result:
    """Run ``contender`` on a new session holding ``count`` messages, then remove it."""
    suffix = uuid.uuid4().hex[:10]
    topic, client_id = f"missive-bench/{suffix}", f"missive-bench-{suffix}"
    _session(host, port, client_id, topic)
    try:
        _publish(host, port, topic, count)
        return contender(host, port, client_id, topic, count)
    finally:
        _session(host, port, client_id, None)


# -- The contenders -----------------------------------------------------------------------


def raw_paho(host: str, port: int, client_id: str, topic: str, count: int) -> Result:
    """Raw paho-mqtt: manual acks, ``client.ack(mid, qos)`` each, ``loop_forever()``."""
    client = _client(client_id, manual_ack=True)
    clock = Clock(count)

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        client.ack(message.mid, message.qos)
        if clock.tick():
            client.disconnect()  # after the PUBACKs queued before it

    client.on_message = on_message
    client.connect(host, port, clean_start=False, properties=_session_properties(EXPIRY))
    client.loop_forever()
    return clock.result()


def missive_adapter(host: str, port: int, client_id: str, topic: str, count: int) -> Result:
    """MQTTAdapter on the same session, stopped by the handler of the last message."""
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    clock = Clock(count)
    adapter = MQTTAdapter(
        missive.RawMessage,
        processor,
        topic,
        url=f"mqtt://{host}:{port}",
        client_id=client_id,
        session_expiry=EXPIRY,
        receive_maximum=WINDOW,
    )

    @processor.handle_for(lambda m: True)
    def handle(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        ctx.ack()
        if clock.tick():
            adapter.stop()

    adapter.run()
    return clock.result()


def faststream(host: str, port: int, client_id: str, topic: str, count: int) -> Result:
    """FastStream's MQTTBroker (zmqtt) resuming the session, a QoS 1 subscriber."""
    from faststream.mqtt import MQTTBroker, MQTTMessage, QoS

    async def main() -> Result:
        broker = MQTTBroker(
            f"mqtt://{host}:{port}",
            client_id=client_id,
            clean_session=False,
            session_expiry_interval=EXPIRY,
            # Not WINDOW: resuming a session, Mosquitto sends the messages it had in
            # flight on top of the window, which zmqtt treats as a protocol error.
            logger=None,
        )
        done = asyncio.Event()
        clock = Clock(count)

        @broker.subscriber(topic, qos=QoS.AT_LEAST_ONCE)
        async def handle(message: MQTTMessage) -> None:
            if clock.tick():
                done.set()

        await broker.start()
        try:
            await asyncio.wait_for(done.wait(), 300)
            return clock.result()
        finally:
            await broker.stop()

    return asyncio.run(main())


def contenders() -> tuple[dict[str, Contender], str | None]:
    """The contenders, and why FastStream is not one of them (``None`` when it is)."""
    found: dict[str, Contender] = {"raw paho": raw_paho, "missive": missive_adapter}
    try:
        importlib.import_module("faststream.mqtt")  # needs zmqtt: faststream[mqtt]
    except ImportError as exc:
        return found, f"FastStream not compared: {exc}".splitlines()[0]
    found["faststream"] = faststream
    return found, None


# -- Running and reporting ----------------------------------------------------------------


def run(host: str, port: int, count: int, repeat: int) -> Runs:
    """(seconds, CPU seconds) per run of each contender, interleaved."""
    runners, _ = contenders()
    return interleave(
        {
            name: (lambda c=c: on_fresh_backlog(c, host, port, count))
            for name, c in runners.items()
        },
        count,
        repeat,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--url", help="a running broker, mqtt://host:port (default: a private one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    title = f"MQTT 5, QoS 1, a queued backlog, receive_maximum {WINDOW}, count and ack"
    with contextlib.ExitStack() as stack:
        if args.url:
            host, _, port = args.url.removeprefix("mqtt://").rpartition(":")
            where = (host, int(port))
        else:
            where = stack.enter_context(private_mosquitto())
        runs = run(*where, args.messages, args.repeat)
    print(table(title, args.messages, runs))
    if (missing := contenders()[1]) is not None:
        print(f"\n{missing}")


if __name__ == "__main__":
    main()
