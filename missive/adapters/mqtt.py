"""MQTTAdapter: consume MQTT topics (MQTT 5 or 3.1.1) with paho-mqtt, QoS 1, manual acks.

Needs the ``missive[mqtt]`` extra (paho-mqtt 2.x). See ``docs/mqtt.md`` for the user guide.
The broker side is ``_mqtt_transport.MQTTTransport``, which the delivery loop drives.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Callable, Hashable, Sequence

from missive._typing import M
from missive.adapters.base import Adapter
from missive.errors import MissingExtraError
from missive.processor import Processor
from missive.runtime.transport import Fault

try:
    import paho.mqtt.client  # noqa: F401 - imported first so that a missing extra is clear
except ImportError as _exc:  # pragma: no cover - depends on what is installed
    raise MissingExtraError("mqtt", "missive.adapters.mqtt") from _exc

from missive.adapters._mqtt_session import mqtt_fault, parse_url
from missive.adapters._mqtt_transport import MQTTTransport

__all__ = ["DEFAULT_URL", "MQTTAdapter"]

logger = logging.getLogger("missive.adapters.mqtt")

#: The broker used when neither ``url`` nor the ``MQTT_URL`` environment variable is set.
DEFAULT_URL = "mqtt://127.0.0.1:1883"
_PROTOCOLS = ("5", "3.1.1")


def default_client_id() -> str:
    """``missive-<host>``, and ``-<n>`` for worker n of ``missive run --workers``."""
    worker = os.environ.get("MISSIVE_WORKER")
    return f"missive-{socket.gethostname()}" + (f"-{worker}" if worker else "")


class MQTTAdapter(Adapter[M]):
    """Consumes MQTT topics at QoS 1, in a persistent session, acking after handling.

    **Session.** The adapter connects with a stable ``client_id`` and a persistent
    session (MQTT 5: ``clean_start=False`` and ``session_expiry``; 3.1.1:
    ``clean_session=False``), so the broker keeps the subscriptions, and the messages
    published while the worker is away, until it reconnects. A session exists once the
    client id has subscribed: start the worker (or call :meth:`create_session`) before
    relying on it. Give each worker its own client id: two connections with one id
    disconnect each other in turn (the default ends with ``MISSIVE_WORKER``).

    **Ack.** Each subscription is QoS 1 with manual acknowledgement: the PUBACK is sent
    only once the message was handled or stored in the DLQ, in the order the messages
    came. Until then the broker keeps it in the session and sends it again (DUP set)
    when the worker reconnects: delivery is *at least once*.

    **Nack.** MQTT has none: a message can only come back through a reconnection. A
    nacked message is dead-lettered with a reason saying so. A message that cannot be
    handled nor stored (no DLQ, DLQ write failed) stops :meth:`run` with the error; it
    stays unacknowledged in the session and comes again when the worker restarts.

    **Ids and counts.** MQTT has no message id (the packet id is reused): the
    ``id_property`` user property (MQTT 5) is the id when the publisher set it, else
    each delivery gets a new id. A redelivery is flagged (DUP) but not counted: with a
    :class:`~missive.dlq.DeadLetterStore` DLQ, redeliveries are counted there (under the
    publisher's id, else a hash of topic and body) and ``max_deliveries`` applies.

    **Attributes.** ``topic``, ``qos``, ``retain``, ``dup``, ``mid`` (the packet id),
    ``client_id``, ``delivery_count`` (1, or ``None`` for a redelivery), ``publisher_id``,
    ``headers`` (the user properties as a dict), ``user_properties`` (every pair, in
    order), ``content_type``, ``response_topic``, ``correlation_data`` (MQTT 5).

    :param message_cls: the message class to build each delivery into.
    :param processor: the processor to run.
    :param topics: a topic filter or several (wildcards ``+`` and ``#`` allowed).
    :param group: share the topics with the other workers of this group (shared
        subscriptions, ``$share/<group>/<topic>``): each message goes to one of them.
    :param url: ``mqtt://user:password@host:port`` (``mqtts://`` for TLS); defaults to the
        ``MQTT_URL`` environment variable, then :data:`DEFAULT_URL`.
    :param client_id: the session's client id; by default :func:`default_client_id`.
    :param protocol: ``"5"`` (MQTT 5, the default) or ``"3.1.1"``.
    :param session_expiry: MQTT 5: seconds the broker keeps the session once the worker
        is gone (7 days); 3.1.1 sessions last until the broker's own limit.
    :param receive_maximum: MQTT 5: how many unacknowledged messages the broker sends
        ahead (100, or twice ``concurrency`` when more); 3.1.1: the broker decides.
    :param keepalive: seconds between pings when idle; a dead connection is noticed after
        about 1.5 times this.
    :param connect_timeout: seconds to wait for the broker's CONNACK and SUBACK.
    :param id_property: the MQTT 5 user property holding the publisher's message id;
        ``None``: never read one.
    :param tls: an :class:`ssl.SSLContext` for TLS (``mqtts://`` uses the default one).
    :param max_deliveries: dead-letter a message delivered more than this many times (10;
        counted in a DLQ store); ``None`` disables the check.
    :param max_reconnect_delay: the longest wait between reconnection attempts (30.0 s).
    :param concurrency: how many messages are handled at once (see :class:`~missive.Adapter`).
    :param ordering_key: ``message -> hashable``: equal keys are handled one at a time.
    :param graceful_timeout: on a stop, the seconds messages in flight get to finish.
    :raises ValueError: if no topic is given or a setting is out of range.
    """

    def __init__(
        self,
        message_cls: type[M],
        processor: Processor[M],
        topics: str | Sequence[str],
        *,
        group: str | None = None,
        url: str | None = None,
        client_id: str | None = None,
        protocol: str = "5",
        session_expiry: int = 7 * 24 * 3600,
        receive_maximum: int | None = None,
        keepalive: int = 30,
        connect_timeout: float = 10.0,
        id_property: str | None = "message_id",
        tls: ssl.SSLContext | None = None,
        max_deliveries: int | None = 10,
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
        self.topics: tuple[str, ...] = (topics,) if isinstance(topics, str) else tuple(topics)
        if not self.topics or not all(self.topics):
            raise ValueError("MQTTAdapter needs at least one topic filter, none empty")
        if group is not None and (not group or any(c in group for c in "/+#")):
            raise ValueError(f"a shared subscription group has no '/', '+' or '#': {group!r}")
        if protocol not in _PROTOCOLS:
            raise ValueError(f"protocol is '5' or '3.1.1', not {protocol!r}")
        if not 1 <= session_expiry <= 0xFFFFFFFF:
            raise ValueError("session_expiry must be 1 s or more: the session must outlive a stop")
        if receive_maximum is not None and not 1 <= receive_maximum <= 65535:
            raise ValueError(f"receive_maximum must be between 1 and 65535, not {receive_maximum}")
        if keepalive < 1 or connect_timeout <= 0 or max_reconnect_delay < 0:
            raise ValueError(
                "keepalive and connect_timeout must be positive, max_reconnect_delay not negative"
            )
        self.group = group
        #: The topic filters subscribed to (``$share/<group>/...`` with a group).
        self.subscriptions: tuple[str, ...] = tuple(
            f"$share/{group}/{topic}" if group else topic for topic in self.topics
        )
        self.url = url or os.environ.get("MQTT_URL") or DEFAULT_URL
        self.host, self.port, self.username, self.password, secure = parse_url(self.url)
        self.tls = tls if tls is not None or not secure else ssl.create_default_context()
        self.client_id = client_id if client_id is not None else default_client_id()
        self.protocol = protocol
        self.session_expiry = session_expiry
        #: The ``receive_maximum`` given; ``None``: it follows ``concurrency``.
        self.window = receive_maximum
        # ``missive run --workers`` shares the topics only through a shared subscription.
        self.shareable = group is not None
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.id_property = id_property
        self.max_deliveries = max_deliveries
        self.max_reconnect_delay = max_reconnect_delay
        names = ", ".join(self.subscriptions)
        # Never the URL: it may hold a password.
        self._where = f"{names} at {self.host}:{self.port} as client {self.client_id!r}"
        self._had_session = False
        # Unsubscribed from before disconnecting, for a round trip; never subscribed to
        # (a fixed filter: a client id may hold characters a filter may not).
        self._flush_filter = "missive/round-trip"

    @property
    def receive_maximum(self) -> int:
        """The MQTT 5 window: the one given, else 100 or twice ``concurrency``, the more."""
        return self.window if self.window is not None else max(100, 2 * self.concurrency)

    def transport(self) -> MQTTTransport:
        """A transport on this adapter's broker, session and topics, for :meth:`run`."""
        return MQTTTransport(self)

    def create_session(self) -> None:
        """Connect once, subscribe and disconnect: from now on the broker keeps the
        messages published to the topics for this client id, as if the worker had run.

        Call it where you would declare a queue, before publishers start. Messages already
        in the session are left unacknowledged (they come at the next run).

        :raises Exception: what :meth:`run` would stop with (a refusal), or the
            connection error.
        """
        transport = self.transport()
        try:
            transport.connect()
        finally:
            transport.close()

    def _session_found(self, present: bool) -> None:
        """Told on each connection whether the broker still had this client's session."""
        if not present and self._had_session:
            logger.warning(
                "the broker had no session for client %r any more (it expired, or the "
                "broker restarted without persistence): messages published while it was "
                "disconnected were not kept",
                self.client_id,
            )
        elif not present:
            logger.info(
                "new session for client %r: the broker keeps messages for it from now on",
                self.client_id,
            )
        self._had_session = True

    def _fault(self, exc: BaseException) -> Fault:
        return mqtt_fault(exc)
