"""``missive dlq replay --to-broker``: dead letters published again where they came from.

Each dead letter goes back to the broker it was consumed from, as its adapter
stored it (``record.attributes``): a RabbitMQ exchange and routing key (or its
queue, through the default exchange), a Redis stream for its consumer group, a
NATS JetStream subject, an MQTT topic. It keeps its bytes, id, headers and the
properties stored, and gains the header ``x-missive-replays`` (one more at each
replay). It is deleted from the DLQ only once the broker confirmed it (RabbitMQ
publisher confirms, the reply to Redis ``XADD``, JetStream's PubAck, MQTT's
PUBACK); deletes are committed in batches, as for an in-process replay, so a crash
publishes again at most one batch (at least once).

The broker is the one of ``--broker-url`` (else ``$MISSIVE_BROKER_URL``), told by
its scheme. A letter from elsewhere (stdin, HTTP, another broker) is kept and
reported. Each broker's publisher is a module of its own, imported only when used.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

from missive.cli._common import CLIError, format_id, redact
from missive.cli._output import Output, safe_text
from missive.cli._replay import STOPPED
from missive.cli._replay_loop import Deletes, RefusedError, Replay, Stop, summarise
from missive.cli._replay_pace import RateLimit, ReplayProgress, on_terminal
from missive.cli._replay_select import chosen_ids, letters, stored
from missive.dlq import DeadLetter, DeadLetterStore
from missive.dlq._codec import OTHER_PAYLOAD
from missive.message import Message

__all__ = ["REPLAYS", "URL_VARIABLE", "Publisher", "origin", "replay_to_broker", "where"]

#: The environment variable read when ``--broker-url`` is not given.
URL_VARIABLE = "MISSIVE_BROKER_URL"
#: The header (or Redis field) counting how many times a letter was replayed.
REPLAYS = "x-missive-replays"

# Broker (the kind of adapter a letter came from) by URL scheme.
_SCHEMES = {
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "redis": "redis",
    "rediss": "redis",
    "nats": "nats",
    "tls": "nats",
    "mqtt": "mqtt",
    "mqtts": "mqtt",
}
_NAMES = {
    "rabbitmq": "RabbitMQ",
    "redis": "Redis Streams",
    "nats": "NATS JetStream",
    "mqtt": "MQTT",
}
_MODULES = {
    "rabbitmq": "_republish_rabbitmq",
    "redis": "_republish_redis",
    "nats": "_republish_nats",
    "mqtt": "_republish_mqtt",
}


class Publisher(Protocol):
    """Publishes dead letters to one broker, each confirmed before :meth:`publish`
    returns. Not thread-safe; one per replay."""

    def publish(self, record: DeadLetter, replays: int) -> None:
        """Publish ``record``'s message where it came from, with ``replays`` as its
        replay count; return once the broker confirmed it.

        :raises RefusedError: the broker refused it (unroutable, gone...): keep it.
        :raises CLIError: the connection is lost; the replay cannot go on.
        """

    def close(self) -> None:
        """Close the connection."""


def origin(attributes: Mapping[str, Any]) -> str:
    """The broker a letter came from (``rabbitmq``, ``redis``, ``nats``, ``mqtt``).

    :raises RefusedError: it came from somewhere a replay cannot publish to.
    """
    if "queue" in attributes and "routing_key" in attributes:
        return "rabbitmq"
    if "stream" in attributes and "group" in attributes:
        return "redis"
    if "subject" in attributes and "sequence" in attributes:
        return "nats"
    if "topic" in attributes:
        return "mqtt"
    if "line" in attributes:
        source = "stdin"
    elif "method" in attributes and "path" in attributes:
        source = "HTTP"
    elif "channel" in attributes:
        source = "Redis pub/sub, which confirms nothing"
    elif "subject" in attributes:
        source = "NATS core, which confirms nothing"
    else:
        source = "no broker it names"
    raise RefusedError(f"cannot be sent to a broker: it came from {source}")


def where(attributes: Mapping[str, Any]) -> str:
    """Where a letter would be published, in words.

    :raises RefusedError: as :func:`origin`.
    """
    kind = origin(attributes)
    if kind == "rabbitmq":
        exchange = attributes.get("exchange") or ""
        if not exchange:
            return f"RabbitMQ queue {attributes['queue']!r} (default exchange)"
        return f"RabbitMQ exchange {exchange!r}, routing key {attributes.get('routing_key')!r}"
    if kind == "redis":
        return f"Redis stream {attributes['stream']!r}, group {attributes['group']!r}"
    if kind == "nats":
        return f"NATS subject {attributes['subject']!r}"
    return f"MQTT topic {attributes['topic']!r}"


def replays(record: DeadLetter) -> int:
    """How many times ``record`` was replayed before, from its stored header or field."""
    attributes = record.attributes
    headers = attributes.get("headers")
    value = headers.get(REPLAYS) if isinstance(headers, Mapping) else None
    if value is None:
        value = attributes.get(REPLAYS)  # Redis: read back from the entry as an attribute
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        return max(int(value), 0) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def original_id(record: DeadLetter) -> bytes:
    """The message's own id: the DLQ's key without the suffix it adds to another
    payload under a reused id."""
    message_id = record.message_id
    cut = message_id.find(OTHER_PAYLOAD)
    return message_id if cut < 0 else message_id[:cut]


class ToBroker:
    """The replay's destination: the broker of ``url``."""

    done = "sent and confirmed"

    def __init__(self, kind: str, publisher: Publisher) -> None:
        self.kind = kind
        self.publisher = publisher

    def send(self, record: DeadLetter, message: Message) -> str:
        """Publish ``record`` and wait for the broker's confirmation: ``"acked"``."""
        came_from = origin(record.attributes)
        if came_from != self.kind:
            raise RefusedError(
                f"it came from {_NAMES[came_from]}, not the {_NAMES[self.kind]} of --broker-url"
            )
        self.publisher.publish(record, replays(record) + 1)
        return "acked"


def broker_url(args: argparse.Namespace) -> tuple[str, str]:
    """The broker URL given and its kind of broker.

    :raises CLIError: if none is given or its scheme is not a broker's.
    """
    url = args.broker_url or os.environ.get(URL_VARIABLE, "")
    if not url:
        raise CLIError(f"--to-broker needs a broker: pass --broker-url URL or set {URL_VARIABLE}")
    scheme = urlsplit(url).scheme.lower()
    kind = _SCHEMES.get(scheme)
    if kind is None:
        known = ", ".join(f"{name}://" for name in _SCHEMES)
        raise CLIError(f"--broker-url {redact(url)!r}: not a broker's URL scheme (one of {known})")
    return url, kind


def connect(url: str, kind: str, args: argparse.Namespace) -> Publisher:
    """A publisher connected to ``url``, its module imported now (a missing extra is
    reported then)."""
    module = importlib.import_module(f"missive.cli.{_MODULES[kind]}")
    publisher: Publisher = module.connect(url, args)
    return publisher


def replay_to_broker(store: DeadLetterStore, args: argparse.Namespace, out: Output) -> int:
    """Run ``replay --to-broker`` on an open DLQ; the exit status."""
    url, kind = broker_url(args)
    if args.dry_run:
        return _dry_run(store, chosen_ids(store, args), out)
    total, records, gone = letters(store, args)
    if not total:
        out.note("no dead letters to replay")
        return 0
    publisher = connect(url, kind, args)
    limit = RateLimit(args.rate) if args.rate is not None else None
    try:
        with Stop().installed() as stop:
            replay = Replay(
                ToBroker(kind, publisher),
                Deletes(store, batch=args.batch),
                lambda record: record.message,
                out,
                verbose=args.verbose,
                limit=limit,
                stop=stop,
            )
            if on_terminal(out.stderr):
                out.progress = ReplayProgress(out.stderr, total)
            try:
                replay.run(records())
            finally:
                out.end_progress()
    finally:
        publisher.close()
    return _summary(replay, total, gone(), stop, redact(url), out)


def _summary(replay: Replay, total: int, gone: int, stop: Stop, url: str, out: Output) -> int:
    counts = replay.counts
    outcomes = [f"{counts['acked']} confirmed and removed", f"{counts['refused']} not sent (kept)"]
    if summarise(
        replay,
        total,
        gone,
        stop,
        out,
        outcomes,
        did="sent",
        do="send",
        removed="confirmed",
        where=f" to {url}",
    ):
        return STOPPED
    return 1 if counts["refused"] else 0


def _dry_run(store: DeadLetterStore, ids: list[bytes], out: Output) -> int:
    rows = []
    for record in stored(store, ids):
        message_id = record.message_id
        try:
            text, colour = where(record.attributes), "green"
        except RefusedError as exc:
            text, colour = str(exc), "red"
        result = "send" if colour == "green" else "keep"
        rows.append([safe_text(format_id(message_id)), out.style(result, colour), safe_text(text)])
    out.table(["ID", "RESULT", "DESTINATION"], rows, wide=2)
    out.note(f"dry run: {len(rows)} dead letter(s) checked, none sent")
    return 0
