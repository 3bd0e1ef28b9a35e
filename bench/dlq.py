"""DLQ throughput, SQLite and PostgreSQL side by side: writes by one and four processes, replay.

Writes: each process opens the same DLQ and writes N dead letters as the processor
does: a JSON payload of about 200 bytes with a few attributes, and the reason of a
handler that raised (with its traceback). Every write is its own committed
transaction, durable before it returns (SQLite: WAL, synchronous=FULL; PostgreSQL:
one autocommit upsert, synchronous_commit on), as in production. The rate is the
total written divided by the wall time from the start signal until the last process
finishes.

Replay: a DLQ holding 20,000 dead letters is replayed by the loop of ``missive dlq
replay`` (records read 500 a query, each through a processor, with that DLQ set,
whose handler acks), in one process, two ways side by side: each delete committed
alone (``--batch 1``, the way before issue 16) and deletes committed 500 at a time
(the default). The rate is dead letters replayed (read, handled, deleted) per
second; the run checks that the DLQ ends empty.

    python bench/dlq.py [--messages 2000] [--processes 1,4] [--repeat 3] [--dir /tmp]
                        [--backends sqlite,postgres] [--postgres URL] [--replay 20000]

``--processes ''`` leaves the write rows out. ``--flood N`` (20,000; 0 for none) adds
the rows of ``bench/dlq_flood.py``: consumption when every message is dead-lettered
against when every one is handled, on RabbitMQ and Redis Streams.

Put --dir on the disk you mean to measure: on tmpfs, fsync costs nothing. The
PostgreSQL URL defaults to $MISSIVE_BENCH_POSTGRES or postgresql://root@127.0.0.1/test;
each run uses a table of its own and drops it.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import dlq_flood

import missive
from missive.cli._output import Output
from missive.cli._replay_loop import Deletes, InProcess, Replay
from missive.dlq import open_dlq

DEFAULT_POSTGRES = os.environ.get("MISSIVE_BENCH_POSTGRES", "postgresql://root@127.0.0.1/test")
NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}

# Where a run's DLQ is: what open_dlq takes, and the options for its constructor.
Location = tuple[str, dict[str, Any]]


def reason(number: int) -> missive.DeadLetterReason:
    try:
        raise KeyError(f"customer {number} not found")
    except KeyError as exc:
        return missive.DeadLetterReason.from_exception(
            "handler 'record_order'", exc, handler="record_order"
        )


def dead_letters(index: int, count: int) -> list[tuple[missive.JSONMessage, str]]:
    """``count`` dead letters as the processor writes them, ids unique to ``index``."""
    letters: list[tuple[missive.JSONMessage, str]] = []
    for n in range(count):
        payload = json.dumps(
            {"label": "order", "customer": n, "items": list(range(20)), "w": index}
        ).encode()
        message = missive.JSONMessage(
            payload.ljust(200), b"%d-%d" % (index, n), {"queue": "orders", "delivery": 1}
        )
        letters.append((message, reason(n)))
    return letters


def worker(location: Location, index: int, count: int, start: Event, done: Queue[float]) -> None:
    letters = dead_letters(index, count)
    with open_dlq(location[0], **location[1]) as dlq:
        start.wait()
        for message, why in letters:
            dlq[message.message_id] = (message, why)
        done.put(time.perf_counter())


@contextmanager
def fresh(backend: str, directory: str, postgres: str) -> Iterator[Location]:
    """A new, empty DLQ of ``backend`` (schema created), removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            location: Location = (os.path.join(tmp, "dlq.db"), {})
            open_dlq(location[0]).close()
            yield location
        return
    table = f"missive_bench_{uuid.uuid4().hex[:10]}"
    location = (postgres, {"table": table})
    open_dlq(postgres, table=table).close()
    try:
        yield location
    finally:
        import psycopg
        from psycopg import sql

        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def writes(location: Location, processes: int, count: int) -> float:
    """Dead letters per second written by ``processes`` processes, ``count`` each."""
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    done: Queue[float] = context.Queue()
    workers = [
        context.Process(target=worker, args=(location, index, count, start, done))
        for index in range(processes)
    ]
    for process in workers:
        process.start()
    time.sleep(1.0 + 0.5 * processes)  # let each process import, build and open
    began = time.perf_counter()
    start.set()
    ends = [done.get(timeout=600) for _ in workers]
    for process in workers:
        process.join()
    if any(process.exitcode for process in workers):
        raise SystemExit("a writer process failed")
    with open_dlq(location[0], **location[1]) as dlq:
        assert len(dlq) == processes * count, (len(dlq), processes * count)
    return processes * count / (max(ends) - began)


def _writes(processes: int, count: int, location: Location) -> float:
    return writes(location, processes, count)


def replay(location: Location, count: int, batch: int) -> float:
    """Dead letters per second read back, handled (acked) and deleted, ``count`` of them,
    with one commit every ``batch`` deletes."""
    with open_dlq(location[0], **location[1]) as dlq:
        for message, why in dead_letters(0, count):
            dlq[message.message_id] = (message, why)
        processor: missive.Processor[missive.Message] = missive.Processor()
        processor.set_dlq(dlq)

        @processor.handle_for(lambda message: True)
        def record_order(message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
            ctx.ack()

        out = Output(io.StringIO(), io.StringIO())
        began = time.perf_counter()
        with processor.context() as context:
            run = Replay(InProcess(context), Deletes(dlq, batch=batch), lambda r: r.message, out)
            run.run(dlq.records())
        elapsed = time.perf_counter() - began
        assert (run.counts["acked"], len(dlq)) == (count, 0), (run.counts, len(dlq))
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="dead letters per process")
    parser.add_argument("--processes", default="1,4", help="comma-separated process counts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where SQLite files go")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URL")
    parser.add_argument("--replay", type=int, default=20_000, help="dead letters to replay")
    parser.add_argument(
        "--flood", type=int, default=20_000, help="messages of the flood rows (0: none)"
    )
    args = parser.parse_args()
    backends = args.backends.split(",")
    print(
        f"{args.messages} dead letters per writer process, replay of {args.replay}, "
        f"median of {args.repeat} (min-max); SQLite in {args.dir}"
    )
    print(f"{'':24}" + "".join(f"{NAMES[backend]:>30}" for backend in backends))
    for processes in [int(p) for p in args.processes.split(",") if p]:
        label = f"writes, {processes} process{'es' if processes > 1 else ''}"
        _row(label, backends, args, functools.partial(_writes, processes, args.messages))
    for batch, how in ((1, "one commit each"), (500, "batches of 500")):
        run = functools.partial(_replay, args.replay, batch)
        _row(f"replay, {how}", backends, args, run)
    if args.flood:
        print()
        dlq_flood.POSTGRES_URL = args.postgres
        dlq_flood.rows(args.flood, args.repeat, ["rabbitmq", "redis"], args.dir, tuple(backends))


def _replay(count: int, batch: int, location: Location) -> float:
    return replay(location, count, batch)


def _row(
    label: str, backends: list[str], args: argparse.Namespace, run: Callable[[Location], float]
) -> None:
    """Print one line: ``run``'s rate on a fresh DLQ of each backend."""
    cells = []
    for backend in backends:
        rates = []
        for _ in range(args.repeat):
            with fresh(backend, args.dir, args.postgres) as location:
                rates.append(run(location))
        median, low, high = statistics.median(rates), min(rates), max(rates)
        cells.append(f"{median:,.0f}/s ({low:,.0f}-{high:,.0f})")
    print(f"{label:24}" + "".join(f"{cell:>30}" for cell in cells), flush=True)


if __name__ == "__main__":
    main()
