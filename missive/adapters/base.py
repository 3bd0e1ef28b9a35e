"""Adapter: the abstract base of every transport, and the contract each one keeps."""

from __future__ import annotations

import abc
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Hashable, Iterator
from types import FrameType
from typing import Generic

from missive._typing import M
from missive.context import ProcessingContext
from missive.events import Observer, Observers
from missive.processor import Processor
from missive.runtime.loop import DeliveryLoop
from missive.runtime.policy import forget_attempts, record_attempt
from missive.runtime.signals import stop_on_signals
from missive.runtime.transport import Transport

__all__ = ["Adapter"]

logger = logging.getLogger("missive.adapters")


class Adapter(abc.ABC, Generic[M]):
    """Runs a :class:`~missive.Processor` on a transport. Subclass it for a new transport.

    A new adapter implements :meth:`transport`, returning a
    :class:`~missive.runtime.Transport` (the broker's primitives): the inherited
    :meth:`run` drives it with the one delivery loop, which keeps the contract
    below. An adapter may instead override :meth:`run` and keep the contract itself.

    The contract every adapter keeps:

    * **Messages.** Each message received becomes one ``message_cls(raw_data,
      message_id, attributes)``; ``message_id`` is the transport's own id where it has
      one, so that a redelivered message keeps its id, and ``attributes`` hold what
      the transport says about the message (queue, channel, headers, delivery count).
    * **Processing hooks.** :meth:`run` enters ``processor.context()`` once: the
      ``before_processing`` hooks run before the first message is taken, and the
      ``after_processing`` hooks once the last one is settled, even on error.
    * **Ack.** :meth:`~missive.context.ProcessingContext.process` returns ``ACKED`` or
      ``DEAD_LETTERED``: the adapter then acknowledges the message on its transport,
      which will not deliver it again. A message is acked only after that: never
      before its handler has finished or it is stored in the DLQ.
    * **Nack.** ``NACKED``: the adapter hands the message back to the transport to be
      delivered again. A transport that cannot redeliver dead-letters it instead
      (``processing_ctx.dead_letter(message, reason)``); it never drops it silently.
      A request/response transport hands a message back by answering with a status
      that tells its sender to retry (HTTP 503 with ``Retry-After``).
    * **Errors.** If ``process`` raises (:class:`~missive.HandlingError` with no DLQ set,
      :class:`~missive.DLQWriteError` when the DLQ failed), the message is not acked.
      An adapter whose transport redelivers leaves it to be redelivered and logs the
      error (its text is safe to log: it holds the reason's summary, never exception
      text). One that cannot redeliver stops and lets the error propagate from
      :meth:`run` when stopping keeps the rest safe (stdin: the remaining input stays
      unread); where stopping would lose more (Redis Pub/Sub drops what nobody is
      subscribed to), it logs the error at ERROR, with the message id, and goes on.
    * **Shutdown.** :meth:`stop` may be called from any thread or a signal handler;
      :meth:`run` in the main thread also stops on SIGINT and SIGTERM. The adapter
      then takes no new message, finishes the message in hand, hands back the ones it
      received but did not start (one that cannot, stdin on a pipe, handles them
      first), runs the ``after_processing`` hooks, closes its connections and
      returns from :meth:`run`. Python cannot interrupt a handler
      safely, so a stop always waits for the handler in progress to return.
    * **Concurrency.** With ``concurrency`` N above 1, up to N messages are handled at
      once: synchronous handlers on N threads, ``async def`` ones as tasks on one event
      loop (with N threads for the synchronous hooks, handlers and DLQ writes). Every
      row is still settled by the loop's thread, a cumulative ack only ever covering
      settled rows. Messages with equal ``ordering_key(message)`` are handled one at a
      time, in delivery order. On a stop, what no worker started is handed back, and
      the messages in flight get ``graceful_timeout`` seconds to finish; any still
      running then are left unacked (the broker delivers them again) and named in a
      WARNING. A transport that cannot redeliver waits for them however long.

    :param message_cls: the :class:`~missive.Message` class to build messages with.
    :param processor: the processor whose handlers receive the messages.
    :param concurrency: how many messages are handled at once (1: one after the other,
        on the thread that calls :meth:`run`; handlers need not be thread-safe).
    :param ordering_key: ``message -> hashable``: messages with equal keys are handled
        one at a time, in delivery order (only matters above ``concurrency=1``).
    :param graceful_timeout: on a stop, how long the messages in flight get to finish.
    :raises ValueError: if ``concurrency`` is below 1 or ``graceful_timeout`` negative.
    """

    #: Whether several processes may run this adapter on the same input, the
    #: transport sharing the messages between them (``missive run --workers N``).
    #: ``False`` where each process would read its own share of one stream (stdin).
    shareable: bool = True
    #: Deliveries after which a message is dead-lettered unhandled; ``None``: no limit.
    max_deliveries: int | None = None
    #: Seconds before a message that could be neither handled nor stored comes back
    #: (the base of a nacked message's growing delay, where the transport delays).
    retry_delay: float = 0.0
    #: The longest wait, in seconds, between reconnections.
    max_reconnect_delay: float = 30.0
    #: The most messages one receive takes.
    batch_size: int = 100
    #: How long one receive waits, in seconds, when nothing comes.
    poll_timeout: float = 0.5
    #: The shortest time, in seconds, between two questions to the broker about the
    #: backlog (the observers' ``backlog`` event); asked only while observers exist.
    backlog_interval: float = 5.0

    def __init__(
        self,
        message_cls: type[M],
        processor: Processor[M],
        *,
        concurrency: int = 1,
        ordering_key: Callable[[M], Hashable] | None = None,
        graceful_timeout: float = 30.0,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be a whole number from 1 up, not {concurrency!r}")
        if ordering_key is not None and not callable(ordering_key):
            raise TypeError(
                f"ordering_key must be callable (message -> hashable), not {ordering_key!r}"
            )
        if not graceful_timeout >= 0:
            raise ValueError(f"graceful_timeout must be 0 s or more, not {graceful_timeout!r}")
        self.message_cls = message_cls
        self.processor = processor
        #: How many messages are handled at once.
        self.concurrency = concurrency
        #: Messages with equal keys are handled one at a time, in delivery order.
        self.ordering_key = ordering_key
        #: On a stop, the seconds the messages in flight get to finish.
        self.graceful_timeout = graceful_timeout
        self._stop_requested = threading.Event()
        self._ready = threading.Event()
        self._delivery: DeliveryLoop[M] | None = None

    def transport(self) -> Transport:
        """A new transport for :meth:`run` to drive: what a new adapter implements."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement transport() (or override run())"
        )

    def run(self) -> None:
        """Receive and process messages until the input ends or :meth:`stop` is called."""
        loop = DeliveryLoop(self, self.transport())
        self._delivery = loop
        try:
            loop.run()
        finally:
            self._delivery = None

    def stop(self) -> None:
        """Ask :meth:`run` to finish the message in hand and return. Thread-safe."""
        self._stop_requested.set()
        loop = self._delivery
        if loop is not None:
            loop.wake()

    @property
    def running_transport(self) -> Transport | None:
        """The transport :meth:`run` drives now (from before ``worker_started`` until
        :meth:`run` returns), ``None`` otherwise or for an adapter pushed to (WSGI).
        Observers read its ``system`` and ``source()`` for their labels."""
        loop = self._delivery
        return None if loop is None else loop.transport

    @property
    def observers(self) -> Observers:
        """Who sees this adapter's events: its processor's observers."""
        return self.processor.observers

    def add_observer(self, observer: Observer) -> Observer:
        """Register ``observer`` on the processor, to see every event; returns it."""
        return self.processor.add_observer(observer)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until :meth:`run` is consuming (subscribed, connected); ``False`` on timeout."""
        return self._ready.wait(timeout)

    def _set_ready(self) -> None:
        """Subclasses call this once they receive messages (after subscribing, say)."""
        self._ready.set()

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`stop` was called (or a stop signal received)."""
        return self._stop_requested.is_set()

    @property
    def stop_event(self) -> threading.Event:
        """Set once a stop is requested: adapters wait on it (between reconnections, say)."""
        return self._stop_requested

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        logger.info("%s received: stopping after the message in hand", signal.Signals(signum).name)
        self.stop()

    def count_delivery(
        self, context: ProcessingContext[M], message: M, key: bytes | None = None
    ) -> int | None:
        """Count a redelivery in the DLQ, for transports that say "redelivered" but not how often.

        A message that kills its worker (``os._exit``, a segfault, the OOM killer)
        never reaches an ``except``, so nothing else would notice it coming back.
        Call this before handling a redelivered message: it records the attempt
        durably in the processor's DLQ and returns how many times the message has
        been delivered (the first delivery, uncounted, plus each redelivery), or
        ``None`` when the DLQ cannot count (a plain mapping, or none). Once the
        message is settled, call :meth:`forget_deliveries`. ``key`` counts under
        another key than ``message.message_id``: one derived from the content, for a
        transport that gives a redelivery no stable id.
        """
        return record_attempt(context.processor.dlq, message.message_id if key is None else key)

    def forget_deliveries(
        self, context: ProcessingContext[M], message: M, key: bytes | None = None
    ) -> None:
        """Drop what :meth:`count_delivery` counted (under ``key``) for a message now settled."""
        forget_attempts(context.processor.dlq, message.message_id if key is None else key)

    @contextlib.contextmanager
    def stop_on_signals(self) -> Iterator[None]:
        """While in this block, SIGINT and SIGTERM call :meth:`stop` (main thread only).

        The previous handlers are restored when the block ends. In other threads,
        where Python cannot set signal handlers, this does nothing.
        """
        with stop_on_signals(lambda signum: self._on_stop_signal(signum, None)):
            yield
