"""The floor under a flood of failures: hand-written consumers on raw redis-py and
pika with raw sqlite3, no Missive, acking each message or storing each one in an
SQLite file (WAL, synchronous=FULL, one transaction per read) before acking it.

This bounds what any consumer in Python can reach on this machine for issue 16's
target (a flood keeps at least 0.5 of the handled rate). Two rows of what a failure
stores: ``minimal`` (the id, the payload and the exception's text: less than any DLQ
that explains its letters keeps) and ``missive's columns`` (also the attributes as
JSON, the handler, the exception type and the traceback, formatted once per failure
path as Missive does). Interleaved; the ratio is dead-lettered / handled.

    python bench/dlq_flood_floor.py [--messages 20000] [--repeat 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pika
import redis

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
BATCH = 100

MINIMAL = "CREATE TABLE letters (id BLOB UNIQUE, data BLOB, reason TEXT)"
FULL = (
    "CREATE TABLE letters (seq INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, "
    "data BLOB NOT NULL, class TEXT, attributes TEXT, reason TEXT, summary TEXT, "
    "handler TEXT, exc_type TEXT, traceback TEXT, first_at TEXT, at TEXT, times INTEGER)"
)
_FRAMES: dict[Any, str] = {}


def bodies(count: int) -> list[bytes]:
    """``count`` JSON messages of about 90 bytes."""
    return [json.dumps({"order": i, "note": "x" * 60}).encode() for i in range(count)]


def filled_queue(channel: Any, prefix: str, count: int) -> str:
    """A new durable queue holding ``count`` messages: its name."""
    queue = f"{prefix}-{uuid.uuid4().hex[:10]}"
    channel.queue_declare(queue, durable=True)
    for body in bodies(count):
        channel.basic_publish("", queue, body)
    return queue


def filled_stream(client: redis.Redis, prefix: str, count: int) -> str:
    """A new stream holding ``count`` entries, with a group ``bench`` at its start."""
    stream = f"{prefix}-{uuid.uuid4().hex[:10]}"
    with client.pipeline(transaction=False) as pipe:
        for body in bodies(count):
            pipe.xadd(stream, {"data": body})
        pipe.execute()
    client.xgroup_create(stream, "bench", id="0")
    return stream


class Store:
    """An SQLite file taking one transaction of rows per read."""

    def __init__(self, path: str, columns: str) -> None:
        self.path, self.columns = path, columns
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute(MINIMAL if columns == "minimal" else FULL)
        if columns != "minimal":
            self.conn.execute("CREATE INDEX letters_at ON letters (at)")
        self.insert = (
            "INSERT INTO letters VALUES (?, ?, ?)"
            if columns == "minimal"
            else "INSERT INTO letters (id, data, class, attributes, reason, summary, handler, "
            "exc_type, traceback, first_at, at, times) VALUES (?,?,?,?,?,?,?,?,?,?,?,1)"
        )
        self.stamp = ""

    def row(self, key: bytes, data: bytes, attributes: str, exc: Exception) -> tuple[Any, ...]:
        text = f"handler 'handle' raised {type(exc).__qualname__}: {exc}"
        if self.columns == "minimal":
            return (key, data, text)
        tb = exc.__traceback__
        path = tuple((f.f_code, line) for f, line in traceback.walk_tb(tb))
        frames = _FRAMES.get(path)
        if frames is None:
            frames = _FRAMES[path] = "".join(traceback.format_tb(tb))
        summary = f"handler 'handle' raised {type(exc).__qualname__}"
        trace = f"Traceback (most recent call last):\n{frames}{type(exc).__name__}: {exc}\n"
        return (key, data, "JSONMessage", attributes, text, summary, "handle",
                type(exc).__qualname__, trace, self.stamp, self.stamp)  # fmt: skip

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(self.insert, rows)
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.remove(self.path + suffix)


def handle(data: bytes, fail: bool) -> None:
    json.loads(data)
    if fail:
        raise ValueError("a bad deploy")


def redis_streams(count: int, fail: bool, store: Store) -> float:
    client = redis.Redis.from_url(REDIS_URL)
    stream = filled_stream(client, "missive-bench-floor", count)
    attributes = {"stream": stream, "group": "bench", "consumer": "c", "delivery_count": 1}
    try:
        owed: list[bytes] = []
        done, started = 0, time.perf_counter()
        while done < count:
            pipe = client.pipeline(transaction=False)
            if owed:
                pipe.xack(stream, "bench", *owed)
            pipe.xreadgroup("bench", "c", {stream: ">"}, BATCH, 1000)
            read = pipe.execute()[-1]
            owed = []
            rows = []
            store.stamp = datetime.now(UTC).isoformat()
            encoded = json.dumps(attributes)
            for entry_id, fields in read[0][1]:
                data = fields[b"data"]
                try:
                    handle(data, fail)
                except Exception as exc:  # every failure is stored
                    rows.append(store.row(entry_id, data, encoded, exc))
                owed.append(entry_id)
            if rows:
                store.write(rows)
            done += len(read[0][1])
        client.xack(stream, "bench", *owed)
        return count / (time.perf_counter() - started)
    finally:
        client.delete(stream)
        client.close()


def rabbitmq(count: int, fail: bool, store: Store) -> float:
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as connection:
        channel = connection.channel()
        queue = filled_queue(channel, "missive-bench-floor", count)
        channel.basic_qos(prefetch_count=BATCH)
        done, rows, last = 0, [], 0
        started = time.perf_counter()
        for method, _properties, data in channel.consume(queue, inactivity_timeout=5):
            assert method is not None, "the queue ran dry"
            attributes = json.dumps({"delivery_tag": method.delivery_tag, "queue": queue,
                                     "exchange": method.exchange, "redelivered": False,
                                     "routing_key": method.routing_key})  # fmt: skip
            try:
                handle(data, fail)
            except Exception as exc:  # every failure is stored
                rows.append(store.row(str(method.delivery_tag).encode(), data, attributes, exc))
            done, last = done + 1, method.delivery_tag
            if done % (BATCH // 2) == 0 or done == count:
                if rows:
                    store.stamp = datetime.now(UTC).isoformat()
                    store.write(rows)
                    rows = []
                channel.basic_ack(last, multiple=True)
            if done == count:
                break
        elapsed = time.perf_counter() - started
        channel.cancel()
        channel.queue_delete(queue)
    return count / elapsed


RUNS: dict[str, Callable[[int, bool, Store], float]] = {
    "rabbitmq": rabbitmq,
    "redis": redis_streams,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--brokers", default="rabbitmq,redis")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where SQLite files go")
    args = parser.parse_args()
    print(f"Hand-written consumers, no Missive ({args.messages:,} messages, median of "
          f"{args.repeat})\n")  # fmt: skip
    print("| broker | stored | handled msg/s | dead-lettered msg/s | ratio |")
    print("|---|---|---:|---:|---:|")
    for broker in args.brokers.split(","):
        for columns in ("minimal", "missive's columns"):
            rates: dict[bool, list[float]] = {False: [], True: []}
            for repetition in range(args.repeat):
                for fail in (False, True) if repetition % 2 == 0 else (True, False):
                    path = os.path.join(args.dir, f"floor-{uuid.uuid4().hex[:10]}.db")
                    store = Store(path, columns)
                    try:
                        rates[fail].append(RUNS[broker](args.messages, fail, store))
                    finally:
                        store.close()
            ok, failing = statistics.median(rates[False]), statistics.median(rates[True])
            print(f"| {broker} | {columns} | {ok:,.0f} | {failing:,.0f} | {failing / ok:.2f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
