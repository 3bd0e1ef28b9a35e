"""The interface every transport offers the adapter conformance suite.

Public: a third-party adapter implements this protocol to run
:class:`~missive.testing.conformance.AdapterSuite`. Each transport (the in-memory
broker, Redis Pub/Sub, Redis Streams, RabbitMQ, ...) provides a ``Harness`` bound to
one test's own queue/stream/channel (random suffix) and cleans it up afterwards. The
suite is written only against this interface; capability flags decide which tests
apply.

Running the suite on a transport: in its test module, define a ``harness`` fixture
that yields a fresh harness and closes it, then subclass the suite::

    from missive.testing.conformance import AdapterSuite

    @pytest.fixture
    def harness() -> Iterator[MyHarness]:
        h = MyHarness()  # skip here if the broker is not running
        yield h
        h.close()

    class TestMyBrokerConformance(AdapterSuite):
        pass

What the suite relies on (see ``adapter_suite.py``; ``memory.py`` is a complete,
small example; Missive's ``tests/conformance/redis_harness.py`` has two real ones):

* ``adapter()`` returns an adapter tuned for fast tests: the suite waits at most
  30 s for anything, and a nacked message must come back within a few seconds
  (short claim or requeue delays, reconnection within about a second).
* ``publish()`` is called while an adapter runs as well as before; without
  PERSISTENCE the suite publishes only once the adapter is ready (``wait_ready``).
* ``remaining()`` is 0 for a transport that holds nothing (without PERSISTENCE).
* Without REDELIVERY, a nacked message must be dead-lettered with a reason that
  contains the word "redeliver".
* ``kill_connections()`` returns once the server has dropped the connections; the
  adapter must notice, reconnect and go on. Without PERSISTENCE the suite publishes
  probes until one is handled before it counts on delivery again.
* With DELAYED_RETRY, a message retried after a delay under 0.3 s must come back
  within about 3 s (a broker may keep it for a delay level of its own: RabbitMQ's
  shortest is 1 s), and ``remaining()`` counts the messages waiting for a retry.
* PATTERNS is not used by the suite: it is for transport-specific tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import pytest

import missive
from missive.runtime.transport import Capability

#: Capability names used by the suite. The product's are the lower-case names of
#: :class:`missive.runtime.Capability` flags: a harness whose adapter has a transport
#: must declare exactly the flags its transport does (the suite checks it).
REDELIVERY = Capability.REDELIVERY.name.lower()  # a nacked or abandoned message comes back
PERSISTENCE = Capability.PERSISTENCE.name.lower()  # messages published before a consumer kept
CONSUMER_GROUPS = Capability.CONSUMER_GROUPS.name.lower()  # consumers share a queue, no dups
PATTERNS = Capability.PATTERNS.name.lower()  # subscribe by pattern (Redis Pub/Sub psubscribe)
DELAYED_RETRY = Capability.DELAYED_RETRY.name.lower()  # a failed message comes back later
#: The product flags a harness declares by name (the others are the suite's own).
PRODUCT_FLAGS = {
    name: Capability[name.upper()]
    for name in (REDELIVERY, PERSISTENCE, CONSUMER_GROUPS, PATTERNS, DELAYED_RETRY)
}
#: The suite's own flags: what the test setup can do, not the transport.
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


class WithOptions:
    """A harness whose adapters all get ``options`` (unless a test gives its own).

    Runs a suite again with another setting, ``concurrency`` above all::

        @pytest.fixture
        def harness(harness):  # in a test class: wraps the module's harness
            return WithOptions(harness, concurrency=4)
    """

    def __init__(self, harness: Harness, **options: Any) -> None:
        self.harness = harness
        self.options = options
        self.name = f"{harness.name} ({', '.join(f'{k}={v!r}' for k, v in options.items())})"
        self.capabilities = harness.capabilities

    def adapter(
        self, message_cls: type[missive.Message], processor: missive.Processor[Any], **options: Any
    ) -> missive.Adapter[Any]:
        """The wrapped harness's adapter, with this wrapper's options as defaults."""
        return self.harness.adapter(message_cls, processor, **{**self.options, **options})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.harness, name)


def needs(harness: Harness, *capabilities: str) -> None:
    """Skip the calling test unless ``harness`` has every one of ``capabilities``."""
    missing = sorted(set(capabilities) - harness.capabilities)
    if missing:
        pytest.skip(f"{harness.name} lacks {', '.join(missing)}")
