"""RabbitMQAdapter: consume one or more RabbitMQ (AMQP 0-9-1) queues with pika.

Needs the ``missive[rabbitmq]`` extra (pika). See ``docs/rabbitmq.md`` for the user guide.
The broker side is ``_rabbitmq_transport._RabbitMQTransport``, which the delivery loop drives.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from missive._typing import M
from missive.adapters.base import Adapter
from missive.errors import MissingExtraError
from missive.processor import Processor
from missive.retry import Retry
from missive.runtime.transport import Transport

try:
    import pika
except ImportError as _exc:  # pragma: no cover - exercised by a test in a subprocess
    raise MissingExtraError("rabbitmq", "missive.adapters.rabbitmq") from _exc

from missive.adapters._rabbitmq_declare import QueueDeclarationError, declarer
from missive.adapters._rabbitmq_transport import _RabbitMQTransport

__all__ = ["DEFAULT_URL", "QueueDeclarationError", "RabbitMQAdapter"]

#: The broker used when neither ``url`` nor the ``AMQP_URL`` environment variable is set.
DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


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

    **Delayed retries.** When the processor's or a handler's retry policy has delayed
    retries (:class:`~missive.Retry` with ``delayed`` above 0), each queue gets a ladder
    of durable delay queues, ``<queue>.missive-delay.<seconds>`` for 1, 2, 4, ... s up
    to the longest ``max_delay`` (20 at most), declared at each connection. A message
    due a retry is copied there (same body, properties, headers and ``message_id``, the
    attempt state in ``x-missive-*`` headers, committed in batches), and the original
    is acked once RabbitMQ committed the copy; when its wait is over the copy comes
    back to the queue, with ``x-missive-retries``, ``x-missive-first-attempt`` and
    ``x-missive-history`` in its attributes and its delivery count going on (retries +
    1). A delay is rounded down to a level, and up to 1 s below it. See ``docs/rabbitmq.md``.

    **Shutdown.** :meth:`stop` (thread-safe) or SIGINT/SIGTERM (when :meth:`run` is on
    the main thread): the message in hand is finished and settled, the owed acks are
    sent, the consumers are cancelled and the prefetched messages not yet started are
    handed back (rejected with requeue: back in the queue at once), the
    ``after_processing`` hooks run and the connection is closed. With ``concurrency``
    the consumers are cancelled first, and the messages not started are rejected once
    those in flight are settled, after their acks: a quorum queue may drop acks sent
    just after many rejects when the channel closes (RabbitMQ issue 10327), and the
    message would come again. Python cannot cut a running handler short, so there is
    no drain timeout: a stop waits for the handler in progress to return.

    **Reconnection.** A dropped connection (broker restart, network, ``rabbitmqctl
    close_connection``) or a consumer the broker cancelled is logged at WARNING and
    re-established after a delay that doubles from 0.5 s up to ``max_reconnect_delay``.
    Wrong credentials, a refused vhost and a missing queue are configuration errors:
    :meth:`run` raises the pika error at once. Queues are not declared unless
    ``declare=True``: declare them (type, durability, arguments) before starting the
    adapter, or let it declare them at each connection, durable and classic unless
    ``declare_arguments`` say otherwise (as missive 0.8.1 did through kombu).

    :param message_cls: the message class to build each delivery into.
    :param processor: the processor to run.
    :param queues: the name of the queue to consume, or several names.
    :param url: the AMQP URL (``amqp://user:password@host:port/vhost?heartbeat=60``);
        defaults to the ``AMQP_URL`` environment variable, then :data:`DEFAULT_URL`.
    :param prefetch: how many unacked messages RabbitMQ sends ahead: 100, or twice
        ``concurrency`` when that is more.
    :param max_deliveries: dead-letter a message delivered more than this many times
        (10; quorum queues only); ``None`` disables the check.
    :param retry_delay: seconds before a message whose processing raised is requeued (1.0).
    :param max_reconnect_delay: the longest wait between reconnection attempts (30.0 s).
    :param connection_name: shown by ``rabbitmqctl list_connections`` and the management
        UI; defaults to ``missive <host> pid <pid>``.
    :param concurrency: how many messages are handled at once (see
        :class:`~missive.Adapter`); 1 by default: one at a time, in order.
    :param ordering_key: ``message -> hashable``: equal keys are handled one at a time.
    :param graceful_timeout: on a stop, the seconds messages in flight get to finish.
    :param declare: declare the queues before consuming them, at each connection:
        durable, not exclusive, not auto-deleted. A queue that exists with other
        settings stops :meth:`run` with :class:`QueueDeclarationError`.
    :param declare_arguments: the queues' arguments when declared, such as
        ``{"x-queue-type": "quorum"}`` or ``{"x-max-length": 10000}``; only with
        ``declare=True``.
    :raises ValueError: if no queue is given or ``prefetch`` is not in 1..65535.
    """

    def __init__(
        self,
        message_cls: type[M],
        processor: Processor[M],
        queues: str | Sequence[str],
        *,
        url: str | None = None,
        prefetch: int | None = None,
        max_deliveries: int | None = 10,
        retry_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        connection_name: str | None = None,
        concurrency: int = 1,
        ordering_key: Callable[[M], Hashable] | None = None,
        graceful_timeout: float = 30.0,
        declare: bool = False,
        declare_arguments: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            message_cls,
            processor,
            concurrency=concurrency,
            ordering_key=ordering_key,
            graceful_timeout=graceful_timeout,
        )
        self.queues: tuple[str, ...] = (queues,) if isinstance(queues, str) else tuple(queues)
        if not self.queues:
            raise ValueError("RabbitMQAdapter needs at least one queue name to consume")
        if prefetch is not None and not 1 <= prefetch <= 65535:
            raise ValueError(f"prefetch must be between 1 and 65535, not {prefetch}")
        if declare_arguments is not None and not declare:
            raise ValueError("declare_arguments is only used with declare=True")
        self.url = url or os.environ.get("AMQP_URL") or DEFAULT_URL
        #: Whether the queues are declared at each connection, and with what arguments.
        self.declare = declare
        self.declare_arguments = dict(declare_arguments or {})
        #: The prefetch given; ``None``: it follows ``concurrency`` (see :attr:`qos`).
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

    def transport(self) -> Transport:
        """A transport on this adapter's broker and queues, for :meth:`run` to drive.

        :meth:`run` raises :class:`pika.exceptions.AMQPConnectionError` on wrong
        credentials or vhost, and :class:`pika.exceptions.ChannelClosedByBroker` if a
        queue does not exist (404) or may not be read (403); with ``declare=True``,
        :class:`QueueDeclarationError` if a queue exists with other settings.
        """
        transport = _RabbitMQTransport(
            self._parameters, self.queues, self.qos, self.longest_delay
        )
        if self.declare:
            transport.declare = declarer(self.queues, self.declare_arguments)
        return transport

    def longest_delay(self) -> float | None:
        """The longest wait a delayed retry may ask for: the largest ``max_delay`` of the
        processor's and the handlers' retry policies with delayed retries; ``None`` when
        none has any (then no delay queue is declared)."""
        processor = self.processor
        policies: list[Retry | None] = [processor.retry]
        router = processor.router
        policies.extend(route.retry for _, route in router.plain)
        for _, table in router.indexes:
            policies.extend(route.retry for entries in table.values() for _, route in entries)
        delays = [policy.max_delay for policy in policies if policy is not None and policy.delayed]
        return max(delays, default=None)

    @property
    def qos(self) -> int:
        """The prefetch in use: the one given, else 100 or twice ``concurrency``, the more."""
        return self.prefetch if self.prefetch is not None else max(100, 2 * self.concurrency)
