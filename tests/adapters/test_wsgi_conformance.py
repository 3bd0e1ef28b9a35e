"""The adapter conformance suite on the WSGI adapter, with a retrying webhook sender.

Over HTTP the sender is half of the transport: what it does with a 503 or a refused
connection decides redelivery and persistence. This harness plays a well-behaved
webhook sender (as GitHub or Stripe are): it keeps every published body in order
until the adapter answers 2xx, retries on 5xx and on connection errors, and sends
the same ``X-Message-Id`` each time. So the adapter is tested for what it promises
such a sender: nothing is answered 2xx unless handled or stored, a nack is retried
with its id, and a stopped adapter loses nothing. Each adapter serves with its
development server (:meth:`WSGIAdapter.run`) on its own 127.0.0.1 port.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

import missive
from missive.adapters.wsgi import WSGIAdapter
from missive.testing.conformance.adapter_suite import AdapterSuite
from missive.testing.conformance.events_suite import EventsSuite
from missive.testing.conformance.harness import EXTERNAL_PUBLISHER, PERSISTENCE, REDELIVERY

ID_HEADER = "X-Message-Id"


class LoopbackWSGIAdapter(WSGIAdapter[Any]):
    """The WSGI adapter whose ``run()`` serves on a free 127.0.0.1 port."""

    def run(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().run(host, port)


class WSGIHarness:
    """A retrying webhook sender in front of the adapters this test created."""

    name = "wsgi"
    capabilities = frozenset({REDELIVERY, PERSISTENCE, EXTERNAL_PUBLISHER})

    def __init__(self) -> None:
        self._adapters: list[LoopbackWSGIAdapter] = []
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._ids = itertools.count(1)
        #: Bodies the adapter refused with 4xx (a sender does not retry those).
        self.refused: list[tuple[int, bytes]] = []
        self._sender = threading.Thread(target=self._send_loop, daemon=True, name="sender")
        self._sender.start()

    def adapter(
        self, message_cls: type[missive.Message], processor: missive.Processor[Any], **options: Any
    ) -> missive.Adapter[Any]:
        adapter = LoopbackWSGIAdapter(
            message_cls, processor, message_id_header=ID_HEADER, **options
        )
        self._adapters.append(adapter)
        return adapter

    def _address(self) -> tuple[str, int] | None:
        for adapter in reversed(self._adapters):
            if adapter.wait_ready(0) and not adapter.stop_requested:
                return adapter.server_address
        return None

    def publish(self, bodies: Iterable[bytes]) -> None:
        with self._cond:
            for body in bodies:
                self._queue.append((b"sender-%d" % next(self._ids), body))
            self._cond.notify_all()

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                message_id, body = self._queue[0]
            status = self._post(message_id, body)
            if status is None or status >= 500:
                time.sleep(0.02)  # retry the same message, as a webhook sender does
                continue
            with self._cond:
                self._queue.popleft()
                if status >= 300:
                    self.refused.append((status, body))

    def _post(self, message_id: bytes, body: bytes) -> int | None:
        address = self._address()
        if address is None:
            return None
        connection = http.client.HTTPConnection(*address, timeout=10)
        try:
            connection.request("POST", "/", body=body, headers={ID_HEADER: message_id.decode()})
            response = connection.getresponse()
            response.read()
            return response.status
        except OSError:
            return None
        finally:
            connection.close()

    def publish_external(self, body: bytes) -> None:
        address = self._address()
        assert address is not None, "publish_external needs a running adapter"
        subprocess.run(
            [
                *("curl", "-sS", "--fail", "--noproxy", "*", "--data-binary", "@-"),
                f"http://{address[0]}:{address[1]}/",
            ],
            input=body,
            check=True,
            capture_output=True,
            timeout=30,
        )

    def remaining(self) -> int:
        with self._cond:
            return len(self._queue)

    def kill_connections(self) -> None:
        raise NotImplementedError("HTTP has no lasting connection to kill")

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._sender.join(10)
        for adapter in self._adapters:
            adapter.stop()
            with contextlib.suppress(Exception):
                adapter.close()


@pytest.fixture
def harness() -> Iterator[WSGIHarness]:
    h = WSGIHarness()
    yield h
    h.close()
    assert h.refused == [], "the adapter refused messages the suite expects it to take"


class TestWSGIConformance(AdapterSuite, EventsSuite):
    """Every test of the suite, through HTTP with a retrying sender."""
