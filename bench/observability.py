"""What observing costs: consumer throughput with metrics and tracing on, against off.

One queue (RabbitMQ) or stream (Redis Streams) holds N JSON messages of about 100
bytes, each published with a W3C ``traceparent`` header (an AMQP header, a stream
field), as an instrumented publisher would send them. A handler decodes each and
acks it. Three variants of the same adapter, run interleaved on fresh queues:

* **off**: no observer;
* **metrics**: ``missive.metrics.instrument`` on a registry of its own;
* **metrics+tracing**: that, and ``missive.tracing.instrument`` on an SDK
  ``TracerProvider`` whose ``BatchSpanProcessor`` hands spans to an exporter that
  drops them (the cost of making, parenting and ending each span, not of sending it).

Timed from the first message handled to the last. The ratio is off's median time
over the variant's (1.0: as fast). Issue 14's targets: metrics at least 0.90,
metrics and tracing at least 0.75. With handlers that do nothing the ratio is the
observers' cost next to Missive's own few microseconds a message (the Python SDK
alone takes some 20 us to start and end a span); ``--work-ms 0.5`` gives each
handler half a millisecond of work, closer to a service's.

    python bench/observability.py [--messages 20000] [--repeat 5] [--brokers rabbitmq,redis]
        [--work-ms 0]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pika
import redis
from _compare import Clock, Result, Runs, interleave, payloads, table
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

import missive
import missive.metrics
import missive.tracing
from missive.adapters.rabbitmq import RabbitMQAdapter
from missive.adapters.redis import RedisStreamsAdapter

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
#: A publisher's span context, as an instrumented publisher puts it in each message.
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
VARIANTS = ("off", "metrics", "metrics+tracing")
TARGETS = {"metrics": 0.90, "metrics+tracing": 0.75}


class DropExporter(SpanExporter):
    """Takes every span and sends it nowhere."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def observe(adapter: missive.Adapter[Any], variant: str) -> Callable[[], None]:
    """Instrument ``adapter`` as ``variant`` says; return what ends it after the run."""
    if variant == "off":
        return lambda: None
    missive.metrics.instrument(adapter, registry=CollectorRegistry())
    if variant == "metrics":
        return lambda: None
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    missive.tracing.instrument(adapter, provider)
    return provider.shutdown


#: Seconds each handler sleeps after decoding (``--work-ms``): 0 measures the bare path.
WORK = [0.0]


def processor(clock: Clock, done: Callable[[], None]) -> missive.Processor[missive.JSONMessage]:
    proc: missive.Processor[missive.JSONMessage] = missive.Processor()

    @proc.handle_for(lambda m: True)
    def handle(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        message.get_json()
        if WORK[0]:
            time.sleep(WORK[0])
        ctx.ack()
        if clock.tick():
            done()

    return proc


def rabbitmq_run(count: int, variant: str) -> Result:
    queue = f"missive-bench-observability-{uuid.uuid4().hex[:10]}"
    properties = pika.BasicProperties(headers={"traceparent": TRACEPARENT})
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
        channel = connection.channel()
        channel.queue_declare(queue)
        for body in payloads(count):
            channel.basic_publish("", queue, body, properties)
    adapter: list[RabbitMQAdapter[Any]] = []
    clock = Clock(count)
    try:
        proc = processor(clock, lambda: adapter[0].stop())
        adapter.append(RabbitMQAdapter(missive.JSONMessage, proc, queue, url=AMQP_URL))
        end = observe(adapter[0], variant)
        adapter[0].run()
        end()
    finally:
        with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
            connection.channel().queue_delete(queue)
    return clock.result()


def redis_run(count: int, variant: str) -> Result:
    client = redis.Redis.from_url(REDIS_URL)
    stream, group = f"missive-bench-observability-{uuid.uuid4().hex[:10]}", "bench"
    with client.pipeline(transaction=False) as pipe:
        for body in payloads(count):
            pipe.xadd(stream, {"data": body, "traceparent": TRACEPARENT})
        pipe.execute()
    client.xgroup_create(stream, group, id="0")
    adapter: list[RedisStreamsAdapter[Any]] = []
    clock = Clock(count)
    try:
        proc = processor(clock, lambda: adapter[0].stop())
        adapter.append(
            RedisStreamsAdapter(missive.JSONMessage, proc, stream, group=group, url=REDIS_URL)
        )
        end = observe(adapter[0], variant)
        adapter[0].run()
        end()
    finally:
        client.delete(stream)
        client.close()
    return clock.result()


RUNS: dict[str, Callable[[int, str], Result]] = {"rabbitmq": rabbitmq_run, "redis": redis_run}
TITLES = {"rabbitmq": "RabbitMQ", "redis": "Redis Streams"}


def verdicts(runs: Runs) -> list[str]:
    """Each variant's ratio to off (wall time), against its target."""
    off = statistics.median(run[0] for run in runs["off"])
    lines = []
    for variant, target in TARGETS.items():
        ratio = off / statistics.median(run[0] for run in runs[variant])
        verdict = "meets" if ratio >= target else "BELOW"
        lines.append(f"- {variant}: {ratio:.2f} of off ({verdict} the target {target:.2f})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--brokers", default="rabbitmq,redis")
    parser.add_argument("--work-ms", type=float, default=0.0, help="each handler's sleep")
    args = parser.parse_args()
    WORK[0] = args.work_ms / 1000
    logging.basicConfig(level=logging.ERROR)
    for broker in args.brokers.split(","):
        run = RUNS[broker]
        contenders = {
            variant: (lambda variant=variant, run=run: run(args.messages, variant))  # type: ignore[misc]
            for variant in VARIANTS
        }
        runs = interleave(contenders, args.messages, args.repeat)
        # The first contender is the baseline _compare calls "raw": here, off.
        print(table(TITLES[broker], args.messages, runs).replace("to raw", "to off"))
        print()
        print("\n".join(verdicts(runs)))
        print()


if __name__ == "__main__":
    main()
