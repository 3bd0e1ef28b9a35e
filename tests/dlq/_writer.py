"""A process that writes dead letters, for the multi-process SQLiteDLQ tests and bench."""

from __future__ import annotations

from multiprocessing.synchronize import Event

import missive
from missive.dlq.sqlite import SQLiteDLQ


def write(path: str, worker: int, count: int, start: Event) -> None:
    """Wait for ``start``, open the DLQ at ``path`` and write ``count`` dead letters."""
    start.wait()
    with SQLiteDLQ(path) as dlq:
        for number in range(count):
            message = missive.RawMessage(b"x" * 100, b"%d-%d" % (worker, number))
            dlq[message.message_id] = (message, f"worker {worker}")
