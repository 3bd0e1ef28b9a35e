"""What a delayed retry's copy carries on RabbitMQ: its properties and headers on the
way to a delay queue, and the row it becomes on the way back.

Only the RabbitMQ transport and its delay ladder use this module, once
:mod:`missive.adapters.rabbitmq` found pika.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pika
from pika.spec import Basic, BasicProperties

from missive.attempts import FIRST_ATTEMPT, HISTORY, RETRIES, read_first_attempt, read_retries
from missive.message import Message

__all__ = ["copy_properties", "copy_row", "original_headers"]

#: Between a work queue's name and a level's seconds in its delay queue's name.
SUFFIX = ".missive-delay."
#: Headers that carry where the message was first published: a copy back from a delay
#: queue has exchange ``""`` and the work queue as its routing key.
EXCHANGE = "x-missive-exchange"
ROUTING_KEY = "x-missive-routing-key"
#: Set on a copy whose ``message_id`` Missive gave (the publisher set none).
OWN_ID = "x-missive-own-id"
# Headers RabbitMQ adds on the way through a delay queue, or that Missive writes anew.
_DROPPED = frozenset({RETRIES, FIRST_ATTEMPT, HISTORY, EXCHANGE, ROUTING_KEY, OWN_ID})
_FIRST_DEATH = ("x-first-death-queue", "x-first-death-reason", "x-first-death-exchange")
_LAST_DEATH = ("x-last-death-queue", "x-last-death-reason", "x-last-death-exchange")


def copy_row(
    queue: str,
    method: Basic.Deliver,
    properties: BasicProperties,
    headers: Mapping[str, Any],
) -> tuple[dict[str, Any], int | None, bool]:
    """A copy back from a delay queue: ``(attributes, delivery count, retried)``.

    A fresh copy (not redelivered) counts the deliveries before it, the first and
    one per delayed retry, and came back cleanly (``retried``). A copy redelivered
    after a crash is a suspect as any redelivery: counted by a quorum queue, else
    not (``None``).
    """
    retries = read_retries(headers)
    redelivered = method.redelivered
    count: int | None = retries + 1
    if redelivered:
        previous = headers.get("x-delivery-count")
        count = retries + 1 + previous if isinstance(previous, int) else None
    publisher_id = properties.message_id
    attributes = {
        "queue": queue,
        "exchange": headers.get(EXCHANGE, method.exchange),
        "routing_key": headers.get(ROUTING_KEY, method.routing_key),
        "redelivered": redelivered,
        "delivery_count": count,
        "headers": original_headers(headers, queue),
        "publisher_id": bool(publisher_id) and not headers.get(OWN_ID),
        "content_type": properties.content_type,
        "correlation_id": properties.correlation_id,
        "reply_to": properties.reply_to,
        "content_encoding": properties.content_encoding,
        "priority": properties.priority,
        "timestamp": properties.timestamp,
        "type": properties.type,
        "app_id": properties.app_id,
        RETRIES: retries,
        FIRST_ATTEMPT: read_first_attempt(headers),
        HISTORY: _history(headers.get(HISTORY)),
    }
    return attributes, count, not redelivered


def original_headers(headers: Mapping[str, Any] | None, queue: str) -> dict[str, Any]:
    """``headers`` without what Missive and the trips through ``queue``'s delay queues
    added: the headers the publisher sent (a new dict)."""
    if not headers:
        return {}
    prefix = queue + SUFFIX
    clean = {
        name: value
        for name, value in headers.items()
        if name not in _DROPPED and name != "x-delivery-count"
    }
    deaths = clean.get("x-death")
    if isinstance(deaths, list):
        kept = [
            death
            for death in deaths
            if not (isinstance(death, Mapping) and str(death.get("queue", "")).startswith(prefix))
        ]
        if kept:
            clean["x-death"] = kept
        else:
            del clean["x-death"]
    for names in (_FIRST_DEATH, _LAST_DEATH):
        if str(clean.get(names[0], "")).startswith(prefix):
            for name in names:
                clean.pop(name, None)
    return clean


def copy_properties(
    properties: BasicProperties | None, message: Message, state: Mapping[str, Any]
) -> BasicProperties:
    """The properties of a retry's copy: the original's, its headers plus the attempt
    state, persistent, without a per-message TTL (which would cut the wait short) nor
    ``user_id`` (which RabbitMQ checks against the user publishing the copy)."""
    attributes = message.attributes
    headers = _encodable(original_headers(attributes.get("headers"), attributes["queue"]))
    headers[RETRIES] = int(state[RETRIES])
    first = state.get(FIRST_ATTEMPT)
    if first is not None:
        headers[FIRST_ATTEMPT] = repr(float(first))  # AMQP tables have doubles, pika not
    headers[HISTORY] = json.dumps(state.get(HISTORY, []), separators=(",", ":"))
    headers[EXCHANGE] = attributes.get("exchange") or ""
    headers[ROUTING_KEY] = attributes.get("routing_key") or ""
    if properties is None:  # not kept (the ladder came after the delivery): from attributes
        properties = pika.BasicProperties(
            content_type=attributes.get("content_type"),
            correlation_id=attributes.get("correlation_id"),
            reply_to=attributes.get("reply_to"),
            content_encoding=attributes.get("content_encoding"),
            priority=attributes.get("priority"),
            timestamp=attributes.get("timestamp"),
            type=attributes.get("type"),
            app_id=attributes.get("app_id"),
            message_id=message.message_id.decode() if attributes.get("publisher_id") else None,
        )
    message_id = properties.message_id
    if not message_id:  # keep the id Missive gave, so that the retries share it
        message_id = message.message_id.decode("utf-8", "replace")
        headers[OWN_ID] = True
    elif not attributes.get("publisher_id", True):
        headers[OWN_ID] = True
    return pika.BasicProperties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=headers,
        delivery_mode=pika.DeliveryMode.Persistent,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        message_id=message_id,
        timestamp=properties.timestamp,
        type=properties.type,
        app_id=properties.app_id,
        cluster_id=properties.cluster_id,
    )


def _encodable(value: Any) -> Any:
    """``value`` with its floats as text: pika decodes a header's double (another
    client's) as a float, but cannot encode one."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {key: _encodable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_encodable(item) for item in value]
    return value


def _history(value: Any) -> list[Any]:
    """The history header (JSON text) as a list; empty if unreadable."""
    if isinstance(value, bytes | str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return list(value) if isinstance(value, list) else []
