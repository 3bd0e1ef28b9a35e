"""RabbitMQAdapter: consume one or more RabbitMQ (AMQP 0-9-1) queues with pika.

Needs the ``missive[rabbitmq]`` extra (pika). See ``docs/rabbitmq.md`` for the user guide.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from missive._typing import M
from missive.adapters.base import Adapter
from missive.context import Outcome, ProcessingContext
from missive.errors import DLQWriteError, HandlingError, MissingExtraError, MissiveError
from missive.message import Message
from missive.processor import Processor

try:
    import pika
    import pika.exceptions
    from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
    from pika.spec import Basic, BasicProperties
except ImportError as _exc:  # pragma: no cover - exercised by a test in a subprocess
    raise MissingExtraError("rabbitmq", "missive.adapters.rabbitmq") from _exc

from missive.adapters._rabbitmq_acks import Acks
from missive.adapters._rabbitmq_causes import describe

__all__ = ["DEFAULT_URL", "RabbitMQAdapter"]

logger = logging.getLogger("missive.adapters.rabbitmq")

#: The broker used when neither ``url`` nor the ``AMQP_URL`` environment variable is set.
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

_NACKED = Outcome.NACKED
# Connection errors that a new connection cannot fix: the configuration must change.
_FATAL_CONNECTION_ERRORS = (
    pika.exceptions.AuthenticationError,
    pika.exceptions.ProbableAuthenticationError,
    pika.exceptions.ProbableAccessDeniedError,
)
# Channel close codes that a new connection cannot fix: 403 access refused, 404 no queue.
_FATAL_CHANNEL_CODES = frozenset({403, 404})
# How often the consuming loop looks at the stop flag when nothing wakes it (a signal).
_POLL_SECONDS = 0.5
_FIRST_RECONNECT_DELAY = 0.5
_MAX_NACK_DELAY = 30.0


class _ConsumerCancelledError(Exception):
    """The broker cancelled one of our consumers (queue deleted, leader moved): reconnect."""


class RabbitMQAdapter(Adapter[M]):
    """Consumes RabbitMQ queues; each delivery is processed, then acked or requeued.

    One connection and one channel, on the thread that calls :meth:`run`; handlers run
    on that thread, one message at a time, in delivery order, so they need not be
    thread-safe. Run several adapters (processes or threads, each its own adapter) on
    the same queue to share the work: RabbitMQ gives each message to one of them.

    **Ack.** A message is acked once :meth:`~missive.ProcessingContext.process` returns
    ACKED or DEAD_LETTERED, never before. Acks are coalesced: one
    ``basic_ack(multiple=True)`` covers up to ``prefetch // 2`` messages and is sent as
    soon as the messages received so far are handled, and at shutdown. NACKED: the
    message is requeued (``basic_nack(requeue=True)``) after ``retry_delay`` seconds,
    doubled for each earlier redelivery (up to 30 s), and delivered again with
    ``redelivered`` set. When ``process`` raises :class:`~missive.HandlingError`
    (no DLQ) or :class:`~missive.DLQWriteError`, the message is logged at ERROR and
    requeued after ``retry_delay`` seconds; it is never acked. If the connection
    drops, every message not yet acked is redelivered by the broker, even one whose
    handler had finished: delivery is *at least once*.

    **Ids.** ``message_id`` is the AMQP ``message_id`` property (UTF-8 bytes) when the
    publisher set one, so that a redelivered message keeps its id. Without one AMQP has
    no stable id (the delivery tag counts deliveries on one channel), so each delivery
    gets a fresh unique id and ``attributes["publisher_id"]`` is ``False``.

    **Attributes.** ``queue``, ``exchange``, ``routing_key``, ``redelivered``,
    ``delivery_count`` (1 for a first delivery; ``x-delivery-count + 1`` on quorum
    queues; ``None`` for a redelivery on a classic queue, which does not count),
    ``headers`` (a dict), ``publisher_id``, ``content_type``, ``correlation_id``,
    ``reply_to``.

    **Poison messages.** A message delivered more than ``max_deliveries`` times is
    dead-lettered without being handled, with a reason that says so, then acked.
    Redeliveries are counted in the DLQ (:meth:`~missive.Adapter.count_delivery`), as
    attempts actually made, when it is a :class:`~missive.dlq.DeadLetterStore`
    (SQLite, PostgreSQL): under the publisher's ``message_id``, or without one under a
    hash of queue, routing key and body (identical messages then share a count: a
    WARNING says so once per message). Otherwise quorum queues' ``x-delivery-count``
    is used, and on classic queues the limit does not apply.

    **Shutdown.** :meth:`stop` (thread-safe) or SIGINT/SIGTERM (when :meth:`run` is on
    the main thread): the message in hand is finished and settled, the owed acks are
    sent, the consumers are cancelled and the prefetched messages not yet started are
    handed back (left unacked, so that closing the channel requeues them), the
    ``after_processing`` hooks run and the connection is closed. Python cannot cut a
    running handler short, so there is no drain timeout: a stop waits for the handler
    in progress to return.

    **Reconnection.** A dropped connection (broker restart, network, ``rabbitmqctl
    close_connection``) or a consumer the broker cancelled is logged at WARNING and
    re-established after a delay that doubles from 0.5 s up to ``max_reconnect_delay``.
    Wrong credentials, a refused vhost and a missing queue are configuration errors:
    :meth:`run` raises the pika error at once. Queues are not declared: declare them
    (type, durability, arguments) before starting the adapter.

    :param message_cls: the message class to build each delivery into.
    :param processor: the processor to run.
    :param queues: the name of the queue to consume, or several names.
    :param url: the AMQP URL (``amqp://user:password@host:port/vhost?heartbeat=60``);
        defaults to the ``AMQP_URL`` environment variable, then :data:`DEFAULT_URL`.
    :param prefetch: how many unacked messages RabbitMQ sends ahead, per queue (100).
    :param max_deliveries: dead-letter a message delivered more than this many times
        (10; quorum queues only); ``None`` disables the check.
    :param retry_delay: seconds before a message whose processing raised is requeued (1.0).
    :param max_reconnect_delay: the longest wait between reconnection attempts (30.0 s).
    :param connection_name: shown by ``rabbitmqctl list_connections`` and the management
        UI; defaults to ``missive <host> pid <pid>``.
    :raises ValueError: if no queue is given or ``prefetch`` is not in 1..65535.
    """

    def __init__(
        self,
        message_cls: type[M],
        processor: Processor[M],
        queues: str | Sequence[str],
        *,
        url: str | None = None,
        prefetch: int = 100,
        max_deliveries: int | None = 10,
        retry_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        connection_name: str | None = None,
    ) -> None:
        super().__init__(message_cls, processor)
        self.queues: tuple[str, ...] = (queues,) if isinstance(queues, str) else tuple(queues)
        if not self.queues:
            raise ValueError("RabbitMQAdapter needs at least one queue name to consume")
        if not 1 <= prefetch <= 65535:
            raise ValueError(f"prefetch must be between 1 and 65535, not {prefetch}")
        self.url = url or os.environ.get("AMQP_URL") or DEFAULT_URL
        self.prefetch = prefetch
        self.max_deliveries = max_deliveries
        self.retry_delay = retry_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.connection_name = (
            connection_name or f"missive {socket.gethostname()} pid {os.getpid()}"
        )
        self._parameters = pika.URLParameters(self.url)
        properties = dict(self._parameters.client_properties or {})
        properties["connection_name"] = self.connection_name
        self._parameters.client_properties = properties
        self._lock = threading.Lock()
        self._connection: BlockingConnection | None = None
        self._run_thread: threading.Thread | None = None
        self._consuming = False  # whether the current connection got as far as consuming

    @property
    def _where(self) -> str:
        # Never the URL: it may hold a password.
        params = self._parameters
        return f"{params.host}:{params.port} vhost {params.virtual_host!r}"

    def stop(self) -> None:
        """Ask :meth:`run` to finish the message in hand and return. Thread-safe."""
        super().stop()
        if threading.current_thread() is self._run_thread:
            # A signal handler interrupting run(): the loop sees the flag within
            # _POLL_SECONDS; pika's wake-up takes a lock run() itself may hold.
            return
        with self._lock:
            connection = self._connection
            if connection is not None:
                # An error means it is closing already: run() is leaving its loop.
                with contextlib.suppress(pika.exceptions.AMQPError):
                    connection.add_callback_threadsafe(_wake_up)

    def run(self) -> None:
        """Consume until :meth:`stop`, a signal, or a configuration error (which raises).

        :raises pika.exceptions.AMQPConnectionError: on wrong credentials or vhost.
        :raises pika.exceptions.ChannelClosedByBroker: if a queue does not exist (404)
            or may not be read (403).
        """
        self._run_thread = threading.current_thread()
        with self.stop_on_signals(), self.processor.context() as context:
            delay = _FIRST_RECONNECT_DELAY
            while not self.stop_requested:
                self._consuming = False
                try:
                    self._consume(context)
                except _FATAL_CONNECTION_ERRORS as exc:
                    exc.add_note(
                        f"RabbitMQ at {self._where} refused the login ({describe(exc)}): "
                        "check the user, password and vhost in the URL, then start again"
                    )
                    raise
                except pika.exceptions.ChannelClosedByBroker as exc:
                    if exc.reply_code in _FATAL_CHANNEL_CODES:
                        exc.add_note(
                            f"RabbitMQ at {self._where} would not let us consume "
                            f"{', '.join(self.queues)} ({describe(exc)}): declare the "
                            "queues and grant the user read access, then start again"
                        )
                        raise
                    delay = self._lost(exc, delay)
                except (pika.exceptions.AMQPError, _ConsumerCancelledError) as exc:
                    delay = self._lost(exc, delay)
            logger.info("stopped consuming %s", ", ".join(self.queues))

    def _lost(self, exc: BaseException, delay: float) -> float:
        """Log the loss, wait before reconnecting; return the next delay (doubled)."""
        if self.stop_requested:
            return delay
        if self._consuming:  # it worked until now: start the backoff afresh
            delay = _FIRST_RECONNECT_DELAY
            logger.warning(
                "consuming on %s interrupted (%s); unacked messages go back to their "
                "queue; reconnecting in %.1f s",
                self._where,
                describe(exc),
                delay,
            )
        else:
            logger.warning(
                "could not consume on %s (%s); reconnecting in %.1f s",
                self._where,
                describe(exc),
                delay,
            )
        self.stop_event.wait(delay)
        return min(delay * 2, self.max_reconnect_delay)

    def _consume(self, context: ProcessingContext[M]) -> None:
        """One connection: consume until stopped (returns) or the connection fails (raises)."""
        try:
            connection = pika.BlockingConnection(self._parameters)
        except ValueError as exc:
            # pika raises ValueError ("Expected connected socket, but getpeername()
            # failed") when the socket is reset while it connects: a lost connection.
            raise pika.exceptions.AMQPConnectionError("connection reset while connecting") from exc
        except OSError as exc:  # a host name that does not resolve (yet): retried
            raise pika.exceptions.AMQPConnectionError(exc) from exc
        try:
            with self._lock:
                self._connection = connection
            channel = connection.channel()
            channel.basic_qos(prefetch_count=self.prefetch)
            channel.add_on_cancel_callback(self._on_cancelled_by_broker)
            acks = Acks(channel, self.prefetch // 2)
            tags = [
                channel.basic_consume(queue, self._on_message_callback(context, queue, acks))
                for queue in self.queues
            ]
            logger.info(
                "consuming %s on %s (prefetch %d)",
                ", ".join(self.queues),
                self._where,
                self.prefetch,
            )
            self._consuming = True
            self._set_ready()
            try:
                while not self.stop_requested:
                    connection.process_data_events(time_limit=_POLL_SECONDS)
                acks.flush()
            except pika.exceptions.AMQPError:
                if acks.owed:
                    logger.warning(
                        "%d handled messages were not acked yet when the connection dropped; "
                        "RabbitMQ will deliver them again",
                        acks.owed,
                    )
                raise
            for tag in tags:
                channel.basic_cancel(tag)  # pika rejects the deliveries it still holds
            channel.close()  # RabbitMQ requeues the ones skipped since the stop
        finally:
            with self._lock:
                self._connection = None
            if connection.is_open:
                # On error the broker requeues what we did not ack anyway.
                with contextlib.suppress(pika.exceptions.AMQPError):
                    connection.close()

    def _count_redelivery(
        self, context: ProcessingContext[M], message: M, key: bytes
    ) -> int | None:
        """How many times ``message`` was delivered, counted in the DLQ; ``None`` if unknown."""
        try:
            return self.count_delivery(context, message, key)
        except MissiveError as exc:
            logger.warning(
                "could not count the redelivery of message %r in the DLQ (%s); handling it "
                "without a delivery count",
                message.message_id,
                exc,
            )
            return None

    def _forget_redeliveries(self, context: ProcessingContext[M], message: M, key: bytes) -> None:
        try:
            self.forget_deliveries(context, message, key)
        except MissiveError as exc:
            logger.warning(
                "could not drop the delivery count of message %r from the DLQ (%s); a "
                "message with the same id would start from it",
                message.message_id,
                exc,
            )

    def _on_cancelled_by_broker(self, frame: Any) -> None:
        raise _ConsumerCancelledError("RabbitMQ cancelled a consumer (queue deleted or moved)")

    def _on_message_callback(
        self, context: ProcessingContext[M], queue: str, acks: Acks
    ) -> Callable[[BlockingChannel, Basic.Deliver, BasicProperties, bytes], None]:
        """The consumer callback for ``queue``: the per-message hot path."""
        message_cls = self.message_cls
        process = context.process
        is_stopping = self.stop_event.is_set
        max_deliveries = self.max_deliveries
        ack = acks.ack

        def on_message(
            channel: BlockingChannel,
            method: Basic.Deliver,
            properties: BasicProperties,
            body: bytes,
        ) -> None:
            tag: int = method.delivery_tag  # type: ignore[assignment]  # set on every Deliver
            if is_stopping():
                # Not started: left unacked, RabbitMQ requeues it when the channel
                # closes. A reject here would send at once, and pika reads while it
                # sends: the redelivery it frees joins this dispatch loop, forever.
                return
            headers = properties.headers
            redelivered = method.redelivered
            count: int | None = None if redelivered else 1
            if headers:
                previous = headers.get("x-delivery-count")
                if isinstance(previous, int):  # quorum queues count earlier deliveries
                    count = previous + 1
            publisher_id = properties.message_id
            message = message_cls(
                body,
                publisher_id.encode() if publisher_id else None,
                {
                    "queue": queue,
                    "exchange": method.exchange,
                    "routing_key": method.routing_key,
                    "redelivered": redelivered,
                    "delivery_count": count,
                    "headers": headers if headers else {},
                    "publisher_id": bool(publisher_id),
                    "content_type": properties.content_type,
                    "correlation_id": properties.correlation_id,
                    "reply_to": properties.reply_to,
                },
            )
            counted = False
            key = b""  # what the DLQ counts a redelivery under; first deliveries need none
            if redelivered:
                # Count the attempts actually made, in the DLQ, where it can: the
                # broker's count (quorum queues) also rises for messages prefetched
                # behind one that crashed the worker, which were never attempted.
                key = (
                    message.message_id
                    if publisher_id
                    else _content_key(queue, method.routing_key, body)
                )
                attempts = self._count_redelivery(context, message, key)
                if attempts is not None:
                    count, counted = attempts, True
                    if attempts == 2 and not publisher_id:
                        _warn_counted_by_content(message, queue)
            try:
                if max_deliveries is not None and count is not None and count > max_deliveries:
                    outcome = context.dead_letter(
                        message,
                        f"delivered {count} times, more than max_deliveries={max_deliveries},"
                        f" from queue {queue!r}: not handled again",
                    )
                else:
                    outcome = process(message)
            except (HandlingError, DLQWriteError) as exc:
                # The error's text is safe to log: the id, the reason's summary, what to do.
                logger.error("%s Requeuing it in %.1f s.", exc, self.retry_delay)
                acks.requeue_later(tag, self.retry_delay)
                return
            if outcome is _NACKED:
                # Never at once: a message nacked again and again would spin.
                redeliveries = (count or 2) - 1
                acks.requeue_later(tag, min(self.retry_delay * 2**redeliveries, _MAX_NACK_DELAY))
            else:
                if counted:
                    self._forget_redeliveries(context, message, key)
                ack(tag)
                if redelivered:
                    # It may be the neighbour of a poison message that crashed the
                    # worker: ack it now, so the next crash does not bring it back.
                    acks.flush()

        return on_message


def _content_key(queue: str, routing_key: str | None, body: bytes) -> bytes:
    """A stable key for a message without a publisher id: identical messages share it."""
    digest = hashlib.sha256(f"{queue}\0{routing_key}\0".encode())
    digest.update(body)
    return b"amqp-content:" + digest.hexdigest().encode()


def _warn_counted_by_content(message: Message, queue: str) -> None:
    logger.warning(
        "message %r from queue %r has no publisher message_id: its redeliveries are "
        "counted by a hash of its queue, routing key and body, so identical messages "
        "share one count and max_deliveries is approximate for them; set message_id "
        "when publishing",
        message.message_id,
        queue,
    )


def _wake_up() -> None:
    """Run on the connection's thread by :meth:`RabbitMQAdapter.stop` to end its wait."""
