"""Redis throughput: the Missive adapters against raw redis-py and FastStream.

Each run consumes N JSON messages of about 100 bytes, decodes each and acks it:

* **Streams**: N entries are published beforehand; each contender reads them in a
  consumer group, 100 at a time (raw redis-py: XREADGROUP COUNT 100, ``json.loads``
  of each entry, one XACK per batch). Timed from the first message handled to the
  last, so that connecting, creating the group and shutting down (a few round trips,
  each one slow on a loaded VM) count for none of them.
* **Pub/Sub**: a separate process publishes N messages (pipelined) once the
  subscriber is ready; each contender receives and decodes them (raw redis-py:
  ``PubSub.listen()`` and ``json.loads``). Timed from the go to the last message;
  a contender that misses messages stalls, is stopped after 10 s and reports them.

The contenders run interleaved (raw, Missive, FastStream, then Missive, FastStream,
raw, ...: each repetition starts with the next one) on fresh keys
and the medians are printed with their ratio to raw (raw time / contender time, so
1.0 is as fast as raw). A last Pub/Sub run checks that the Missive adapter loses
nothing in a burst of ``--burst`` messages.

    python bench/brokers_redis.py [--messages 20000] [--repeat 5] [--burst 200000]

``bench/brokers.py`` imports :func:`run_streams`, :func:`run_pubsub`, :func:`burst`
and :func:`table`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from _compare import Clock, Result, Runs, interleave, payloads, table

import missive
from missive.adapters.redis import RedisPubSubAdapter, RedisStreamsAdapter

URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
BATCH = 100
STALL = 10.0  # seconds without a message after which a Pub/Sub run counts the rest lost

def _key() -> str:
    return f"missive-bench-{uuid.uuid4().hex[:10]}"


# -- Streams ---------------------------------------------------------------------------


def _fill_stream(client: redis.Redis, count: int, field: str) -> tuple[str, str]:
    stream, group = _key(), "bench"
    with client.pipeline(transaction=False) as pipe:
        for body in payloads(count):
            pipe.xadd(stream, {field: body})
            if len(pipe) >= 1000:
                pipe.execute()
        pipe.execute()
    client.xgroup_create(stream, group, id="0")
    return stream, group


def streams_raw(client: redis.Redis, count: int) -> Result:
    """Raw redis-py: XREADGROUP COUNT 100, json.loads each, one XACK per batch."""
    stream, group = _fill_stream(client, count, "data")
    try:
        consumer = redis.Redis.from_url(URL)
        clock = Clock(count)
        while clock.handled < count:
            read: Any = consumer.xreadgroup(group, "raw", {stream: ">"}, count=BATCH, block=1000)
            if not read:
                break
            ids = []
            for entry_id, fields in read[0][1]:
                json.loads(fields[b"data"])
                ids.append(entry_id)
                clock.tick()
            consumer.xack(stream, group, *ids)
        consumer.close()
        return clock.result()
    finally:
        client.delete(stream)


def _json_processor(clock: Clock, done: Callable[[], None]) -> missive.Processor[Any]:
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def handle(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        message.get_json()
        ctx.ack()
        if clock.tick():
            done()

    return processor


def streams_missive(client: redis.Redis, count: int) -> Result:
    """RedisStreamsAdapter, batch_size=100, stopped by the handler of the last message."""
    stream, group = _fill_stream(client, count, "data")
    try:
        adapter: list[RedisStreamsAdapter[Any]] = []
        clock = Clock(count)
        processor = _json_processor(clock, lambda: adapter[0].stop())
        adapter.append(
            RedisStreamsAdapter(
                missive.JSONMessage,
                processor,
                stream,
                group=group,
                url=URL,
                batch_size=BATCH,
                block_ms=1000,
            )
        )
        adapter[0].run()
        return clock.result()
    finally:
        client.delete(stream)


def streams_faststream(client: redis.Redis, count: int) -> Result:
    """FastStream's RedisBroker, a StreamSub in the same group, 100 records a read."""
    from faststream.redis import RedisBroker, StreamSub

    stream, group = _fill_stream(client, count, "__data__")

    async def main() -> Result:
        broker = RedisBroker(URL, logger=None)  # type: ignore[arg-type]
        done = asyncio.Event()
        clock = Clock(count)

        @broker.subscriber(stream=StreamSub(stream, group=group, consumer="fs", max_records=BATCH))
        async def handle(body: dict[str, Any]) -> None:
            if clock.tick():
                done.set()

        await broker.start()
        try:
            await asyncio.wait_for(done.wait(), 120)
            return clock.result()
        finally:
            await broker.stop()

    try:
        return asyncio.run(main())
    finally:
        client.delete(stream)


# -- Pub/Sub ---------------------------------------------------------------------------


class _Publisher:
    """A separate process that publishes ``count`` messages to ``channel`` when told to."""

    def __init__(self, channel: str, count: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--publish", channel, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == b"ready\n"

    def go(self) -> float:
        assert self.process.stdin is not None
        start = time.perf_counter()
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()
        return start

    def wait(self) -> None:
        self.process.communicate(timeout=120)


def _publish_main(channel: str, count: int) -> None:
    client = redis.Redis.from_url(URL)
    bodies = payloads(count)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    with client.pipeline(transaction=False) as pipe:
        for body in bodies:
            pipe.publish(channel, body)
            if len(pipe) >= 1000:
                pipe.execute()
        pipe.execute()
    client.close()


def _watchdog(progress: Callable[[], int], stop: Callable[[], None], done: threading.Event) -> None:
    last, last_change = -1, time.monotonic()
    while not done.wait(0.5):
        now = progress()
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change > STALL:
            stop()
            return


def pubsub_raw(count: int) -> Result:
    """Raw redis-py: PubSub.listen() and json.loads of each message."""
    channel = _key()
    client = redis.Redis.from_url(URL)
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(channel)
    pubsub.get_message(timeout=5)  # the confirmation
    publisher = _Publisher(channel, count)
    handled = [0]
    done = threading.Event()
    threading.Thread(
        target=_watchdog, args=(lambda: handled[0], pubsub.unsubscribe, done), daemon=True
    ).start()
    start, cpu = publisher.go(), time.process_time()
    end = start
    for message in pubsub.listen():
        if message["type"] == "message":
            json.loads(message["data"])
            handled[0] += 1
            if handled[0] == count:
                end = time.perf_counter()
                break
    cpu = time.process_time() - cpu
    done.set()
    publisher.wait()
    pubsub.close()
    client.close()
    return end - start, handled[0], cpu


def pubsub_missive(count: int) -> Result:
    """RedisPubSubAdapter, run in this (main) thread, stopped after the last message."""
    channel = _key()
    adapter: list[RedisPubSubAdapter[Any]] = []
    end = [0.0, 0.0]

    def last() -> None:
        end[:] = [time.perf_counter(), time.process_time()]
        adapter[0].stop()

    clock = Clock(count)
    processor = _json_processor(clock, last)
    adapter.append(RedisPubSubAdapter(missive.JSONMessage, processor, channel, url=URL))
    publisher = _Publisher(channel, count)
    start = [0.0, 0.0]
    done = threading.Event()

    def go() -> None:
        assert adapter[0].wait_ready(30)
        start[:] = [publisher.go(), time.process_time()]
        _watchdog(lambda: clock.handled, adapter[0].stop, done)

    threading.Thread(target=go, daemon=True).start()
    adapter[0].run()
    done.set()
    publisher.wait()
    handled = clock.handled
    if handled != count:
        return float("nan"), handled, float("nan")
    return end[0] - start[0], handled, end[1] - start[1]


def pubsub_faststream(count: int) -> Result:
    """FastStream's RedisBroker subscribed to the channel, decoding the JSON bodies."""
    from faststream.redis import RedisBroker

    channel = _key()

    async def main() -> Result:
        broker = RedisBroker(URL, logger=None)  # type: ignore[arg-type]
        done = asyncio.Event()
        handled = [0]
        end = [0.0, 0.0]

        @broker.subscriber(channel)
        async def handle(body: dict[str, Any]) -> None:
            handled[0] += 1
            if handled[0] == count:
                end[:] = [time.perf_counter(), time.process_time()]
                done.set()

        await broker.start()
        publisher = _Publisher(channel, count)
        start, cpu = publisher.go(), time.process_time()
        last, last_change = -1, time.monotonic()
        try:
            while not done.is_set() and time.monotonic() - last_change < STALL:
                await asyncio.sleep(0.05)
                if handled[0] != last:
                    last, last_change = handled[0], time.monotonic()
        finally:
            await broker.stop()
            publisher.wait()
        if not done.is_set():
            return float("nan"), handled[0], float("nan")
        return end[0] - start, handled[0], end[1] - cpu

    return asyncio.run(main())


# -- Running and reporting ----------------------------------------------------------------


def run_streams(count: int = 20_000, repeat: int = 5) -> Runs:
    """(seconds, CPU seconds) per run of each Streams contender: raw, missive, faststream."""
    client = redis.Redis.from_url(URL)
    try:
        return interleave(
            {
                "raw redis-py": lambda: streams_raw(client, count),
                "missive": lambda: streams_missive(client, count),
                "faststream": lambda: streams_faststream(client, count),
            },
            count,
            repeat,
        )
    finally:
        client.close()


def run_pubsub(count: int = 20_000, repeat: int = 5) -> Runs:
    """(seconds, CPU seconds) per run of each Pub/Sub contender: raw, missive, faststream."""
    return interleave(
        {
            "raw redis-py": lambda: pubsub_raw(count),
            "missive": lambda: pubsub_missive(count),
            "faststream": lambda: pubsub_faststream(count),
        },
        count,
        repeat,
    )


def burst(count: int = 200_000) -> Result:
    """One Pub/Sub burst of ``count`` messages into the Missive adapter: (seconds, received)."""
    return pubsub_missive(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--burst", type=int, default=200_000, help="0 to skip")
    parser.add_argument("--publish", nargs=2, metavar=("CHANNEL", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publish:
        _publish_main(args.publish[0], int(args.publish[1]))
        return
    logging.basicConfig(level=logging.ERROR)
    print(table("Redis Streams", args.messages, run_streams(args.messages, args.repeat)))
    print()
    print(table("Redis Pub/Sub", args.messages, run_pubsub(args.messages, args.repeat)))
    if args.burst:
        seconds, received, _ = burst(args.burst)
        print(
            f"\nPub/Sub burst: {received:,} of {args.burst:,} received by the Missive adapter "
            f"({args.burst - received:,} lost) in {seconds:.2f} s"
        )


if __name__ == "__main__":
    main()
