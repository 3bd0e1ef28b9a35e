"""WSGIAdapter: a processor as a web application, one message per POST (webhooks).

Run it under any WSGI server; the adapter itself is the application::

    adapter = WSGIAdapter(missive.JSONMessage, processor)
    # gunicorn --workers 4 --threads 8 mymodule:adapter

Standard library only. See ``docs/wsgi.md`` for status codes, limits and signatures.
"""

from __future__ import annotations

import logging
import math
import os
import weakref
from collections.abc import Iterable
from typing import Any

from missive._typing import M
from missive.adapters._wsgi_lifecycle import ProcessRun
from missive.adapters._wsgi_request import RejectedError, request_message
from missive.adapters._wsgi_response import (
    StartResponse,
    failed,
    log_bug,
    log_failure,
    refused,
    respond,
    respond_outcome,
    unavailable,
)
from missive.adapters._wsgi_signature import HMACSignature, SignatureVerifier, StripeSignature
from missive.adapters.base import Adapter
from missive.attempts import RetryLater
from missive.processor import Processor
from missive.runtime.policy import Requeue, Verdict
from missive.runtime.push import PushDelivery

__all__ = [
    "DEFAULT_DROP_HEADERS",
    "HMACSignature",
    "SignatureVerifier",
    "StripeSignature",
    "WSGIAdapter",
]

logger = logging.getLogger("missive.adapters.wsgi")

#: Headers left out of message attributes by default: credentials do not belong in a DLQ.
DEFAULT_DROP_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_ACK = Verdict.ACK
_DEAD_LETTERED = Verdict.DEAD_LETTERED
_REQUEUE = Verdict.REQUEUE


class WSGIAdapter(Adapter[M]):
    """A WSGI application that turns each POST to ``path`` into one message.

    The adapter instance is the WSGI callable (``gunicorn mymodule:adapter``);
    :attr:`app` is the same object. The message's bytes are the request body; its
    attributes are ``method``, ``path``, ``query_string``, ``remote_addr`` and
    ``headers`` (a dict, names lower-case, without ``drop_headers``).

    The response says what became of the message, as a small JSON document:

    * ACKED: 200. NACKED: 503 with ``Retry-After``: the sender should retry (after
      the handler's ``nack(delay=...)``, rounded up, if it gave one).
    * Due a delayed retry (the retry policy, or ``ctx.retry()``): 503 with
      ``Retry-After`` set to the policy's next delay, in seconds rounded up; the
      sender keeps the message meanwhile. Each request is a first delivery: over
      HTTP the sender, not Missive, keeps count of its retries.
    * DEAD_LETTERED: 202 with the message id: it is stored, so do not retry.
    * Not handled and no DLQ (HandlingError), or the DLQ write failed
      (DLQWriteError): 500, the message is not stored; the reason goes to the log.
    * Refused before processing: 400 (bad length), 401 (signature), 404 (other
      paths), 405 (other methods, with ``Allow``), 413 (body over the limit), 503
      (the processing hooks failed, or the adapter is closed).

    **Processing hooks** run once per process: ``before_processing`` on the first
    request (or :meth:`start`), under a lock, and ``after_processing`` on
    :meth:`close`, which runs at interpreter exit (``atexit``) or from a server hook
    such as gunicorn's ``worker_exit``. A forked child starts its own run. Observers
    see ``worker_started`` there, ``worker_stopping`` on :meth:`close`, and the
    delivery events of each message (a 503 is ``requeued``, a 500 neither settled).

    **Threads**: requests may be processed on several threads at once (gunicorn
    ``--threads``), so handlers must be thread-safe. :meth:`close` waits for the
    requests in progress before running the ``after_processing`` hooks.

    :param message_cls: the message class to build each request body into.
    :param processor: the processor to run.
    :param path: the path that accepts messages.
    :param health_path: the path answering ``GET`` with 200 once the processing hooks
        ran (503 if they failed or the adapter is closed); ``None`` for none.
    :param ready_path: the path answering ``GET`` as ``health_path`` does, but 503 as
        soon as a stop is requested (:meth:`stop`, SIGTERM under :meth:`run`,
        :meth:`close`): a readiness probe; ``None`` for none.
    :param max_body_size: the largest body accepted, in bytes (1 MiB by default).
    :param signature: a :class:`SignatureVerifier` (:class:`HMACSignature`,
        :class:`StripeSignature`) every request must pass, else 401.
    :param message_id_header: a header holding the sender's message id
        (``"X-Message-Id"``, ``"Idempotency-Key"``); without it ids are generated.
    :param body_timeout: seconds reading the whole body may take (10 by default),
        else 408; enforced where the server exposes the socket (gunicorn), per
        read in :meth:`run`; ``None`` for no limit. See ``docs/wsgi.md``.
    :param retry_after: seconds sent in ``Retry-After`` with a 503.
    :param drop_headers: header names (any case) left out of the message attributes.
    :param concurrency: how many requests :meth:`run`'s development server handles at
        once (a thread each). Under gunicorn or uwsgi the server decides (``--threads``,
        workers), and this is ignored.
    :raises ValueError: for a path not starting with ``/``, equal paths, or negative sizes.
    """

    #: The address :meth:`run` serves on, once it serves.
    server_address: tuple[str, int]

    def __init__(
        self,
        message_cls: type[M],
        processor: Processor[M],
        *,
        path: str = "/",
        health_path: str | None = "/healthz",
        ready_path: str | None = "/readyz",
        max_body_size: int = 1024 * 1024,
        signature: SignatureVerifier | None = None,
        message_id_header: str | None = None,
        retry_after: int = 30,
        body_timeout: float | None = 10,
        drop_headers: Iterable[str] = DEFAULT_DROP_HEADERS,
        concurrency: int = 1,
    ) -> None:
        super().__init__(message_cls, processor, concurrency=concurrency)
        paths = (("path", path), ("health_path", health_path), ("ready_path", ready_path))
        for name, value in paths:
            if value is not None and not value.startswith("/"):
                raise ValueError(f"{name} must start with '/', not {value!r}")
        for (name, value), (other, other_value) in zip(paths, paths[1:] + paths[:1], strict=True):
            if value is not None and value == other_value:
                raise ValueError(f"{name} and {other} must differ, both are {value!r}")
        if max_body_size < 0 or retry_after < 0:
            raise ValueError("max_body_size and retry_after must be at least 0")
        self.path = path
        self.health_path = health_path
        self.ready_path = ready_path
        self.max_body_size = max_body_size
        self.signature = signature
        self.message_id_header = message_id_header.lower() if message_id_header else None
        self.retry_after = retry_after
        self.body_timeout = body_timeout
        self.drop_headers = frozenset(name.lower() for name in drop_headers)
        self._retry_headers = [("Retry-After", str(retry_after))]
        self._process_run: ProcessRun[M] = ProcessRun()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _reset_in_child(ref))

    @property
    def app(self) -> WSGIAdapter[M]:
        """The WSGI application: the adapter itself."""
        return self

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        """Run the ``before_processing`` hooks now, if they have not run in this process.

        Called by the first request otherwise. Thread-safe and idempotent.

        :raises RuntimeError: if the adapter is closed.
        :raises Exception: whatever a ``before_processing`` hook raised; the next
            call (or request) tries again.
        """
        self._process_run.start(self)

    def close(self, timeout: float | None = None) -> None:
        """Stop taking messages, wait for those in progress, run the ``after_processing`` hooks.

        Requests arriving meanwhile or later get 503 and are not processed.
        Idempotent; called at interpreter exit if processing started. Call it from
        a server's worker-exit hook for an earlier, surer shutdown.

        :param timeout: the longest wait for requests in progress, in seconds
            (``None``: as long as they take). The hooks run after it either way.
        :raises Exception: what an ``after_processing`` hook raised.
        """
        self._process_run.close(self, timeout)

    # -- requests -------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """Answer one request; see the class docstring for what each status means."""
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path != self.path:
            if path == self.health_path:
                return self._health(method, start_response)
            if path == self.ready_path:
                return self._health(method, start_response, readiness=True)
            return respond(start_response, 404, {"status": "not found"})
        if method != "POST":
            return respond(
                start_response, 405, {"status": "method not allowed"}, [("Allow", "POST")]
            )
        try:
            message = request_message(self, environ, path)
        except RejectedError as rejected:
            return refused(start_response, path, rejected)
        run = self._process_run
        push = run.begin(self)
        if push is None:
            return self._unavailable(start_response)
        try:
            return self._process(push, message, start_response)
        finally:
            run.end()

    def _process(
        self, push: PushDelivery[M], message: M, start_response: StartResponse
    ) -> list[bytes]:
        try:
            verdict = push.deliver(message)
        except Exception as exc:  # a bug in Missive or in the message class
            log_bug(message, exc)
            return failed(start_response, message)
        if verdict is _ACK:
            return respond_outcome(start_response, 200, "acked", message.message_id)
        if verdict is _DEAD_LETTERED:
            return respond_outcome(start_response, 202, "dead-lettered", message.message_id)
        if verdict is _REQUEUE:
            logger.debug("message %r nacked: answered 503", message.message_id)
            return respond_outcome(
                start_response, 503, "nacked", message.message_id, self._retry_headers
            )
        if isinstance(verdict, RetryLater | Requeue):  # a delay: the policy's or the handler's
            outcome = "nacked" if isinstance(verdict, Requeue) else "retry"
            logger.debug("message %r: %s, answered 503", message.message_id, outcome)
            headers = [("Retry-After", str(math.ceil(verdict.delay)))]
            return respond_outcome(start_response, 503, outcome, message.message_id, headers)
        if isinstance(verdict, Verdict):  # RETRY, LOST, STOP: not from a push delivery
            logger.error("message %r: verdict %s; answered 500", message.message_id, verdict)
        else:
            log_failure(message, verdict)
        return failed(start_response, message)

    def _unavailable(self, start_response: StartResponse, head: bool = False) -> list[bytes]:
        return unavailable(start_response, self.retry_after, self._retry_headers, head)

    def _health(
        self, method: str, start_response: StartResponse, readiness: bool = False
    ) -> list[bytes]:
        if method not in ("GET", "HEAD"):
            document = {"status": "method not allowed"}
            return respond(start_response, 405, document, [("Allow", "GET, HEAD")])
        head = method == "HEAD"
        run = self._process_run
        if run.begin(self) is None:
            return self._unavailable(start_response, head)
        run.end()
        if readiness and self.stop_requested:  # draining: no new messages wanted
            return respond(start_response, 503, {"status": "stopping"}, head=head)
        return respond(start_response, 200, {"status": "ok"}, head=head)

    # -- development server ----------------------------------------------------------

    def run(self, host: str = "127.0.0.1", port: int = 8000) -> None:
        """Serve on ``host:port`` with the standard library's server, for development only.

        Up to ``concurrency`` requests at once (one by default), no TLS: use gunicorn
        or uwsgi in production. Returns
        after :meth:`stop`, SIGINT or SIGTERM, having run the ``after_processing``
        hooks. :attr:`server_address` holds the bound address (for ``port=0``).
        """
        from missive.adapters._wsgi_devserver import serve  # loads http.server

        serve(self, host, port)


def _reset_in_child(ref: weakref.ref[WSGIAdapter[Any]]) -> None:
    adapter = ref()
    if adapter is not None:
        adapter._process_run = ProcessRun(adapter._process_run.closed)
