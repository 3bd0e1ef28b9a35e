"""What the MQTT transport says to the broker on connecting, and what its answers mean.

Private: only imported once :mod:`missive.adapters.mqtt` found paho-mqtt.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.client import MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from missive.message import Message
from missive.runtime.transport import Fault

if TYPE_CHECKING:
    from missive.adapters.mqtt import MQTTAdapter

__all__ = [
    "ConnectionLostError",
    "RefusedError",
    "connect_properties",
    "connection_lost",
    "content_key",
    "mqtt_fault",
    "new_client",
    "parse_url",
    "refused",
    "row_maker",
    "subscriptions",
    "warn_counted_by_content",
]

logger = logging.getLogger("missive.adapters.mqtt")

# CONNACK, SUBACK and DISCONNECT reason codes a new connection cannot fix (MQTT 5
# numbering; paho maps 3.1.1's return codes onto it): the configuration must change.
_FATAL_CODES = {
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x8A: "banned",
    0x8C: "bad authentication method",
    0x8F: "topic filter invalid",
    0x9E: "shared subscriptions not supported",
    0xA2: "wildcard subscriptions not supported",
}
_TAKEN_OVER = 0x8E


class ConnectionLostError(Exception):
    """The connection failed, or the broker closed it: reconnect."""


class RefusedError(Exception):
    """The broker refused the connection or a subscription for good, or granted QoS 0."""


def parse_url(url: str) -> tuple[str, int, str | None, str | None, bool]:
    """``mqtt://user:password@host:port`` or ``mqtts://...``: host, port, user, password, TLS."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ValueError(f"an MQTT URL starts with mqtt:// or mqtts://, not {parts.scheme!r}")
    tls = parts.scheme in ("mqtts", "ssl")
    port = parts.port or (8883 if tls else 1883)
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname or "127.0.0.1", port, user, password, tls


def new_client(adapter: MQTTAdapter[Any]) -> mqtt.Client:
    """A paho client for ``adapter``: its client id and protocol, manual acks, no
    reconnection of its own (the delivery loop reconnects), credentials and TLS."""
    v5 = adapter.protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=adapter.client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
        manual_ack=True,
        reconnect_on_failure=False,
    )
    if adapter.username is not None:
        client.username_pw_set(adapter.username, adapter.password)
    if adapter.tls is not None:
        client.tls_set_context(adapter.tls)
    return client


def connect_properties(adapter: MQTTAdapter[Any]) -> Properties:
    """MQTT 5 CONNECT properties: the session's expiry and how many unacked messages come."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = adapter.session_expiry
    properties.ReceiveMaximum = adapter.receive_maximum
    return properties


def subscriptions(adapter: MQTTAdapter[Any], v5: bool) -> list[tuple[str, Any]]:
    """The SUBSCRIBE's topic filters, each at QoS 1.

    MQTT 5: retained messages only when the subscription is new, so that a reconnection
    does not bring them again; 3.1.1 has no such option: they come on each connection.
    """
    if v5:
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        return [(topic, options) for topic in adapter.subscriptions]
    return [(topic, 1) for topic in adapter.subscriptions]


def row_maker(adapter: MQTTAdapter[Any]) -> Callable[[MQTTMessage], tuple[Any, ...]]:
    """The function that turns a PUBLISH into the arguments of ``Batch.add``, for one
    connection.

    The publisher's id, if any, is the ``id_property`` user property; the handle is
    the packet id (none for QoS 0: nothing to ack). A redelivery (DUP) has no count,
    but only among the first ``receive_maximum`` messages of the connection: the
    broker resends first what was in flight on the previous one, which is never more
    than that window, and Mosquitto also marks DUP whatever else a resumed session
    held, never sent. Those are first deliveries (count 1), so that they do not each
    run alone and get counted in the DLQ as suspects of a crash.
    """
    v5, id_property, client_id = adapter.protocol == "5", adapter.id_property, adapter.client_id
    resent = adapter.receive_maximum if v5 else 65535  # 3.1.1: the broker's own window
    seen = 0

    def row(message: MQTTMessage) -> tuple[Any, ...]:
        nonlocal seen
        seen += 1
        properties = message.properties if v5 else None
        pairs: list[tuple[str, str]] = getattr(properties, "UserProperty", None) or []
        headers = dict(pairs)
        publisher_id = headers.get(id_property) if id_property else None
        count = None if message.dup and seen <= resent else 1
        payload = message.payload
        attributes = {
            "topic": message.topic,
            "qos": message.qos,
            "retain": bool(message.retain),
            "dup": bool(message.dup),
            "mid": message.mid,
            "client_id": client_id,
            "delivery_count": count,
            "publisher_id": bool(publisher_id),
            "headers": headers,
            "user_properties": [list(pair) for pair in pairs],
            "content_type": getattr(properties, "ContentType", None),
            "response_topic": getattr(properties, "ResponseTopic", None),
            "correlation_data": getattr(properties, "CorrelationData", None),
        }
        return (
            payload if payload.__class__ is bytes else bytes(payload),
            publisher_id.encode("utf-8") if publisher_id else None,
            attributes,
            message.mid if message.qos else None,
            count,
        )

    return row


def refused(code: ReasonCode, what: str) -> Exception:
    """The error for a refusal: :class:`RefusedError` if retrying cannot help."""
    if code.value in _FATAL_CODES or (not code.is_failure and code.value < 1):
        why = _FATAL_CODES.get(code.value, "granted QoS 0 only: messages could not be acked")
        return RefusedError(f"the broker {what}: {why} (reason code {code.value:#04x})")
    return ConnectionLostError(f"the broker {what}: {code.getName()} ({code.value:#04x})")


def connection_lost(code: Any, client_id: str) -> ConnectionLostError:
    """The error for a connection the broker closed or that failed, from its reason code."""
    value = getattr(code, "value", None)
    name = code.getName() if isinstance(code, ReasonCode) else str(code)
    if value == _TAKEN_OVER:
        return ConnectionLostError(
            f"session taken over: another client connected with client id {client_id!r} "
            "(two workers with one client id disconnect each other in turn: give each its own)"
        )
    return ConnectionLostError(f"connection closed ({name})")


def content_key(message: Message) -> bytes:
    """What a redelivery without a publisher id is counted under: topic and body."""
    digest = hashlib.sha256(f"{message.attributes['topic']}\0".encode())
    digest.update(message.raw_data)
    return b"mqtt-content:" + digest.hexdigest().encode()


def warn_counted_by_content(message: Message, id_property: str | None) -> None:
    """Say once that ``message``'s redeliveries are counted by content."""
    logger.warning(
        "message %r on topic %r has no %r user property: its redeliveries are counted by "
        "a hash of its topic and body, so identical messages share one count and "
        "max_deliveries is approximate for them",
        message.message_id,
        message.attributes["topic"],
        id_property,
    )


def mqtt_fault(exc: BaseException) -> Fault:
    """RECONNECT for a lost or refused connection, FATAL for a refusal or any other error."""
    if isinstance(exc, RefusedError | ssl.SSLCertVerificationError):
        return Fault.FATAL
    if isinstance(exc, ConnectionLostError | OSError):
        return Fault.RECONNECT
    return Fault.FATAL
