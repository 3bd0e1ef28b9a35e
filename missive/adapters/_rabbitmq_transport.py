"""The RabbitMQ transport: one pika connection and channel, consumers that fill a Batch.

:class:`~missive.adapters.rabbitmq.RabbitMQAdapter` returns one from ``transport()``; the
delivery loop drives it. Only imported once :mod:`missive.adapters.rabbitmq` found pika.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

from missive.adapters._rabbitmq_acks import Acks
from missive.adapters._rabbitmq_causes import consume_refused, describe, login_refused
from missive.adapters._rabbitmq_delays import Delays
from missive.adapters._rabbitmq_rows import content_key, row_maker
from missive.attempts import RETRIES
from missive.message import Message
from missive.runtime.transport import Batch, Capability, Fault, Transport

# How long a flush waits for the delayed retries' copies to be committed, in seconds.
_FLUSH_WAIT = 5.0

__all__: list[str] = []

logger = logging.getLogger("missive.adapters.rabbitmq")

# Connection errors that a new connection cannot fix: the configuration must change.
_FATAL_CONNECTION_ERRORS = (
    pika.exceptions.AuthenticationError,
    pika.exceptions.ProbableAuthenticationError,
    pika.exceptions.ProbableAccessDeniedError,
)
# Channel close codes that a new connection cannot fix: 403 access refused, 404 no queue.
_FATAL_CHANNEL_CODES = frozenset({403, 404})
_CLOSED_CHANNEL = pika.exceptions.ChannelClosedByBroker


class _ConsumerCancelledError(Exception):
    """The broker cancelled one of our consumers (queue deleted, leader moved): reconnect."""


class _RabbitMQTransport(Transport):
    """One connection and one channel; a consumer per queue whose callback fills a Batch."""

    capabilities: ClassVar[Capability] = (
        Capability.REDELIVERY | Capability.COUNT_IN_DLQ | Capability.DELAYED_REQUEUE
        | Capability.DELAYED_RETRY | Capability.HAND_BACK | Capability.ORDERED
        | Capability.PERSISTENCE | Capability.CONSUMER_GROUPS
    )
    system: ClassVar[str] = "rabbitmq"
    broker_name: ClassVar[str] = "RabbitMQ"
    loss_note: ClassVar[str] = "; unacked messages go back to their queue"
    first_reconnect_delay: ClassVar[float] = 0.5
    #: Declares the queues on each new channel, before consuming (``declare=True``).
    declare: Callable[[BlockingChannel], None] | None = None

    def __init__(
        self,
        parameters: pika.URLParameters,
        queues: Sequence[str],
        prefetch: int,
        longest_delay: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._parameters = parameters
        self._queues = tuple(queues)
        self._prefetch = prefetch
        self.ack_limit = max(1, prefetch // 2)
        self._batch = Batch()
        self._lock = threading.Lock()  # guards _connection, which wake() reads
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._acks: Acks | None = None
        self._consumers: list[str] = []
        # The delay queues, declared when ``longest_delay()`` says a policy retries
        # later, and the thread that publishes the retries' copies to them.
        self._delays = Delays(self._queues, longest_delay, parameters)
        self._woken = False  # a stop woke us: never wait again

    def connect(self) -> None:
        try:
            connection = pika.BlockingConnection(self._parameters)
        except ValueError as exc:
            # pika raises ValueError ("Expected connected socket, but getpeername()
            # failed") when the socket is reset while it connects: a lost connection.
            raise pika.exceptions.AMQPConnectionError("connection reset while connecting") from exc
        except OSError as exc:  # a host name that does not resolve (yet): retried
            raise pika.exceptions.AMQPConnectionError(exc) from exc
        with self._lock:
            self._connection = connection
        self._channel = channel = connection.channel()
        channel.basic_qos(prefetch_count=self._prefetch)
        channel.add_on_cancel_callback(_on_cancelled_by_broker)
        if self.declare is not None:
            self.declare(channel)
        self._acks = Acks(channel)
        self._delays.open(functools.partial(_wake_threadsafe, connection))
        batch, delays = self._batch, self._delays
        self._consumers = [
            channel.basic_consume(queue, row_maker(batch, queue, delays)) for queue in self._queues
        ]
        queues = ", ".join(self._queues)
        logger.info("consuming %s on %s (prefetch %d)", queues, self.where(), self._prefetch)

    def receive(self, max_messages: int, timeout: float) -> Batch:
        # ``max_messages`` is moot: the prefetch bounds what pika holds.
        batch = self._batch
        batch.clear()
        assert self._connection is not None, "receive() before connect()"
        if self._delays.on:
            self._settle_committed()
        events = self._connection.process_data_events
        events(time_limit=0)
        if not batch.bodies and not self._woken:  # that call may have run a wake-up
            events(time_limit=timeout)
        return batch

    def ack(self, handles: list[Any]) -> None:
        assert self._acks is not None
        self._acks.send(handles)  # holds those behind a retry whose copy is not committed
        if self._delays.on:
            self._delays.settled_through(handles[-1])

    def ack_out_of_order(self, handles: list[Any]) -> bool:
        assert self._acks is not None
        self._acks.send_each(handles)
        if self._delays.on:
            self._delays.settled(handles)
        return True

    def requeue(self, handle: Any, delay: float = 0.0) -> None:
        assert self._acks is not None
        self._acks.requeue(handle, delay)
        if self._delays.on:
            self._delays.settled([handle])

    def retry_later(
        self, handle: Any, message: Message, delay: float, state: dict[str, Any]
    ) -> None:
        # The copy goes to the publisher's thread, the original is acked once it is
        # committed: a crash between them duplicates the retry, never loses it.
        assert self._acks is not None
        self._delays.retry(handle, message, delay, state)
        self._acks.pending.add(handle)

    def flush(self) -> None:
        """Wait for the delayed retries' copies to be committed, and ack what waited."""
        if self._delays.on and self._acks is not None and self._acks.pending:
            self._delays.publisher.wait_idle(_FLUSH_WAIT)
            self._settle_committed()

    def _settle_committed(self) -> None:
        """Ack the originals whose copies are committed, and the acks held behind them;
        raise the publisher's error, if it failed."""
        publisher, acks = self._delays.publisher, self._acks
        assert acks is not None
        tags = publisher.committed()
        if tags:
            acks.committed(tags)
        if publisher.failure is not None:
            raise publisher.failure

    def hand_back(self, batch: Batch, start: int) -> None:
        # Nothing more comes; the rows are rejected by close(), after the acks of those in
        # flight (see Acks). Dispatched first: pika would reject at the cancel what it holds.
        channel, connection, acks = self._channel, self._connection, self._acks
        assert channel is not None
        assert connection is not None
        assert acks is not None
        own, first = self._batch, len(self._batch)
        connection.process_data_events(time_limit=0)
        self._cancel_consumers(channel)
        tags = batch.handles[start:] + (own.handles[first:] if own is not batch else [])
        acks.handed_back += tags
        if self._delays.on:
            self._delays.settled(tags)

    def wake(self, from_signal: bool) -> None:
        if from_signal:
            # On the loop's own thread (a handler interrupted): the loop sees the stop
            # within poll_timeout; pika's wake-up takes a lock that thread may hold.
            return
        self._woken = True
        with self._lock:
            connection = self._connection
            if connection is not None:
                # An error means it is closing already: the loop is leaving.
                with contextlib.suppress(pika.exceptions.AMQPError):
                    connection.add_callback_threadsafe(_wake_up)

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
        channel, self._channel = self._channel, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(Exception):  # else they come again
                self.flush()
        acks, self._acks = self._acks, None
        self._delays.forget()  # uncommitted copies are dropped with their connection
        if connection is None:
            return
        unsent = 0 if acks is None else acks.owed + len(acks.held) + len(acks.pending)
        if unsent:
            logger.warning(
                "%d handled messages were not acked yet when the connection dropped; "
                "RabbitMQ will deliver them again",
                unsent,
            )
        if connection.is_open and channel is not None and channel.is_open:
            with contextlib.suppress(pika.exceptions.AMQPError):
                self._cancel_consumers(channel)  # pika rejects the deliveries it still holds
                if acks is not None:
                    acks.reject_handed_back()  # the last settlements: after every ack
                channel.close()  # RabbitMQ requeues the ones still unacked
        self._consumers = []
        if connection.is_open:
            # On error the broker requeues what we did not ack anyway.
            with contextlib.suppress(pika.exceptions.AMQPError):
                connection.close()

    def _cancel_consumers(self, channel: BlockingChannel) -> None:
        consumers, self._consumers = self._consumers, []
        for tag in consumers:
            channel.basic_cancel(tag)

    def fault(self, exc: BaseException) -> Fault:
        if exc is self._delays.refused:  # its note says what to fix
            return Fault.FATAL
        if isinstance(exc, _FATAL_CONNECTION_ERRORS):
            exc.add_note(login_refused(exc, self.where()))
            return Fault.FATAL
        if isinstance(exc, _CLOSED_CHANNEL) and exc.reply_code in _FATAL_CHANNEL_CODES:
            exc.add_note(consume_refused(exc, self.where(), self._queues))
            return Fault.FATAL
        if isinstance(exc, pika.exceptions.AMQPError | _ConsumerCancelledError):
            return Fault.RECONNECT
        return Fault.FATAL

    def describe(self, exc: BaseException) -> str:
        return describe(exc)

    def where(self) -> str:
        # Never the URL: it may hold a password.
        params = self._parameters
        return f"{params.host}:{params.port} vhost {params.virtual_host!r}"

    def source(self) -> str:
        return ", ".join(self._queues)

    def backlog(self) -> int | None:
        """The messages ready in the queues (a passive declare each), unacked ones aside."""
        channel = self._channel
        if channel is None:
            return None
        return sum(
            channel.queue_declare(queue, passive=True).method.message_count
            for queue in self._queues
        )

    def count_key(self, message: Message, stable_id: bool) -> bytes | None:
        attributes = message.attributes
        if RETRIES in attributes and not attributes["redelivered"]:
            # A delayed retry's copy, delivered once: its count (retries + 1) is exact,
            # and counting it in the DLQ would cost two writes a retry.
            return None
        if stable_id:
            return message.message_id
        return content_key(attributes["queue"], attributes["routing_key"], message.raw_data)

    def counted(self, message: Message, stable_id: bool, attempts: int) -> None:
        if attempts == 2 and not stable_id:  # once per message: at its first redelivery
            logger.warning(
                "message %r from queue %r has no publisher message_id: its redeliveries are "
                "counted by a hash of its queue, routing key and body, so identical messages "
                "share one count and max_deliveries is approximate for them; set message_id "
                "when publishing",
                message.message_id,
                message.attributes["queue"],
            )


def _on_cancelled_by_broker(frame: Any) -> None:
    raise _ConsumerCancelledError("RabbitMQ cancelled a consumer (queue deleted or moved)")


def _wake_up() -> None:
    """Run on the connection's thread by :meth:`_RabbitMQTransport.wake` to end its wait."""


def _wake_threadsafe(connection: BlockingConnection) -> None:
    """End the consumer's wait from another thread (the copies' publisher)."""
    with contextlib.suppress(Exception):  # closing: the loop is leaving or reconnecting
        connection.add_callback_threadsafe(_wake_up)
