"""Driving a paho client's socket from the delivery loop's thread.

paho's threaded mode (``loop_start``) reads on a thread of its own, and handing each
message over to the delivery loop's thread cost more than all the rest of the work
(the two threads passed the GIL back and forth every few messages). So the MQTT
transport drives the socket itself, with paho's calls for an external event loop
(``loop_read``, ``loop_write``, ``loop_misc``): a receive waits on the socket and on
a wake pipe, reads what came and pings when due, and an ack writes its PUBACK at
once, all on the delivery loop's thread.

While that thread is away for long (a handler running for minutes), a keeper thread
takes a turn now and then so that pings are sent and answered and the broker does
not close the connection as dead. One lock lets one thread at a time drive paho.

Private: only imported once :mod:`missive.adapters.mqtt` found paho-mqtt.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

__all__ = ["SocketPump", "queue_writes"]

logger = logging.getLogger("missive.adapters.mqtt")

_CORK: int | None = getattr(socket, "TCP_CORK", None)  # Linux


def queue_writes(client: mqtt.Client) -> None:
    """Make ``client`` queue its packets instead of writing each at once: the pump
    writes them together (paho's hook for an external loop's write interest)."""
    client.on_socket_register_write = _ignore
    client.on_socket_unregister_write = _ignore


def _ignore(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Nothing to register: the pump writes whatever is queued after each step."""


class SocketPump:
    """Turns of paho's network work for one connection, and the keeper between them.

    The callbacks that paho calls during a turn run on the turning thread; a caller
    holds :attr:`lock` around :meth:`turn` and every other call into the client.
    """

    def __init__(self, client: mqtt.Client, keepalive: int) -> None:
        self.client = client
        self.lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._last_turn = time.monotonic()
        self._interval = max(0.2, keepalive / 4)
        self._stopped = threading.Event()
        self._keeper: threading.Thread | None = None
        self._closed = False

    def turn(self, timeout: float, read_into: list[Any] | None = None, limit: int = 0) -> None:
        """Wait up to ``timeout`` for input or a wake, then read, write and ping.

        ``read_into`` is the list ``on_message`` appends to: while each read adds a
        message to it and it holds fewer than ``limit``, the next packet is read too
        (paho reads one a call), so that a backlog comes in large batches.
        """
        client = self.client
        sock = client.socket()
        if sock is None:  # closed: on_disconnect has said why
            return
        pending = getattr(sock, "pending", None)  # TLS keeps decrypted bytes of its own
        if pending is not None and pending():
            timeout = 0.0
        fd = sock.fileno()
        writing = [fd] if client.want_write() else []
        try:
            readable, writable, _ = select.select([fd, self._wake_r], writing, [], timeout)
        except (OSError, ValueError):  # closed under us: paho's read finds out how
            readable, writable = [fd], []
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 512)
        if fd in readable:
            client.loop_read()
            if read_into is not None:
                before = 0
                while before < len(read_into) < limit and client.socket() is not None:
                    before = len(read_into)
                    client.loop_read()
        client.loop_misc()
        if writable or client.want_write():
            self.write()
        self._last_turn = time.monotonic()

    def write(self) -> None:
        """Write what paho queued (acks, pings, requests) as few segments as it can."""
        client = self.client
        sock = client.socket()
        if sock is None or not client.want_write():
            return
        if _CORK is None:
            client.loop_write()
            return
        # Corked, the packets written one by one leave in one segment, at the uncork.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1)  # type: ignore[attr-defined]
        try:
            client.loop_write()
        finally:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, _CORK, 0)  # type: ignore[attr-defined]

    def wake(self) -> None:
        """End a waiting turn; safe in a signal handler (one ``os.write``)."""
        if self._closed:
            return
        with contextlib.suppress(OSError):  # full (a wake is pending already) or closed
            os.write(self._wake_w, b"w")

    def write_all(self, timeout: float, failed: Callable[[], bool]) -> bool:
        """Write what paho has queued (the caller holds the lock); false on a timeout."""
        client = self.client
        deadline = time.monotonic() + timeout
        while client.want_write() and not failed():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.turn(min(left, 0.05))
        return True

    def start_keeper(self) -> None:
        """Start the thread that keeps the connection alive while no one turns."""
        self._keeper = threading.Thread(
            target=self._keep, name="missive-mqtt-keepalive", daemon=True
        )
        self._keeper.start()

    def _keep(self) -> None:
        interval = self._interval
        while not self._stopped.wait(interval):
            if time.monotonic() - self._last_turn < interval:
                continue
            if self.lock.acquire(blocking=False):
                try:
                    self.turn(0.0)
                except Exception:  # the delivery loop meets the failure on its next call
                    logger.debug("keepalive turn failed", exc_info=True)
                finally:
                    self.lock.release()

    def stop_keeper(self) -> None:
        """Stop the keeper thread: from then on, only the caller drives the client."""
        self._stopped.set()
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.join(5)

    def close(self) -> None:
        """Stop the keeper, close the client's socket and the wake pipe."""
        self.stop_keeper()
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._closed = True
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
