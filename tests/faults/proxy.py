"""A TCP proxy on 127.0.0.1 that a test can stall or cut, to break the path to a broker.

The adapter under test connects to the proxy's port instead of the broker's (through
its URL); each accepted connection is forwarded to the broker by two threads. Two
faults:

* :meth:`TCPProxy.stalled` stops forwarding for a while: the connections stay open
  but no byte goes through in either direction, as on a congested or flapping link.
* :meth:`TCPProxy.cut` resets every open connection (RST) and, for a while, resets
  every new one at once, as when a route or a NAT entry disappears.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

__all__ = ["TCPProxy"]

_CHUNK = 65536
_POLL = 0.05


def _reset(sock: socket.socket) -> None:
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TCPProxy:
    """Forwards 127.0.0.1:``port`` (chosen by the system) to ``target_port`` on 127.0.0.1.

    Use it as a context manager; leaving it resets every connection and stops it.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL)
        #: The port the proxy listens on.
        self.port: int = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._refusing = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        #: How many connections the proxy accepted and forwarded.
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, daemon=True, name="tcp-proxy")

    def __enter__(self) -> TCPProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, scheme_and_credentials: str, path: str) -> str:
        """``scheme_and_credentials`` + ``127.0.0.1:port`` + ``path``: an URL through the proxy."""
        return f"{scheme_and_credentials}127.0.0.1:{self.port}{path}"

    @property
    def open_connections(self) -> int:
        """How many client connections are open through the proxy now."""
        with self._lock:
            return len(self._sockets) // 2

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        """While in the block, nothing is forwarded; connections stay open."""
        self._forwarding.clear()
        try:
            yield
        finally:
            self._forwarding.set()

    def cut(self, seconds: float) -> None:
        """Reset every open connection, and every new one for ``seconds``; then forward again."""
        self._refusing.set()
        try:
            self._reset_all()
            time.sleep(seconds)
        finally:
            self._refusing.clear()

    def close(self) -> None:
        """Stop accepting, reset every connection and join the accepting thread."""
        self._closed.set()
        self._forwarding.set()
        self._reset_all()
        if self._thread.is_alive():
            self._thread.join(5)
        self._listener.close()

    def _reset_all(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            _reset(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._refusing.is_set():
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            self.accepted += 1
            for sock in (client, upstream):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pipe, args=(source, sink), daemon=True, name="tcp-proxy-pipe"
                ).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self._closed.is_set():
                self._forwarding.wait()
                readable, _, _ = select.select([source], [], [], _POLL)
                if not readable:
                    continue
                if not self._forwarding.is_set():
                    continue  # stalled between the wait and the select: read nothing
                data = source.recv(_CHUNK)
                if not data:
                    break
                sink.sendall(data)
        except (OSError, ValueError):
            pass  # reset by cut() or close(), or by the other side
        with self._lock:
            owned = source in self._sockets
            self._sockets.discard(source)
            self._sockets.discard(sink)
        if owned:
            _reset(source)
            _reset(sink)
