"""The WSGI adapter's development server: the standard library's, until a stop or a signal.

Imported only by :meth:`WSGIAdapter.run`: production servers never load ``http.server``.
"""

from __future__ import annotations

import logging
import socketserver
import threading
import wsgiref.simple_server
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from missive.adapters.wsgi import WSGIAdapter

__all__ = ["serve"]

# The adapter's logger: these lines are the adapter's own.
logger = logging.getLogger("missive.adapters.wsgi")


def serve(adapter: WSGIAdapter[Any], host: str, port: int) -> None:
    """Serve ``adapter`` on ``host:port``, ``adapter.concurrency`` requests at a time
    (a thread each above one), until it is stopped.

    Runs the processing hooks around serving; sets ``adapter.server_address``.
    """
    server = _make_server(host, port, adapter, adapter.body_timeout, adapter.concurrency)
    adapter.server_address = tuple(server.server_address[:2])
    server.timeout = 0.2
    with server, adapter.stop_on_signals():
        try:
            adapter.start()
            logger.info("serving on http://%s:%d%s", host, adapter.server_address[1], adapter.path)
            while not adapter.stop_requested:
                server.handle_request()
        finally:
            server.server_close()  # the requests in progress finish first
            adapter.close()


def _make_server(
    host: str, port: int, app: Any, timeout: float | None, concurrency: int = 1
) -> Any:
    class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
        # A socket timeout on every read of the connection, the body's included.
        pass

    QuietHandler.timeout = timeout

    class _Quiet(QuietHandler):
        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

    if concurrency == 1:
        return wsgiref.simple_server.make_server(host, port, app, handler_class=_Quiet)
    slots = threading.BoundedSemaphore(concurrency)

    class _Threaded(socketserver.ThreadingMixIn, wsgiref.simple_server.WSGIServer):
        # A request waits for a free thread: at most ``concurrency`` run at once. The
        # server waits for them when it closes (block_on_close).
        daemon_threads = False

        def process_request(self, request: Any, client_address: Any) -> None:
            slots.acquire()
            super().process_request(request, client_address)

        def process_request_thread(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                slots.release()

    return wsgiref.simple_server.make_server(
        host, port, app, server_class=_Threaded, handler_class=_Quiet
    )
