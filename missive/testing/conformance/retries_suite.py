"""The delayed-retry tests of the adapter suite, for transports with DELAYED_RETRY.

Public, and part of :class:`~missive.testing.conformance.AdapterSuite` (which inherits
:class:`DelayedRetrySuite`): a harness that declares :data:`DELAYED_RETRY` runs them,
the others skip them. Delays are kept under 0.3 s; a broker may hold a message longer
(a delay level of its own), so the waits allow a few seconds.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import missive
from missive.attempts import HISTORY, RETRIES
from missive.events import Observer
from missive.testing.conformance.harness import DELAYED_RETRY, Harness, needs
from missive.testing.conformance.support import running, wait_until

__all__ = ["DelayedRetrySuite"]

DLQ = dict[bytes, tuple[missive.Message, str]]
#: The longest delay the suite's policies draw, in seconds.
MAX_DELAY = 0.2
#: How much sooner than the delay chosen a retried message may come back (clocks).
SLACK = 0.05


class Retried(Observer):
    """Records the delays chosen for delayed retries."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def retried(self, message: missive.Message, delay: float) -> None:
        self.delays.append(delay)


class FailsFirst:
    """A handler that raises on the first ``failures`` deliveries of each message, then
    acks; it records each delivery with the time it started."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.__qualname__ = "FailsFirst"  # the handler's name in reasons
        self.lock = threading.Lock()
        self.seen: list[tuple[float, missive.Message]] = []
        self.acked: list[missive.Message] = []

    def __call__(self, message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
        with self.lock:
            self.seen.append((time.monotonic(), message))
            failed = len(self.seen) <= self.failures
        if failed:
            raise ConnectionError("the database is down")
        with self.lock:
            self.acked.append(message)
        ctx.ack()


def short(delayed: int) -> missive.Retry:
    """A policy of ``delayed`` retries, each after at most :data:`MAX_DELAY` seconds."""
    return missive.Retry(delayed=delayed, initial_delay=MAX_DELAY / 2, max_delay=MAX_DELAY)


def processor_for(
    handler: FailsFirst, retry: missive.Retry
) -> tuple[missive.Processor[missive.RawMessage], DLQ, Retried]:
    """A processor with ``handler`` for every message under ``retry``, a dict DLQ and
    an observer of the retries."""
    processor: missive.Processor[missive.RawMessage] = missive.Processor(retry=retry)
    processor.handle_for(lambda m: True)(handler)
    dlq: DLQ = {}
    processor.set_dlq(dlq)
    observer = Retried()
    processor.add_observer(observer)
    return processor, dlq, observer


class DelayedRetrySuite:
    """Delayed retries: a failed message comes back later, as itself, with its history."""

    def test_a_failed_message_comes_back_after_its_delay_with_its_history(
        self, harness: Harness
    ) -> None:
        needs(harness, DELAYED_RETRY)
        # Given a handler that fails once, under a policy of one short delayed retry
        handler = FailsFirst(failures=1)
        processor, dlq, observer = processor_for(handler, short(1))
        with running(harness.adapter(missive.RawMessage, processor)):
            # When a message is consumed
            harness.publish([b"retry me"])
            wait_until(lambda: handler.acked, "the message is handled on its retry")
            # Then, once handled, the broker holds nothing of it
            wait_until(lambda: harness.remaining() == 0, "the broker holds nothing")
        assert dlq == {}
        [(failed_at, first), (again_at, second)] = handler.seen
        [delay] = observer.delays
        # it came back after the delay, the same message: id and bytes
        assert 0 <= delay <= MAX_DELAY
        assert again_at - failed_at >= delay - SLACK
        assert (second.message_id, second.raw_data) == (first.message_id, b"retry me")
        # carrying its attempt state: one retry done, one failed attempt in its history
        assert RETRIES not in first.attributes
        assert second.attributes[RETRIES] == 1
        [entry] = second.attributes[HISTORY]
        assert entry["reason"] == "handler 'FailsFirst' raised ConnectionError"
        assert entry["delay"] == delay

    def test_a_message_whose_retries_are_exhausted_is_dead_lettered_with_its_history(
        self, harness: Harness
    ) -> None:
        needs(harness, DELAYED_RETRY)
        # Given a handler that always fails, under a policy of two short delayed retries
        handler = FailsFirst(failures=1_000)
        processor, dlq, observer = processor_for(handler, short(2))
        with running(harness.adapter(missive.RawMessage, processor)):
            # When a message is consumed
            harness.publish([b"always fails"])
            wait_until(lambda: dlq, "the message is dead-lettered")
            # Then it is acked once dead-lettered
            wait_until(lambda: harness.remaining() == 0, "the broker holds nothing")
        # after three deliveries of the same message, two of them retries
        assert len(handler.seen) == 3
        assert {m.message_id for _, m in handler.seen} == {handler.seen[0][1].message_id}
        assert len(observer.delays) == 2
        # and its dead letter holds the history of the three attempts
        [(message, reason)] = dlq.values()
        assert message.raw_data == b"always fails"
        assert message.message_id == handler.seen[0][1].message_id
        assert message.attributes[RETRIES] == 2
        history = message.attributes[HISTORY]
        assert [entry["delay"] for entry in history] == [*observer.delays, None]
        assert "attempts (3):" in reason
