"""NATSAdapter: core NATS subjects, at-most-once, with queue groups.

Private: import it from :mod:`missive.adapters.nats`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable

from missive._typing import M
from missive.adapters._nats_common import DEFAULT_URL, default_name
from missive.adapters._nats_core_transport import CoreTransport, QueueGroupTransport
from missive.adapters.base import Adapter
from missive.processor import Processor

__all__ = ["NATSAdapter"]


class NATSAdapter(Adapter[M]):
    """Consumes core NATS subjects: **at-most-once** delivery, as Redis Pub/Sub.

    Core NATS keeps nothing and has no acks: a message published while the adapter
    is not subscribed (not started, stopped, reconnecting) is never seen, and a
    received one cannot be given back. Hence:

    * a **nacked** message is dead-lettered, with a reason saying core NATS cannot
      redeliver it, rather than dropped;
    * a message that can be neither handled nor dead-lettered (no DLQ, or the DLQ
      write failed) is logged at ERROR with its id, and the adapter goes on: it is lost;
    * a dropped connection is logged and re-established, after waits that grow with
      each failure in a row; messages published in between are missed.

    With ``queue`` set, the subscriptions join that queue group: each message goes to
    one member of the group (competing consumers); without it every adapter gets
    every message. Subjects may hold wildcards (``orders.*``, ``orders.>``).

    Messages get a generated id and the attributes ``subject``, and ``headers`` (a
    dict) and ``reply`` (a request's reply subject) when the message has them.

    :meth:`stop` (or SIGINT/SIGTERM) unsubscribes, then handles what the server sent
    before, for up to ``drain_timeout`` seconds; what is still held after that is
    dead-lettered with a reason saying so.

    :param message_cls: the message class to build each message with.
    :param processor: the processor to run.
    :param subjects: a subject or subjects to subscribe to.
    :param queue: the queue group to join; ``None``: none (every adapter gets every message).
    :param url: the server URL, or several separated by commas; default ``NATS_URL``,
        else ``nats://127.0.0.1:4222``. Credentials may be in it (never logged).
    :param connection_name: the connection's name on the server.
    :param drain_timeout: seconds spent on messages already sent, after a stop.
    :param max_reconnect_delay: the longest wait, in seconds, between reconnections.
    :param concurrency: how many messages are handled at once (see
        :class:`~missive.Adapter`); 1 by default: one at a time, in order.
    :param ordering_key: ``message -> hashable``: equal keys are handled one at a time.
    :param graceful_timeout: on a stop, the seconds messages in flight get to finish.
    :raises ValueError: if no subject is given or ``drain_timeout`` is negative.
    """

    def __init__(
        self,
        message_cls: type[M],
        processor: Processor[M],
        subjects: str | Iterable[str],
        *,
        queue: str | None = None,
        url: str | None = None,
        connection_name: str | None = None,
        drain_timeout: float = 5.0,
        max_reconnect_delay: float = 10.0,
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
        subject_list = [subjects] if isinstance(subjects, str) else list(subjects)
        if not subject_list or not all(subject_list):
            raise ValueError("give at least one subject to subscribe to")
        if drain_timeout < 0:
            raise ValueError("drain_timeout must not be negative")
        #: The subjects subscribed to.
        self.subjects: tuple[str, ...] = tuple(subject_list)
        self.queue = queue or None
        self.url = url or os.environ.get("NATS_URL") or DEFAULT_URL
        self.connection_name = connection_name or default_name()
        self.drain_timeout = drain_timeout
        self.max_reconnect_delay = max_reconnect_delay

    def transport(self) -> CoreTransport:
        """A new transport on this adapter's subjects, for :meth:`run` to drive."""
        if self.queue:
            return QueueGroupTransport(self)
        return CoreTransport(self)
