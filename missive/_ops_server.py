"""The operations server of ``missive run --http``: ``/healthz``, ``/readyz``, ``/metrics``.

The standard library's threading HTTP server, on daemon threads. Each probe
answers 200 or 503 with one line of text saying why; ``/metrics`` is Prometheus's
text format, or 404 with a line naming the extra to install when prometheus_client
is missing. Nothing a message carries reaches any answer.
"""

from __future__ import annotations

import http.server
import logging
import re
import socket
import threading
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["NO_METRICS", "OpsServer", "Probes", "metrics_exposition", "parse_address"]

logger = logging.getLogger("missive.health")

#: The body of ``/metrics`` without the prometheus extra.
NO_METRICS = b"metrics need prometheus_client: pip install 'missive[prometheus]'\n"

_ADDRESS = re.compile(
    r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]*)):(?P<port>\d{1,5})"
)

#: ``() -> (body, content type)``: the metrics as Prometheus reads them.
Exposition = Callable[[], tuple[bytes, str]]


class Probes(Protocol):
    """What the server asks: :class:`missive.health.Health`, or the supervisor's view of
    its workers. Both answer ``(ok, reason)``; called from the server's threads."""

    def live(self) -> tuple[bool, str]:
        """Whether the worker (every worker) is live, and why."""

    def ready(self) -> tuple[bool, str]:
        """Whether the worker (every worker) is consuming, and why."""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8000``; an empty host is every interface) as ``(host, port)``.

    :raises ValueError: saying what is wrong, in a line.
    """
    found = _ADDRESS.fullmatch(text) if text.isascii() else None
    port = int(found["port"]) if found else -1
    if found is None or port > 65535:
        raise ValueError(
            f"must be HOST:PORT, a port from 0 to 65535 (127.0.0.1:8000, [::1]:8000, "
            f":8000 for every interface), not {text[:60]!r}"
        )
    if found["ipv6"] is not None:
        return found["ipv6"], port
    return found["host"] or "0.0.0.0", port  # noqa: S104 - the user asked for every interface


def metrics_exposition(adapter: Any = None) -> Exposition | None:
    """:func:`missive.metrics.exposition`, after instrumenting ``adapter`` if given;
    ``None`` when the prometheus extra is not installed."""
    try:
        from missive import metrics
    except ImportError:
        return None
    if adapter is not None:
        metrics.instrument(adapter)
    return metrics.exposition


class OpsServer:
    """Serves ``probes`` and ``metrics`` on ``host:port`` until :meth:`close`.

    :param metrics: the exposition of ``/metrics``; ``None``: 404 naming the extra.
    :raises OSError: if the address cannot be bound.
    """

    def __init__(
        self, host: str, port: int, probes: Probes, metrics: Exposition | None = None
    ) -> None:
        self.probes = probes
        #: The exposition of ``/metrics``, or ``None`` for a 404 naming the extra.
        self.metrics = metrics
        server_class = _IPv6Server if ":" in host else _Server
        self._server = server_class((host, port), _handler(self))
        #: The bound ``(host, port)``: the port the system chose for port 0.
        self.address: tuple[str, int] = tuple(self._server.server_address[:2])  # type: ignore[assignment]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port``, for logs and tests."""
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> None:
        """Serve on a daemon thread from now on."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.2,), name="missive-http", daemon=True
        )
        self._thread.start()
        logger.info("serving /healthz, /readyz and /metrics on %s", self.url)

    def close(self) -> None:
        """Stop serving and release the port. Idempotent."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def answer(self, path: str) -> tuple[int, bytes, str]:
        """``(status, body, content type)`` for a GET of ``path``."""
        if path in ("/healthz", "/readyz"):
            ok, reason = self.probes.live() if path == "/healthz" else self.probes.ready()
            return (200 if ok else 503), f"{reason}\n".encode(), "text/plain; charset=utf-8"
        if path == "/metrics":
            if self.metrics is None:
                return 404, NO_METRICS, "text/plain; charset=utf-8"
            body, content_type = self.metrics()
            return 200, body, content_type
        return 404, b"not found: try /healthz, /readyz or /metrics\n", "text/plain; charset=utf-8"


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


def _handler(owner: OpsServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def version_string(self) -> str:
            return "missive"

        def do_GET(self) -> None:
            self._respond(head=False)

        def do_HEAD(self) -> None:
            self._respond(head=True)

        def _respond(self, head: bool) -> None:
            path = self.path.partition("?")[0]
            try:
                status, body, content_type = owner.answer(path)
            except Exception:
                logger.exception("answering %s failed", path)
                status, body, content_type = 500, b"internal error\n", "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

    return Handler
