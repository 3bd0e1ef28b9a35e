"""A deadline on reading a whole request body, for servers that expose the client socket.

A socket timeout bounds each ``recv``; a client that sends one byte just inside it
would still hold a thread for as long as it likes, since a server's body reader
loops over many ``recv`` calls in one read. :func:`watch` bounds the whole read:
one watchdog thread per process shuts the socket's reading side down
(``shutdown(SHUT_RD)``) once the deadline passes, so the read in progress ends at
once with a short body. The response can still be written on the socket.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Watch", "watch"]


class Watch:
    """One body read under a deadline; ``expired`` once the watchdog cut it off."""

    __slots__ = ("done", "expired", "sock", "when")

    def __init__(self, sock: socket.socket, when: float) -> None:
        self.sock = sock
        self.when = when
        self.done = False
        self.expired = False


class _Watchdog:
    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.heap: list[tuple[float, int, Watch]] = []
        self.order = itertools.count()
        self.started = False

    def add(self, entry: Watch) -> None:
        with self.lock:
            if not self.started:
                self.started = True
                thread = threading.Thread(target=self._run, name="missive-body-deadline")
                thread.daemon = True
                thread.start()
            heapq.heappush(self.heap, (entry.when, next(self.order), entry))
            if self.heap[0][2] is entry:  # else the thread wakes earlier anyway
                self.lock.notify()

    def remove(self, entry: Watch) -> None:
        with self.lock:
            entry.done = True  # left in the heap: dropped when it comes to the top

    def _run(self) -> None:
        heap = self.heap
        with self.lock:
            while True:
                while heap and heap[0][2].done:
                    heapq.heappop(heap)
                if not heap:
                    self.lock.wait()
                    continue
                left = heap[0][0] - time.monotonic()
                if left > 0:
                    self.lock.wait(left)
                    continue
                _, _, entry = heapq.heappop(heap)
                entry.expired = True
                with contextlib.suppress(OSError):  # already closed by either side
                    entry.sock.shutdown(socket.SHUT_RD)


_watchdog = _Watchdog()


def _after_fork_in_child() -> None:
    # The parent's thread does not exist in the child, and it may have held the lock.
    global _watchdog
    _watchdog = _Watchdog()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def watch(sock: socket.socket, seconds: float) -> Iterator[Watch]:
    """While in the block, ``sock``'s reading side is shut down ``seconds`` from now.

    Once the block is left the deadline no longer applies: the watchdog never
    touches a socket whose read is over. Check ``expired`` to tell a cut-off read
    from a client that sent a short body.
    """
    entry = Watch(sock, time.monotonic() + seconds)
    watchdog = _watchdog
    watchdog.add(entry)
    try:
        yield entry
    finally:
        watchdog.remove(entry)
