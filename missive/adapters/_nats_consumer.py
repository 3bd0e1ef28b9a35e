"""The JetStream durable pull consumer: bind to it or create it; read a pull's status.

Private: used by ``_nats_jetstream_transport``. The pull protocol itself is
nats-py-free: a pull request is a JSON ``{"batch": n, "expires": ns}`` published to
``$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`` with our inbox as reply; the server
sends up to ``n`` messages there, and a status message (no reply subject, a
``Status`` header) when the request ends short: 404 nothing now, 408 expired, 409
conflict (consumer deleted, limits exceeded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from queue import SimpleQueue
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from nats.js.manager import JetStreamManager

__all__ = [
    "ConsumerGoneError",
    "ConsumerMisconfiguredError",
    "ensure_consumer",
    "inbox_callback",
    "keep_in_progress",
    "pull_request",
]

#: 409 descriptions after which a new pull cannot succeed: the configuration is wrong.
_FATAL_CONFLICTS = ("Exceeded MaxRequestBatch", "Exceeded MaxRequestMaxBytes", "push based")


class ConsumerGoneError(Exception):
    """The server says the consumer was deleted while we pulled: reconnect (and
    create it again, unless bound)."""


class ConsumerMisconfiguredError(Exception):
    """The consumer cannot be pulled from with explicit acks: fix its configuration."""


async def ensure_consumer(
    jsm: JetStreamManager,
    stream: str,
    durable: str,
    filter_subject: str | None,
    bind: bool,
    ack_wait: float,
) -> api.ConsumerInfo:
    """The durable consumer ``durable`` on ``stream``: found, or (unless ``bind``) created
    with explicit acks, ``ack_wait``, no delivery limit and every message of the stream.

    :raises nats.js.errors.NotFoundError: the stream is missing, or (``bind``) the consumer.
    :raises ConsumerMisconfiguredError: it is a push consumer or does not ack explicitly.
    """
    try:
        info: api.ConsumerInfo = await jsm.consumer_info(stream, durable)
    except nats.js.errors.NotFoundError:
        if bind:
            raise
        await jsm.stream_info(stream)  # a missing stream raises NotFoundError here
        config = api.ConsumerConfig(
            name=durable,
            durable_name=durable,
            filter_subject=filter_subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            # Missive's max_deliveries dead-letters a poison message; a server limit
            # would stop delivering it silently, so none is set here.
            max_deliver=-1,
            deliver_policy=api.DeliverPolicy.ALL,
        )
        info = await jsm.add_consumer(stream, config)
    config = info.config
    if config.deliver_subject:
        raise ConsumerMisconfiguredError(
            f"consumer {durable!r} on stream {stream!r} is a push consumer "
            f"(deliver_subject set): Missive needs a pull consumer"
        )
    if config.ack_policy not in (None, api.AckPolicy.EXPLICIT):
        raise ConsumerMisconfiguredError(
            f"consumer {durable!r} on stream {stream!r} has ack_policy "
            f"{config.ack_policy!s}: Missive acks each message, so it needs 'explicit'"
        )
    return info


def pull_request(batch: int, expires: float) -> bytes:
    """The body of a pull request for ``batch`` messages, expiring after ``expires`` s."""
    return json.dumps({"batch": batch, "expires": int(expires * 1e9)}).encode()


def pull_status(headers: dict[str, str] | None) -> Any:
    """What a status message ends: ``None`` (a heartbeat: nothing), ``True`` (the pull
    is over: ask again), or an exception to raise."""
    headers = headers or {}
    code = headers.get("Status", "")
    description = headers.get("Description", "")
    if code in ("404", "408"):
        return True
    if code == "409":
        if "Consumer Deleted" in description:
            return ConsumerGoneError("the JetStream consumer was deleted")
        if any(text in description for text in _FATAL_CONFLICTS):
            return ConsumerMisconfiguredError(f"the pull request was refused: {description}")
        return True  # leadership change, MaxWaiting exceeded...: ask again
    if code == "100":
        return None
    if code == "503":
        return nats.errors.NoRespondersError()
    return True


def inbox_callback(
    queue: SimpleQueue[Any], unsettled: dict[str, float], ended: object
) -> Callable[[Msg], Awaitable[None]]:
    """The inbox subscription's callback (on the event loop): queue each message, noting
    it as held in ``unsettled``; queue ``ended`` (or the error) when a pull ends short."""
    clock = time.monotonic

    async def on_message(msg: Msg) -> None:
        if msg.reply:
            unsettled[msg.reply] = clock()
            queue.put(msg)
            return
        status = pull_status(msg.headers)  # a status: no reply subject, a Status header
        if status is not None:
            queue.put(ended if status is True else status)

    return on_message


async def keep_in_progress(nc: Client, unsettled: dict[str, float], interval: float) -> None:
    """Every ``interval`` s, send ``+WPI`` for each message held that long since it came
    or was last marked: JetStream then waits ``ack_wait`` again before redelivering it."""
    while True:
        await asyncio.sleep(interval / 2)
        now = time.monotonic()
        due = [reply for reply, since in unsettled.items() if now - since >= interval]
        for reply in due:
            unsettled[reply] = now
            with contextlib.suppress(nats.errors.Error):
                await nc.publish(reply, b"+WPI")
