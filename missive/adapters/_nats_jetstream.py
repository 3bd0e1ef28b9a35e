"""NATSJetStreamAdapter: a JetStream durable pull consumer, at-least-once.

Private: import it from :mod:`missive.adapters.nats`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable

from missive._typing import M
from missive.adapters._nats_common import DEFAULT_URL, default_name
from missive.adapters._nats_jetstream_transport import JetStreamTransport
from missive.adapters.base import Adapter
from missive.processor import Processor

__all__ = ["DEFAULT_DURABLE", "NATSJetStreamAdapter"]

#: The durable consumer :class:`NATSJetStreamAdapter` pulls from when given none.
DEFAULT_DURABLE = "missive"


class NATSJetStreamAdapter(Adapter[M]):
    """Pulls from a durable consumer of a JetStream stream: **at-least-once** delivery.

    * **Consumer.** By default the durable consumer ``durable`` is bound if it exists,
      and created if not: a pull consumer with explicit acks, ``ack_wait``, no server
      delivery limit (``max_deliveries`` applies instead), from the first message of
      the stream, filtered by ``filter_subject`` (wildcards allowed) when given. With
      ``bind=True`` it must exist already (made by ``nats consumer add`` or your
      deployment): a missing one stops :meth:`run` with the error. The stream is never
      created: a missing stream stops :meth:`run` with the error.
    * **Batches.** One pull request at a time, for up to ``batch_size`` messages
      (twice ``concurrency`` with more in flight); each message is queued as it arrives.
    * **Ack.** A handled message is acked (``+ACK``) after its handling, a dead-lettered
      one terminated (``+TERM``) once the DLQ holds it; those of a batch are sent
      together with the next pull request.
    * **Nack.** ``-NAK`` with a delay: ``retry_delay`` doubled for each earlier
      delivery, up to 30 s. JetStream redelivers it then, to this worker or another.
    * **Poison messages.** The delivery count is JetStream's (``num_delivered``): a
      message delivered more than ``max_deliveries`` times is dead-lettered unhandled.
    * **Long handlers.** While a message is held (queued, handled, or its ack owed),
      an in-progress ack (``+WPI``) is sent every ``in_progress_interval`` seconds
      (a third of the consumer's ``ack_wait`` by default), so that JetStream does not
      give it to another worker. A message whose worker dies comes back after
      ``ack_wait``.
    * **Ids.** ``message_id`` is the publisher's ``Nats-Msg-Id`` header when set
      (kept on redelivery; the DLQ key, so keep it unique), else ``b"<stream>:<seq>"``.
    * **Attributes.** ``subject``, ``stream``, ``sequence`` (the stream's),
      ``consumer``, ``headers`` (a dict, the last value of a repeated header),
      ``delivery_count``, ``publisher_id`` (whether ``Nats-Msg-Id`` was set).
    * **Stop.** The message in hand is finished; those pulled but not started are
      nacked at once (JetStream counts that delivery: a handed-back message comes back
      with ``delivery_count`` one higher); owed acks are sent.
    * **Connection loss.** Logged at WARNING, then a new connection after waits
      growing up to ``max_reconnect_delay``; acks owed are sent on it. Unacked
      messages come back after ``ack_wait``.

    :param message_cls: the message class to build each message with.
    :param processor: the processor to run.
    :param stream: the JetStream stream's name (it must exist).
    :param durable: the durable consumer's name; ``"missive"`` by default.
    :param filter_subject: the subject (or wildcard) a created consumer takes; ``None``:
        the whole stream. Ignored when the consumer exists already.
    :param bind: only bind to an existing consumer; never create one.
    :param url: the server URL, or several separated by commas; default ``NATS_URL``,
        else ``nats://127.0.0.1:4222``. Credentials may be in it (never logged).
    :param connection_name: the connection's name on the server.
    :param batch_size: the most messages one pull request asks for.
    :param ack_wait: seconds JetStream waits for an ack before redelivering, for a
        consumer the adapter creates (30).
    :param in_progress_interval: seconds between in-progress acks for a message held;
        ``None``: a third of the consumer's ``ack_wait``; 0: never.
    :param max_deliveries: deliveries after which a message is dead-lettered unhandled (5).
    :param retry_delay: the base delay, in seconds, of a nacked message's redelivery (1).
    :param max_reconnect_delay: the longest wait, in seconds, between reconnections.
    :param concurrency: how many messages are handled at once (see
        :class:`~missive.Adapter`); 1 by default: one at a time, in order.
    :param ordering_key: ``message -> hashable``: equal keys are handled one at a time.
    :param graceful_timeout: on a stop, the seconds messages in flight get to finish.
    :raises ValueError: if a number is out of range.
    """

    def __init__(
        self,
        message_cls: type[M],
        processor: Processor[M],
        stream: str,
        *,
        durable: str = DEFAULT_DURABLE,
        filter_subject: str | None = None,
        bind: bool = False,
        url: str | None = None,
        connection_name: str | None = None,
        batch_size: int = 100,
        ack_wait: float = 30.0,
        in_progress_interval: float | None = None,
        max_deliveries: int | None = 5,
        retry_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        concurrency: int = 1,
        ordering_key: Callable[[M], Hashable] | None = None,
        graceful_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            message_cls,
            processor,
            concurrency=concurrency,
            ordering_key=ordering_key,
            graceful_timeout=graceful_timeout,
        )
        if not stream or not durable:
            raise ValueError("give the stream's name and the durable consumer's name")
        if batch_size < 1 or (max_deliveries is not None and max_deliveries < 1):
            raise ValueError("batch_size and max_deliveries must be at least 1")
        if not ack_wait > 0 or (in_progress_interval is not None and in_progress_interval < 0):
            raise ValueError("ack_wait must be above 0 s, in_progress_interval not below")
        if in_progress_interval is not None and in_progress_interval >= ack_wait:
            raise ValueError("in_progress_interval must be shorter than ack_wait")
        self.stream = stream
        self.durable = durable
        self.filter_subject = filter_subject
        self.bind = bind
        self.url = url or os.environ.get("NATS_URL") or DEFAULT_URL
        self.connection_name = connection_name or default_name()
        self.batch_size = batch_size
        self.ack_wait = ack_wait
        self.in_progress_interval = in_progress_interval
        self.max_deliveries = max_deliveries
        self.retry_delay = retry_delay
        self.max_reconnect_delay = max_reconnect_delay

    def transport(self) -> JetStreamTransport:
        """A transport pulling from this adapter's consumer, for :meth:`run` to drive."""
        return JetStreamTransport(self)
