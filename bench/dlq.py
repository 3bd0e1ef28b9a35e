"""SQLiteDLQ write throughput: dead letters stored per second, by one and by several processes.

Each process opens the same SQLiteDLQ file and writes N dead letters as the processor
does: a JSON payload of about 200 bytes with a few attributes, and the reason of a
handler that raised (with its traceback). Every write is its own committed, fsynced
transaction (WAL, synchronous=FULL), as in production. The rate is the total written
divided by the wall time from the start signal until the last process finishes.

    python bench/dlq.py [--messages 2000] [--processes 1,4] [--repeat 3] [--dir /tmp]

Put --dir on the disk you mean to measure: on tmpfs, fsync costs nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event

import missive
from missive.dlq.sqlite import SQLiteDLQ


def reason(number: int) -> missive.DeadLetterReason:
    try:
        raise KeyError(f"customer {number} not found")
    except KeyError as exc:
        return missive.DeadLetterReason.from_exception(
            "handler 'record_order'", exc, handler="record_order"
        )


def worker(path: str, index: int, count: int, start: Event, done: Queue[float]) -> None:
    payloads = [
        json.dumps({"label": "order", "customer": n, "items": list(range(20)), "w": index})
        .encode()
        .ljust(200)
        for n in range(count)
    ]
    reasons = [reason(n) for n in range(count)]
    with SQLiteDLQ(path) as dlq:
        start.wait()
        for n in range(count):
            message = missive.JSONMessage(
                payloads[n], b"%d-%d" % (index, n), {"queue": "orders", "delivery": 1}
            )
            dlq[message.message_id] = (message, reasons[n])
        done.put(time.perf_counter())


def run(directory: str, processes: int, count: int) -> float:
    """Dead letters per second written by ``processes`` processes, ``count`` each."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = os.path.join(tmp, "dlq.db")
        SQLiteDLQ(path).close()  # create the schema outside the timing
        start = context.Event()
        done: Queue[float] = context.Queue()
        workers = [
            context.Process(target=worker, args=(path, index, count, start, done))
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
        with SQLiteDLQ(path) as dlq:
            assert len(dlq) == processes * count, (len(dlq), processes * count)
        return processes * count / (max(ends) - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000, help="dead letters per process")
    parser.add_argument("--processes", default="1,4", help="comma-separated process counts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to put the database")
    args = parser.parse_args()
    print(f"{args.messages} dead letters per process, median of {args.repeat}, in {args.dir}")
    for processes in [int(p) for p in args.processes.split(",")]:
        rates = [run(args.dir, processes, args.messages) for _ in range(args.repeat)]
        print(
            f"{processes} process{'es' if processes > 1 else ''}: "
            f"{statistics.median(rates):,.0f} dead letters/s "
            f"(min {min(rates):,.0f}, max {max(rates):,.0f})"
        )


if __name__ == "__main__":
    main()
