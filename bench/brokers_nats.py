"""NATS JetStream throughput: Missive's NATSJetStreamAdapter against raw nats-py and FastStream.

Each run publishes N messages of about 100 bytes to a fresh stream (``missive-bench-``
and a random suffix), then one consumer drains it through a durable pull consumer
with explicit acks, doing the same work for each message: count it and ack it (no
decoding):

* **raw nats-py**: ``js.pull_subscribe``, then ``fetch(100)`` in a loop and
  ``await msg.ack()`` for each message, nats-py's own idiom;
* **missive**: ``NATSJetStreamAdapter(RawMessage, ..., batch_size=100)``, a handler
  calling ``ctx.ack()``, stopped by the handler of the last message;
* **faststream**: FastStream's ``NatsBroker``, a subscriber with
  ``PullSub(batch_size=100)`` on the stream, an ``async`` handler taking the
  ``NatsMessage`` (not the decoded body), acked by FastStream after it returns.

Timed from the first message handled to the last, wall and CPU time of this process
(all its threads), so that connecting and creating the consumer count for none. The
contenders run interleaved (each repetition starts with the next one) and the
medians are printed with their ratio to raw (raw's time / the contender's: 1.0 is as
fast as raw). Every stream is deleted after its run.

    python bench/brokers_nats.py [--messages 20000] [--repeat 5]

Needs a NATS server with JetStream on ``NATS_URL`` (default ``nats://127.0.0.1:4222``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import nats
from _compare import Clock, Result, Runs, interleave, payloads, table

import missive
from missive.adapters.nats import NATSJetStreamAdapter

URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
BATCH = 100

# -- A fresh stream per run ---------------------------------------------------------------


async def _fill(stream: str, count: int) -> None:
    nc = await nats.connect(URL)
    try:
        jsm = nc.jsm()
        await jsm.add_stream(name=stream, subjects=[stream])
        for body in payloads(count):
            await nc.publish(stream, body)
        await nc.flush()
        deadline = time.monotonic() + 60
        while (await jsm.stream_info(stream)).state.messages < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"stream {stream} did not reach {count} messages")
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def _delete(stream: str) -> None:
    nc = await nats.connect(URL)
    try:
        await nc.jsm().delete_stream(stream)
    finally:
        await nc.close()


def on_fresh_stream(run: Callable[[str, int], Result], count: int) -> Result:
    """Run ``run(stream, count)`` on a new stream of ``count`` messages, then delete it."""
    stream = f"missive-bench-{uuid.uuid4().hex[:10]}"
    asyncio.run(_fill(stream, count))
    try:
        return run(stream, count)
    finally:
        asyncio.run(_delete(stream))


# -- The contenders -----------------------------------------------------------------------


def raw_nats(stream: str, count: int) -> Result:
    """Raw nats-py: a durable pull subscription, fetch(100), ``msg.ack()`` each."""

    async def main() -> Result:
        nc = await nats.connect(URL)
        try:
            sub = await nc.jetstream().pull_subscribe(stream, durable="raw", stream=stream)
            clock = Clock(count)
            while clock.handled < count:
                for msg in await sub.fetch(BATCH, timeout=5):
                    clock.tick()
                    await msg.ack()
            await nc.flush()  # the last acks reached the server
            return clock.result()
        finally:
            await nc.close()

    return asyncio.run(main())


def missive_adapter(stream: str, count: int) -> Result:
    """NATSJetStreamAdapter, batch_size=100, stopped by the handler of the last message."""
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    clock = Clock(count)
    adapter = NATSJetStreamAdapter(
        missive.RawMessage, processor, stream, durable="missive", url=URL, batch_size=BATCH
    )

    @processor.handle_for(lambda m: True)
    def handle(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        ctx.ack()
        if clock.tick():
            adapter.stop()

    adapter.run()
    return clock.result()


def faststream(stream: str, count: int) -> Result:
    """FastStream's NatsBroker: a JetStream pull subscriber, 100 messages a request."""
    from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub

    async def main() -> Result:
        broker = NatsBroker(URL, logger=None)
        done = asyncio.Event()
        clock = Clock(count)

        @broker.subscriber(
            stream,
            stream=JStream(stream, declare=False),
            durable="faststream",
            pull_sub=PullSub(batch_size=BATCH, timeout=5.0),
        )
        async def handle(message: NatsMessage) -> None:
            if clock.tick():
                done.set()

        await broker.start()
        try:
            await asyncio.wait_for(done.wait(), 300)
            return clock.result()
        finally:
            await broker.stop()

    return asyncio.run(main())


CONTENDERS: dict[str, Callable[[str, int], Result]] = {
    "raw nats-py": raw_nats,
    "missive": missive_adapter,
    "faststream": faststream,
}


# -- Running and reporting ----------------------------------------------------------------


def run(count: int, repeat: int) -> Runs:
    """(seconds, CPU seconds) per run of each contender, interleaved."""
    return interleave(
        {name: (lambda c=c: on_fresh_stream(c, count)) for name, c in CONTENDERS.items()},
        count,
        repeat,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    runs = run(args.messages, args.repeat)
    print(table("NATS JetStream, pull consumer, count and ack", args.messages, runs))


if __name__ == "__main__":
    main()
