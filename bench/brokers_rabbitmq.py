"""RabbitMQ consume throughput: raw pika, Missive's RabbitMQAdapter and FastStream.

The baseline, "raw pika", acks each message as it is handled; Missive coalesces its
acks into one multiple ack per ``prefetch // 2`` messages (or fewer, when it runs out
of received messages), so "pika batched", raw pika acking the same way, is shown too.

Each run pre-publishes N JSON messages of about 100 bytes to a fresh queue, then times
one consumer from connecting to closing its connection once the last message is
acked: consume, decode the JSON, ack each message, with the same prefetch for all.
Runs are interleaved (pika, Missive, FastStream, then Missive, FastStream, pika...)
and the medians printed with each one's ratio to raw pika (1.0 = as fast as raw pika).

    python bench/brokers_rabbitmq.py [--messages 20000] [--repeat 5] [--prefetch 100]

A combined ``bench/brokers.py`` can import :data:`RUNNERS`, :func:`fill` and
:func:`measure`. Needs RabbitMQ on ``AMQP_URL`` (default: local guest/guest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika

import missive
from missive.adapters.rabbitmq import RabbitMQAdapter

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
MESSAGES = 20_000
PREFETCH = 100
REPEAT = 5

#: ``runner(queue, messages, prefetch) -> seconds`` for each contender.
Runner = Callable[[str, int, int], float]


def make_bodies(count: int) -> list[bytes]:
    """``count`` JSON documents of about 100 bytes each."""
    return [
        json.dumps(
            {"label": "sign-in", "user": f"user-{i:08d}", "amount": i % 97, "ok": True, "n": i}
        ).encode()
        for i in range(count)
    ]


def fill(queue: str, count: int) -> None:
    """Declare ``queue`` and publish ``count`` messages to it; return once all are queued."""
    with pika.BlockingConnection(pika.URLParameters(URL)) as connection:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        for body in make_bodies(count):
            channel.basic_publish("", queue, body)
        deadline = time.monotonic() + 60
        while channel.queue_declare(queue, passive=True).method.message_count < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"queue {queue} did not reach {count} messages")
            time.sleep(0.05)


def delete(queue: str) -> int:
    """Delete ``queue``; return how many messages it still held (0 after a full run)."""
    with pika.BlockingConnection(pika.URLParameters(URL)) as connection:
        frame = connection.channel().queue_delete(queue)
        return int(frame.method.message_count)


def raw_pika(queue: str, count: int, prefetch: int) -> float:
    """A plain pika consumer: BlockingConnection, basic_qos, json.loads, ack each."""
    started = time.perf_counter()
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    handled = 0

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal handled
        json.loads(body)
        ch.basic_ack(method.delivery_tag)
        handled += 1
        if handled == count:
            ch.stop_consuming()

    channel.basic_consume(queue, on_message)
    channel.start_consuming()
    connection.close()
    return time.perf_counter() - started


def raw_pika_batched(queue: str, count: int, prefetch: int) -> float:
    """Raw pika acking like Missive does: one multiple ack per ``prefetch // 2`` messages."""
    started = time.perf_counter()
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    every = max(1, prefetch // 2)
    handled = 0

    def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal handled
        json.loads(body)
        handled += 1
        if handled % every == 0 or handled == count:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if handled == count:
            ch.stop_consuming()

    channel.basic_consume(queue, on_message)
    channel.start_consuming()
    connection.close()
    return time.perf_counter() - started


def missive_adapter(queue: str, count: int, prefetch: int) -> float:
    """Missive's RabbitMQAdapter with a JSONMessage handler that decodes and acks."""
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    handled = 0
    adapter = RabbitMQAdapter(missive.JSONMessage, processor, queue, url=URL, prefetch=prefetch)

    @processor.handle_for(lambda m: True)
    def handle(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        nonlocal handled
        message.get_json()
        ctx.ack()
        handled += 1
        if handled == count:
            adapter.stop()

    started = time.perf_counter()
    adapter.run()
    return time.perf_counter() - started


def faststream(queue: str, count: int, prefetch: int) -> float:
    """FastStream's RabbitBroker (aio-pika) with a subscriber taking the decoded JSON."""
    from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

    async def main() -> float:
        broker = RabbitBroker(URL, logger=None)
        done = asyncio.Event()
        handled = 0

        @broker.subscriber(
            RabbitQueue(queue, declare=False), channel=Channel(prefetch_count=prefetch)
        )
        async def handle(body: dict[str, Any]) -> None:
            nonlocal handled
            handled += 1
            if handled == count:
                done.set()

        started = time.perf_counter()
        await broker.start()
        await done.wait()
        await broker.stop()
        return time.perf_counter() - started

    return asyncio.run(main())


RUNNERS: dict[str, Runner] = {
    "raw pika": raw_pika,
    "missive": missive_adapter,
    "faststream": faststream,
    "pika batched": raw_pika_batched,
}


def measure(runner: Runner, count: int, prefetch: int) -> float:
    """Time ``runner`` on a fresh queue of ``count`` messages; fail if any is left."""
    queue = f"missive-bench-{uuid.uuid4().hex[:12]}"
    fill(queue, count)
    try:
        seconds = runner(queue, count, prefetch)
    finally:
        left = delete(queue)
    if left:
        raise RuntimeError(f"{left} messages were left unacked in {queue}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--repeat", type=int, default=REPEAT)
    parser.add_argument("--prefetch", type=int, default=PREFETCH)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in RUNNERS}
    names = list(RUNNERS)
    for repetition in range(args.repeat):
        # Interleaved, and each repetition starts with the next contender.
        shift = repetition % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(measure(RUNNERS[name], args.messages, args.prefetch))
    baseline = statistics.median(times["raw pika"])
    print(
        f"{args.messages} messages of ~100 bytes, prefetch {args.prefetch}, "
        f"median of {args.repeat} interleaved runs"
    )
    print(f"{'consumer':<13} {'median s':>9} {'msg/s':>9} {'vs raw pika':>12}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(
            f"{name:<13} {median:>9.3f} {args.messages / median:>9.0f} {baseline / median:>12.2f}"
        )


if __name__ == "__main__":
    main()
