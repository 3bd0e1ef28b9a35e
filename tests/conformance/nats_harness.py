"""The conformance harnesses for NATS JetStream and core NATS, on 127.0.0.1:4222.

Each harness owns one subject (and, for JetStream, one stream and durable consumer)
with a random suffix, deleted in ``close``. Its adapters connect through a small TCP
proxy of its own, so that ``kill_connections`` can drop exactly their connections
(nats-server 2.9 has no call to kick a client). Options tuned for fast tests: nacks
come back after 50 ms, abandoned ones after ``ack_wait`` (2 s), reconnections within
half a second.

The non-Python publisher is the official Node.js client (``tests/node``, installed by
``npm ci --prefix tests/node``, which CI runs): the ``nats`` CLI is neither in Debian
nor installable from the registries this machine reaches.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest
from nats.js import api

import missive
from missive._aio import LoopThread
from missive.adapters._nats_common import round_trip
from missive.adapters.nats import NATSAdapter, NATSJetStreamAdapter
from missive.testing.conformance.harness import (
    CONSUMER_GROUPS,
    EXTERNAL_PUBLISHER,
    KILL_CONNECTION,
    PATTERNS,
    PERSISTENCE,
    REDELIVERY,
)

URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
HOST, PORT = "127.0.0.1", 4222
#: The ack_wait of the consumers the JetStream harness's adapters create, in seconds.
ACK_WAIT = 2.0
NODE_PUBLISHER = Path(__file__).parent.parent / "node" / "nats_publish.mjs"


def node_publish(subject: str, body: bytes, jetstream: bool) -> None:
    """Publish ``body`` on ``subject`` with the Node.js client (``tests/node``)."""
    modules = NODE_PUBLISHER.parent / "node_modules" / "nats"
    if shutil.which("node") is None or not modules.is_dir():
        problem = (
            "the Node.js NATS publisher is not installed: apt-get install nodejs npm, "
            "then npm ci --prefix tests/node"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    mode = ["--jetstream"] if jetstream else []
    subprocess.run(
        ["node", str(NODE_PUBLISHER), URL, subject, *mode],
        input=body,
        check=True,
        timeout=30,
        capture_output=True,
    )


class Proxy:
    """A TCP proxy to ``host:port`` on a free loopback port; :meth:`kill` drops every
    connection through it (new ones are still accepted)."""

    def __init__(self, host: str = HOST, port: int = PORT) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"nats://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="nats-proxy").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    @property
    def connections(self) -> int:
        """How many connections go through the proxy now."""
        with self._lock:
            return sum(1 for s in self._sockets if s.fileno() != -1) // 2

    def kill(self) -> None:
        """Drop every connection through the proxy, as a server closing them would."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        assert sockets, "no connection to kill"
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()
        with contextlib.suppress(AssertionError):
            self.kill()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Client:
    """A nats-py connection on a loop thread, for the tests' own publishing and checks."""

    def __init__(self, url: str = URL) -> None:
        self.thread = LoopThread("nats-test-client")
        self.nc: Any = self.thread.run(nats.connect(url))
        self.js = self.nc.jetstream()
        self.jsm = self.nc.jsm()

    def run(self, coroutine: Any) -> Any:
        return self.thread.run(coroutine)

    def publish(self, subject: str, bodies: Iterable[bytes]) -> int:
        """Publish each body on ``subject`` (core publish: in order), flush; how many."""

        async def publish() -> int:
            n = 0
            for body in bodies:
                await self.nc.publish(subject, body)
                n += 1
            await round_trip(self.nc)  # the server has them all
            return n

        result: int = self.run(publish())
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self.nc.close())
        self.thread.close()


class _NATSHarness:
    def __init__(self) -> None:
        self.suffix = uuid.uuid4().hex[:12]
        self.subject = f"missive.test.{self.suffix}"
        self.client = Client()
        self.proxy = Proxy()

    def kill_connections(self) -> None:
        self.proxy.kill()

    def _close(self) -> None:
        self.proxy.close()
        self.client.close()


class NATSCoreHarness(_NATSHarness):
    """Core NATS on the subject ``missive.test.<suffix>``, in a queue group: nothing persists."""

    name = "nats-core"
    capabilities = frozenset({CONSUMER_GROUPS, PATTERNS, KILL_CONNECTION, EXTERNAL_PUBLISHER})

    def __init__(self) -> None:
        super().__init__()
        self.queue = f"group-{self.suffix}"

    def adapter(
        self, message_cls: type[missive.Message], processor: missive.Processor[Any], **options: Any
    ) -> NATSAdapter[Any]:
        options.setdefault("url", self.proxy.url)
        options.setdefault("queue", self.queue)
        options.setdefault("max_reconnect_delay", 0.5)
        subjects = options.pop("subjects", self.subject)
        return NATSAdapter(message_cls, processor, subjects, **options)

    def publish(self, bodies: Iterable[bytes]) -> None:
        self.client.publish(self.subject, bodies)

    def publish_external(self, body: bytes) -> None:
        node_publish(self.subject, body, jetstream=False)

    def remaining(self) -> int:
        return 0  # core NATS holds nothing

    def close(self) -> None:
        self._close()


class NATSJetStreamHarness(_NATSHarness):
    """A work-queue stream ``missive-test-<suffix>`` on ``missive.test.<suffix>.>``, read
    by the durable consumer ``durable-<suffix>``: an acked message leaves the stream."""

    name = "nats-jetstream"
    capabilities = frozenset(
        {REDELIVERY, PERSISTENCE, CONSUMER_GROUPS, PATTERNS, KILL_CONNECTION, EXTERNAL_PUBLISHER}
    )

    def __init__(self, retention: api.RetentionPolicy = api.RetentionPolicy.WORK_QUEUE) -> None:
        super().__init__()
        self.stream = f"missive-test-{self.suffix}"
        self.durable = f"durable-{self.suffix}"
        self.subject = f"missive.test.{self.suffix}.in"
        self.published = 0
        self.client.run(
            self.client.jsm.add_stream(
                name=self.stream,
                subjects=[f"missive.test.{self.suffix}.>"],
                retention=retention,
                storage=api.StorageType.MEMORY,
            )
        )

    def adapter(
        self, message_cls: type[missive.Message], processor: missive.Processor[Any], **options: Any
    ) -> NATSJetStreamAdapter[Any]:
        options.setdefault("url", self.proxy.url)
        options.setdefault("durable", self.durable)
        options.setdefault("retry_delay", 0.05)
        options.setdefault("max_reconnect_delay", 0.5)
        # An abandoned message (its connection lost mid-handling) comes back after this.
        options.setdefault("ack_wait", ACK_WAIT)
        return NATSJetStreamAdapter(message_cls, processor, self.stream, **options)

    def publish(self, bodies: Iterable[bytes], subject: str | None = None) -> None:
        """Publish in order (core publishes on one connection), then wait until the
        stream stored them all."""
        self.published += self.client.publish(subject or self.subject, bodies)
        for _ in range(3000):
            if self.info().state.last_seq >= self.published:
                return
            time.sleep(0.01)
        raise AssertionError("the stream did not store every message published")

    def publish_external(self, body: bytes) -> None:
        node_publish(self.subject, body, jetstream=True)
        self.published += 1

    def publish_one(
        self, body: bytes, headers: dict[str, str] | None = None, subject: str | None = None
    ) -> Any:
        """Publish one message with JetStream's publish (acknowledged), with headers."""
        ack = self.client.run(
            self.client.js.publish(subject or self.subject, body, headers=headers)
        )
        self.published += 1
        return ack

    def info(self) -> Any:
        return self.client.run(self.client.jsm.stream_info(self.stream))

    def consumer(self, durable: str | None = None) -> Any:
        """The consumer's info (``num_ack_pending``, ``num_pending``, its config)."""
        return self.client.run(self.client.jsm.consumer_info(self.stream, durable or self.durable))

    def has_consumer(self, durable: str | None = None) -> bool:
        """Whether the durable consumer exists."""
        try:
            self.consumer(durable)
        except nats.js.errors.NotFoundError:
            return False
        return True

    def remaining(self) -> int:
        """Messages still in the stream: a work queue deletes each once acked."""
        return int(self.info().state.messages)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.run(self.client.jsm.delete_stream(self.stream))
        self._close()
