"""A flood of failures: consumption when every message is dead-lettered, against when
every message is handled, side by side (issue 16: at least 0.5).

One queue (RabbitMQ) or stream (Redis Streams) holds N JSON messages; one processor
with a DLQ (SQLite on disk, WAL, synchronous=FULL; or PostgreSQL on loopback) either
acks each one or raises on each one, so that each is stored in the DLQ before it is
acked. Timed from the first message handled until ``run()`` returned (the last dead
letters stored and acked); the runs are interleaved. ``bench/dlq.py --flood N``
prints these rows. ``bench/dlq_flood_floor.py`` is the same flood without Missive.

``--work-ms 0.5`` gives each handler that much work (a sleep) before it acks or
raises, as a handler calling a service would.

    python bench/dlq_flood.py [--messages 20000] [--repeat 3] [--brokers rabbitmq,redis]
        [--dlq sqlite,postgres] [--work-ms 0] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dlq_flood_floor
import pika
import redis

import missive
from missive.adapters.rabbitmq import RabbitMQAdapter
from missive.adapters.redis import RedisStreamsAdapter
from missive.dlq.sqlite import SQLiteDLQ

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("POSTGRES_URL", "postgresql://127.0.0.1:5432/test")


@contextmanager
def open_dlq(kind: str, directory: str, name: str) -> Iterator[Any]:
    """A new, empty DLQ of ``kind`` (``sqlite`` or ``postgres``), removed afterwards."""
    if kind == "sqlite":
        path = os.path.join(directory, f"{name}.db")
        try:
            with SQLiteDLQ(path) as dlq:
                yield dlq
        finally:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(path + suffix):
                    os.remove(path + suffix)
        return
    import psycopg

    from missive.dlq.postgres import PostgresDLQ

    table = name.replace("-", "_")
    try:
        with PostgresDLQ(POSTGRES_URL, table=table) as dlq:
            yield dlq
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            for suffix in ("", "_attempts", "_audit"):
                conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")  # type: ignore[arg-type]


#: Seconds each handler sleeps after decoding (``--work-ms``): 0 measures the bare path.
WORK = [0.0]


def processor(
    count: int, fail: bool, dlq: Any, stop: Callable[[], None], started: list[float]
) -> missive.Processor[missive.JSONMessage]:
    proc = missive.Processor[missive.JSONMessage]()
    proc.set_dlq(dlq)
    seen = [0]

    @proc.handle_for(lambda m: True)
    def handle(message: missive.JSONMessage, ctx: missive.HandlingContext[Any]) -> None:
        seen[0] += 1
        if seen[0] == 1:
            started.append(time.perf_counter())
        if seen[0] == count:
            stop()
        message.get_json()
        if WORK[0]:
            time.sleep(WORK[0])
        if fail:
            raise ValueError("a bad deploy")
        ctx.ack()

    return proc


def _timed(make: Callable[[], Any], started: list[float]) -> float:
    adapter = make()
    adapter.run()
    return time.perf_counter() - started[0]


def rabbitmq(count: int, fail: bool, kind: str, directory: str) -> float:
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
        queue = dlq_flood_floor.filled_queue(connection.channel(), "missive-bench-flood", count)
    adapters: list[Any] = []
    started: list[float] = []
    try:
        with open_dlq(kind, directory, queue) as dlq:
            proc = processor(count, fail, dlq, lambda: adapters[0].stop(), started)

            def make() -> Any:
                adapters.append(RabbitMQAdapter(missive.JSONMessage, proc, queue, url=AMQP_URL))
                return adapters[0]

            elapsed = _timed(make, started)
            assert len(dlq) == (count if fail else 0), "every failure is stored"
        return count / elapsed
    finally:
        with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
            connection.channel().queue_delete(queue)


def redis_streams(count: int, fail: bool, kind: str, directory: str) -> float:
    client = redis.Redis.from_url(REDIS_URL)
    stream = dlq_flood_floor.filled_stream(client, "missive-bench-flood", count)
    adapters: list[Any] = []
    started: list[float] = []
    try:
        with open_dlq(kind, directory, stream) as dlq:
            proc = processor(count, fail, dlq, lambda: adapters[0].stop(), started)

            def make() -> Any:
                adapters.append(
                    RedisStreamsAdapter(
                        missive.JSONMessage, proc, stream, group="bench", url=REDIS_URL
                    )
                )
                return adapters[0]

            elapsed = _timed(make, started)
            assert len(dlq) == (count if fail else 0), "every failure is stored"
        return count / elapsed
    finally:
        client.delete(stream)
        client.close()


RUNS: dict[str, Callable[[int, bool, str, str], float]] = {
    "rabbitmq": rabbitmq,
    "redis": redis_streams,
}


def _floor(broker: str, count: int, fail: bool, directory: str) -> float:
    """The same flood, hand-written on the raw client and sqlite3 (bench/dlq_flood_floor.py)."""
    store = dlq_flood_floor.Store(
        os.path.join(directory, f"floor-{uuid.uuid4().hex[:10]}.db"), "missive's columns"
    )
    try:
        return dlq_flood_floor.RUNS[broker](count, fail, store)
    finally:
        store.close()


def rows(
    count: int,
    repeat: int,
    brokers: list[str],
    directory: str,
    dlqs: tuple[str, ...] = ("sqlite",),
    floor: bool = True,
) -> None:
    """Print the table: each broker's and DLQ's rates, interleaved, and the ratio; with
    SQLite and ``floor``, the hand-written consumer's too, in the same repetitions."""
    print(
        f"Every message handled vs every message dead-lettered ({count:,} messages, "
        f"median of {repeat}); raw: hand-written on the raw client and sqlite3\n"
    )
    print(
        "| broker | DLQ | handled msg/s | dead-lettered msg/s | ratio "
        "| raw handled | raw dead-lettered | raw ratio |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for broker in brokers:
        for kind in dlqs:
            run = RUNS[broker]
            with_floor = floor and kind == "sqlite"
            rates: dict[tuple[str, bool], list[float]] = {}
            for repetition in range(repeat):
                for fail in (False, True) if repetition % 2 == 0 else (True, False):
                    rates.setdefault(("missive", fail), []).append(
                        run(count, fail, kind, directory)
                    )
                    if with_floor:
                        rates.setdefault(("raw", fail), []).append(
                            _floor(broker, count, fail, directory)
                        )
            cells = []
            for who in ("missive", "raw") if with_floor else ("missive",):
                ok = statistics.median(rates[(who, False)])
                failing = statistics.median(rates[(who, True)])
                cells += [f"{ok:,.0f}", f"{failing:,.0f}", f"{failing / ok:.2f}"]
            cells += ["-"] * (6 - len(cells))
            print(f"| {broker} | {kind} | {' | '.join(cells)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--brokers", default="rabbitmq,redis")
    parser.add_argument("--dlq", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--work-ms", type=float, default=0.0, help="each handler's sleep")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where SQLite files go")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    WORK[0] = args.work_ms / 1000
    rows(args.messages, args.repeat, args.brokers.split(","), args.dir, tuple(args.dlq.split(",")))


if __name__ == "__main__":
    main()
