"""What crash-safe poison detection costs: counting a redelivery in the DLQ.

Only redeliveries on transports that keep no delivery count (RabbitMQ classic
queues) are counted; first deliveries, Redis Streams and RabbitMQ quorum queues
cost nothing. Each counted redelivery is one durable write before the handler
(``record_attempt``) and one after it (``forget_attempts``).

    python bench/attempts.py [--count 2000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from missive.dlq.base import DeadLetterStore
from missive.dlq.sqlite import SQLiteDLQ


def per_redelivery(store: DeadLetterStore, count: int) -> float:
    """Seconds a redelivery costs: record the attempt, then forget it once settled."""
    ids = [b"id-%d" % i for i in range(count)]
    start = time.perf_counter()
    for message_id in ids:
        store.record_attempt(message_id)
        store.forget_attempts(message_id)
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--postgres", default="postgresql://root@127.0.0.1:5432/test")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, SQLiteDLQ(Path(directory) / "d.db") as dlq:
        print(f"SQLite:     {per_redelivery(dlq, args.count) * 1e6:8.0f} µs a counted redelivery")
    if args.postgres:
        import psycopg

        from missive.dlq.postgres import PostgresDLQ

        table = f"bench_attempts_{uuid.uuid4().hex[:8]}"
        with PostgresDLQ(args.postgres, table=table) as pg:
            cost = per_redelivery(pg, args.count)
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}, {table}_attempts")
        print(f"PostgreSQL: {cost * 1e6:8.0f} µs a counted redelivery")


if __name__ == "__main__":
    main()
