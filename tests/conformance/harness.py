"""The interface every transport offers the adapter conformance suite.

Each transport (the in-memory test client, Redis Pub/Sub, Redis Streams, RabbitMQ,
...) provides a ``Harness`` bound to one test's own queue/stream/channel (random
suffix) and cleans it up afterwards. The suite in ``tests/conformance/`` is written
only against this interface; capability flags decide which tests apply.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import missive

#: Capability names used by the suite.
REDELIVERY = "redelivery"  # a nacked or abandoned message comes back, same id
PERSISTENCE = "persistence"  # messages published before any consumer runs are kept
CONSUMER_GROUPS = "consumer_groups"  # several consumers share one queue without duplicates
PATTERNS = "patterns"  # subscribe by pattern (Redis Pub/Sub psubscribe)
KILL_CONNECTION = "kill_connection"  # the server can drop our connection on demand
EXTERNAL_PUBLISHER = "external_publisher"  # a non-Python publisher is available


class Harness(Protocol):
    """One transport, bound to one test's own destination."""

    name: str
    capabilities: frozenset[str]

    def adapter(
        self, message_cls: type[missive.Message], processor: missive.Processor[Any], **options: Any
    ) -> missive.Adapter[Any]:
        """A new adapter consuming this test's destination (a second call: a second worker)."""

    def publish(self, bodies: Iterable[bytes]) -> None:
        """Publish each body as one message, in order, with the transport's Python client."""

    def publish_external(self, body: bytes) -> None:
        """Publish one message with a non-Python tool (redis-cli, amqp-publish)."""

    def remaining(self) -> int:
        """How many messages are still held by the broker (ready or unacked)."""

    def kill_connections(self) -> None:
        """Make the server drop every client connection of this test's adapters."""

    def close(self) -> None:
        """Delete this test's destination and close the harness's own connections."""
