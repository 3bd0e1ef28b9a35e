"""The broker side of ``bench/concurrency.py``: fill a run's queue, check it, delete it.

Each library's messages are published the way that library publishes them, before
its consumer starts: Missive's as plain bodies (``basic_publish``, ``XADD data``),
Dramatiq's through a Dramatiq broker (its message encoding, its queues), FastStream's
through a FastStream broker (its headers on RabbitMQ, its envelope in a stream).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pika
import redis
from concurrency_consumers import (
    AMQP_URL,
    GROUP,
    REDIS_URL,
    Spec,
    dramatiq_actor,
    dramatiq_broker,
    dramatiq_queue,
)

#: Every message's body: a small JSON document.
BODY = b'{"label": "sign-in", "user": "user-00000001", "amount": 42}'


def fill(spec: Spec) -> None:
    """Create the run's queue or stream and publish ``spec.count`` messages to it."""
    if spec.library == "dramatiq":
        _fill_dramatiq(spec)
    elif spec.broker == "rabbitmq":
        _declare(spec.name)
        if spec.library == "faststream":
            asyncio.run(_publish_faststream(spec))
        else:
            with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
                channel = connection.channel()
                for _ in range(spec.count):
                    channel.basic_publish("", spec.name, BODY)
    elif spec.library == "faststream":
        asyncio.run(_publish_faststream(spec))
        _create_group(spec.name)
    else:
        client = redis.Redis.from_url(REDIS_URL)
        with client.pipeline(transaction=False) as pipe:
            for _ in range(spec.count):
                pipe.xadd(spec.name, {"data": BODY})
            pipe.execute()
        client.close()
        _create_group(spec.name)
    _wait_until_queued(spec)


def unsettled(spec: Spec) -> int:
    """How many of the run's messages were not acked (0 after a good run).

    Checked once the consumer's process has ended: on RabbitMQ, messages it had not
    acked are back in the queue by then.
    """
    if spec.broker == "rabbitmq":
        names = [spec.name] + ([f"{spec.name}.XQ"] if spec.library == "dramatiq" else [])
        return sum(_queue_length(name) for name in names)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        if spec.library == "dramatiq":
            prefix = f"{spec.name}:{dramatiq_queue(spec)}"
            # Dramatiq keeps each message in a hash until it is acked (or dead-lettered).
            return int(client.hlen(f"{prefix}.msgs")) + int(client.hlen(f"{prefix}.XQ.msgs"))
        group = next(g for g in client.xinfo_groups(spec.name) if g["name"] == GROUP.encode())
        last = group["last-delivered-id"].decode()
        undelivered = len(client.xrange(spec.name, min=f"({last}") or [])
        return int(group["pending"]) + undelivered
    finally:
        client.close()


def delete(spec: Spec) -> None:
    """Delete everything the run created on its broker."""
    if spec.broker == "rabbitmq":
        with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
            names = [spec.name]
            if spec.library == "dramatiq":
                names += [f"{spec.name}.DQ", f"{spec.name}.XQ"]
            for name in names:
                channel = connection.channel()
                channel.queue_delete(name)
        return
    client = redis.Redis.from_url(REDIS_URL)
    try:
        if spec.library == "dramatiq":
            keys = list(client.scan_iter(match=f"{spec.name}:*", count=1000))
            if keys:
                client.delete(*keys)
        else:
            client.delete(spec.name)
    finally:
        client.close()


def _declare(queue: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
        connection.channel().queue_declare(queue, durable=True)


def _queue_length(queue: str) -> int:
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
        frame = connection.channel().queue_declare(queue, passive=True)
        return int(frame.method.message_count)


def _create_group(stream: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.xgroup_create(stream, GROUP, id="0")
    client.close()


def _fill_dramatiq(spec: Spec) -> None:
    broker = dramatiq_broker(spec)
    actor = dramatiq_actor(broker, spec)
    try:
        for _ in range(spec.count):
            actor.send()
    finally:
        broker.close()


async def _publish_faststream(spec: Spec) -> None:
    broker: Any
    if spec.broker == "rabbitmq":
        from faststream.rabbit import RabbitBroker

        broker = RabbitBroker(AMQP_URL, logger=None)
        target: dict[str, str] = {"queue": spec.name}
    else:
        from faststream.redis import RedisBroker

        broker = RedisBroker(REDIS_URL, logger=None)  # type: ignore[arg-type]
        target = {"stream": spec.name}
    async with broker:
        await broker.connect()
        # RabbitMQ: a few hundred at a time, as publisher confirms are slow one by one;
        # Redis: one at a time, as concurrent ones each take a connection of the pool.
        size = 200 if spec.broker == "rabbitmq" else 1
        sent = 0
        while sent < spec.count:
            chunk = min(size, spec.count - sent)
            await asyncio.gather(*(broker.publish(BODY, **target) for _ in range(chunk)))
            sent += chunk


def _wait_until_queued(spec: Spec) -> None:
    """Wait until the broker holds all ``spec.count`` messages (RabbitMQ queues lazily)."""
    if spec.broker != "rabbitmq":
        return
    deadline = time.monotonic() + 60
    while _queue_length(spec.name) < spec.count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"queue {spec.name} did not reach {spec.count} messages")
        time.sleep(0.05)
