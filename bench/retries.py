"""Healthy messages during an outage: do messages waiting for a retry slow the others?

One queue (RabbitMQ) or stream (Redis Streams) holds N "order" messages and, between
them, one "billing" message in ten. Two handlers on one processor: orders are
decoded and acked (after 0 or 0.5 ms of work, a sleep: two rows); billing calls a
dependency. Two runs, interleaved, side by side:

* **no outage**: the dependency answers, billing messages are acked;
* **outage**: the dependency is down for the whole run: each billing message fails
  and is retried later (``Retry(delayed=1000, initial_delay=0.5, max_delay=2)``),
  again and again, through the broker (RabbitMQ's delay queues, the Streams sorted
  set), while the orders flow.

Timed from the first order handled to the last; the ratio is the orders' rate during
the outage over their rate without it (issue 13 asks for at least 0.8). With orders
that do no work, the row measures what a failed attempt costs next to a handled one
(the failing handler runs, and its message is scheduled on the broker); with 0.5 ms
of work, closer to a service's handlers. Each run removes its queue or stream and
what waits for a retry. The 0.5 ms rows use a quarter of the messages.

    python bench/retries.py [--messages 20000] [--repeat 5] [--brokers rabbitmq,redis]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import redis

import missive
from missive.adapters.rabbitmq import RabbitMQAdapter
from missive.adapters.redis import RedisStreamsAdapter

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
BILLING_EVERY = 10
OUTAGE_RETRY = missive.Retry(delayed=1000, initial_delay=0.5, max_delay=2.0)


def bodies(orders: int) -> list[bytes]:
    """``orders`` order messages, with a billing message after every ninth."""
    out = []
    for i in range(orders):
        out.append(json.dumps({"type": "order", "n": i, "note": "x" * 40}).encode())
        if i % (BILLING_EVERY - 1) == BILLING_EVERY - 2:
            out.append(json.dumps({"type": "billing", "n": i}).encode())
    return out


class OrdersClock:
    """Wall and CPU time from the first order handled to the last; ``work``: the
    seconds each order's handler sleeps."""

    def __init__(self, orders: int, done: Callable[[], None], work: float) -> None:
        self.orders, self.done, self.work = orders, done, work
        self.handled = 0
        self.start = self.cpu = self.elapsed = self.cpu_elapsed = 0.0

    def tick(self) -> None:
        self.handled += 1
        if self.handled == 1:
            self.start, self.cpu = time.perf_counter(), time.process_time()
        elif self.handled == self.orders:
            self.elapsed = time.perf_counter() - self.start
            self.cpu_elapsed = time.process_time() - self.cpu
            self.done()


def processor(clock: OrdersClock, outage: bool) -> missive.Processor[missive.JSONMessage]:
    """Orders acked; billing acked, or failing through the whole run."""
    proc = missive.Processor[missive.JSONMessage](retry=OUTAGE_RETRY)
    proc.set_dlq({})

    @proc.handle_for(lambda m: m.get_json()["type"] == "order")
    def order(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        if clock.work:
            time.sleep(clock.work)
        ctx.ack()
        clock.tick()

    @proc.handle_for(lambda m: m.get_json()["type"] == "billing")
    def billing(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        if outage:
            raise ConnectionError("the billing service is down")
        ctx.ack()

    return proc


# -- RabbitMQ --------------------------------------------------------------------------


def rabbitmq_run(orders: int, outage: bool, work: float) -> tuple[float, float]:
    queue = f"missive-bench-retries-{uuid.uuid4().hex[:10]}"
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        for body in bodies(orders):
            channel.basic_publish("", queue, body)
    adapter: list[RabbitMQAdapter[Any]] = []
    clock = OrdersClock(orders, lambda: adapter[0].stop(), work)
    try:
        adapter.append(
            RabbitMQAdapter(missive.JSONMessage, processor(clock, outage), queue, url=AMQP_URL)
        )
        adapter[0].run()
    finally:
        _delete_rabbitmq(queue)
    return clock.elapsed, clock.cpu_elapsed


def _delete_rabbitmq(queue: str) -> None:
    """The work queue and its delay queues (``<queue>.missive-delay.<seconds>``)."""
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
        channel = connection.channel()
        channel.queue_delete(queue)
        for seconds in (2**k for k in range(21)):
            channel.queue_delete(f"{queue}.missive-delay.{seconds}")


# -- Redis Streams ---------------------------------------------------------------------


def redis_run(orders: int, outage: bool, work: float) -> tuple[float, float]:
    client = redis.Redis.from_url(REDIS_URL)
    stream, group = f"missive-bench-retries-{uuid.uuid4().hex[:10]}", "bench"
    with client.pipeline(transaction=False) as pipe:
        for body in bodies(orders):
            pipe.xadd(stream, {"data": body})
        pipe.execute()
    client.xgroup_create(stream, group, id="0")
    adapter: list[RedisStreamsAdapter[Any]] = []
    clock = OrdersClock(orders, lambda: adapter[0].stop(), work)
    try:
        adapter.append(
            RedisStreamsAdapter(
                missive.JSONMessage, processor(clock, outage), stream, group=group, url=REDIS_URL
            )
        )
        adapter[0].run()
    finally:
        client.delete(stream, f"{stream}:missive-delayed:{group}")
        client.close()
    return clock.elapsed, clock.cpu_elapsed


RUNS: dict[str, Callable[[int, bool, float], tuple[float, float]]] = {
    "rabbitmq": rabbitmq_run,
    "redis": redis_run,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="order messages a run")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--brokers", default="rabbitmq,redis")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(
        f"Orders handled while one billing message in {BILLING_EVERY} fails and waits for its "
        f"retry ({args.messages:,} orders, median of {args.repeat})\n"
    )
    print(
        "| broker | order work | orders/s, no outage | orders/s, outage | ratio "
        "| CPU s | CPU s, outage |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for broker in args.brokers.split(","):
        for work, orders in ((0.0, args.messages), (0.0005, args.messages // 4)):
            run = RUNS[broker]
            results: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for repetition in range(args.repeat):
                # Interleaved, each repetition starting with the other kind of run.
                for outage in (False, True) if repetition % 2 == 0 else (True, False):
                    results[outage].append(run(orders, outage, work))
            wall = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
            cpu = {k: statistics.median(r[1] for r in v) for k, v in results.items()}
            calm, storm = orders / wall[False], orders / wall[True]
            print(
                f"| {broker} | {work * 1000:g} ms | {calm:,.0f} | {storm:,.0f} "
                f"| {storm / calm:.2f} | {cpu[False]:.3f} | {cpu[True]:.3f} |"
            )


if __name__ == "__main__":
    main()
