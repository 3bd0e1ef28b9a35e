"""Helpers for adapter tests: run an adapter in a thread, wait with a bound, record messages
and events.

Public: what :class:`~missive.testing.conformance.AdapterSuite` is built on, for a
third-party adapter's own tests too::

    recorder = Recorder()
    with running(harness.adapter(missive.RawMessage, recorder.processor)):
        harness.publish([b"hello"])
        wait_until(lambda: recorder.count() == 1, "the message is handled")
"""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import missive
from missive.context import HandlingContext, Outcome, ProcessingContext
from missive.errors import MissiveError
from missive.events import Observer
from missive.reason import DeadLetterReason

#: The longest any test waits for anything: a broken adapter fails, it does not hang.
TIMEOUT = 30.0


@contextmanager
def running(adapter: missive.Adapter[Any], timeout: float = TIMEOUT) -> Iterator[None]:
    """Run ``adapter`` in a thread while in the block; stop it and join on the way out.

    Entering waits until the adapter is ready (consuming). Leaving calls ``stop()``,
    joins with ``timeout`` and fails if ``run()`` did not return or raised.
    """
    with running_allowing(adapter, timeout=timeout):
        yield


@contextmanager
def running_allowing(
    adapter: missive.Adapter[Any], *allowed: type[BaseException], timeout: float = TIMEOUT
) -> Iterator[list[BaseException]]:
    """Like :func:`running`, but an error of ``allowed`` types from ``run()`` is collected
    in the list yielded, not raised."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            adapter.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True, name="adapter-under-test")
    thread.start()
    try:
        ready = adapter.wait_ready(timeout)
        assert ready or errors, "the adapter did not start consuming"
        if errors and not isinstance(errors[0], allowed):
            raise errors[0]
        yield errors
    finally:
        adapter.stop()
        thread.join(timeout)
    assert not thread.is_alive(), "run() did not return after stop()"
    for error in errors:
        if not isinstance(error, allowed):
            raise error


def wait_until(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.01)


class Recorder:
    """A processor with one handler that records each message, then acks it.

    ``on_message(message)``, when given, runs first in the handler (to slow it down,
    block it, or stop the adapter). Thread-safe.
    """

    def __init__(self, on_message: Callable[[missive.Message], None] | None = None) -> None:
        self.processor: missive.Processor[Any] = missive.Processor()
        self.messages: list[missive.Message] = []
        self._lock = threading.Lock()
        self._on_message = on_message

        @self.processor.handle_for(lambda m: True)
        def record(message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
            if self._on_message is not None:
                self._on_message(message)
            with self._lock:
                self.messages.append(message)
            ctx.ack()

    @property
    def bodies(self) -> list[bytes]:
        """The bodies handled so far, in order."""
        with self._lock:
            return [m.raw_data for m in self.messages]

    def count(self) -> int:
        """How many messages were handled so far."""
        with self._lock:
            return len(self.messages)


def memory_growth(harness: Any, warm_up: int = 1000, measured: int = 5000) -> int:
    """Bytes of Python memory that handling ``measured`` more messages left allocated.

    Publishes ``warm_up + measured`` 200-byte messages to ``harness`` (a conformance
    ``Harness``) while one of its adapters runs a handler that keeps nothing, and
    compares what tracemalloc counts after the warm-up and after the rest.
    """
    total = warm_up + measured
    handled = [0]
    processor: missive.Processor[Any] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def count(message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
        handled[0] += 1
        ctx.ack()

    tracemalloc.start()
    try:
        with running(harness.adapter(missive.RawMessage, processor)):
            harness.publish([b"x" * 200 for _ in range(warm_up)])
            wait_until(lambda: handled[0] >= warm_up, "the warm-up messages are handled")
            before, _ = tracemalloc.get_traced_memory()
            harness.publish([b"x" * 200 for _ in range(measured)])
            wait_until(lambda: handled[0] >= total, "every message is handled", 120)
            after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


class RecordingObserver(Observer):
    """Records every event, in order, as ``(event, message id or None, arguments)``.

    Thread-safe: the adapter's threads record while a test reads. Add it with
    ``adapter.add_observer(RecordingObserver())``; events that concern no message
    (``worker_started``, ``connection_lost``, ``handed_back``, ...) have ``None`` as
    their message id.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[tuple[str, bytes | None, tuple[Any, ...]]] = []

    @property
    def calls(self) -> list[tuple[str, bytes | None, tuple[Any, ...]]]:
        """Every event so far: ``(event, message id or None, arguments)``."""
        with self._lock:
            return list(self._calls)

    def events(self, message_id: bytes | None = None) -> list[str]:
        """The events' names in order: all of them, or those of one message."""
        return [e for e, i, _ in self.calls if message_id is None or i == message_id]

    def arguments(self, event: str) -> list[tuple[Any, ...]]:
        """The arguments of each call of ``event``, in order."""
        return [args for e, _, args in self.calls if e == event]

    def message_ids(self) -> list[bytes]:
        """The id of each message received, in order (a redelivered one again)."""
        return [i for e, i, _ in self.calls if e == "message_received" and i is not None]

    def _record(self, event: str, message_id: bytes | None, *args: Any) -> None:
        with self._lock:
            self._calls.append((event, message_id, args))

    def worker_started(self, adapter: Any) -> None:
        self._record("worker_started", None, adapter)

    def worker_stopping(self, adapter: Any) -> None:
        self._record("worker_stopping", None, adapter)

    def connection_lost(self, where: str, error: BaseException, retry_in: float) -> None:
        self._record("connection_lost", None, where, error, retry_in)

    def connection_restored(self, where: str) -> None:
        self._record("connection_restored", None, where)

    def message_received(self, message: missive.Message, delivery_count: int | None) -> None:
        self._record("message_received", message.message_id, message, delivery_count)

    def handling_started(self, pctx: ProcessingContext[Any], hctx: HandlingContext[Any]) -> None:
        self._record("handling_started", hctx.message.message_id, pctx, hctx)

    def handling_finished(
        self,
        pctx: ProcessingContext[Any],
        hctx: HandlingContext[Any],
        outcome: Outcome | None,
        duration: float,
    ) -> None:
        self._record("handling_finished", hctx.message.message_id, pctx, hctx, outcome, duration)

    def acked(self, message: missive.Message) -> None:
        self._record("acked", message.message_id, message)

    def requeued(self, message: missive.Message, delay: float) -> None:
        self._record("requeued", message.message_id, message, delay)

    def retried(self, message: missive.Message, delay: float) -> None:
        self._record("retried", message.message_id, message, delay)

    def dead_lettered(self, message: missive.Message, reason: DeadLetterReason) -> None:
        self._record("dead_lettered", message.message_id, message, reason)

    def dlq_write_failed(
        self, message: missive.Message, reason: DeadLetterReason, error: BaseException | None
    ) -> None:
        self._record("dlq_write_failed", message.message_id, message, reason, error)

    def lost(self, message: missive.Message, error: MissiveError) -> None:
        self._record("lost", message.message_id, message, error)

    def handed_back(self, count: int) -> None:
        self._record("handed_back", None, count)
