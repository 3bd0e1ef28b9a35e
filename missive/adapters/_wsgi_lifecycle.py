"""One process's run of a WSGI adapter: the processing hooks once, the requests in
progress counted, a close that waits for them. A forked child gets a new run.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import TYPE_CHECKING, Generic

from missive._typing import M
from missive.context import ProcessingContext
from missive.runtime.push import PushDelivery

if TYPE_CHECKING:
    from missive.adapters.wsgi import WSGIAdapter

__all__ = ["ProcessRun"]

# The adapter's logger: these lines are the adapter's own.
logger = logging.getLogger("missive.adapters.wsgi")


class ProcessRun(Generic[M]):
    """The state behind :meth:`WSGIAdapter.start`, :meth:`~WSGIAdapter.close` and each request.

    :param closed: whether the adapter was closed already (a forked child keeps that).
    """

    __slots__ = ("active", "closed", "context", "lock", "push")

    def __init__(self, closed: bool = False) -> None:
        self.lock = threading.Condition()
        self.context: ProcessingContext[M] | None = None
        # Set with the context, and reset with it on close: a request's gate.
        self.push: PushDelivery[M] | None = None
        self.closed = closed
        self.active: list[None] = []  # one item per request in progress

    def start(self, adapter: WSGIAdapter[M]) -> None:
        """Enter the processing context unless it runs; see :meth:`WSGIAdapter.start`."""
        with self.lock:
            if self.closed:
                raise RuntimeError("this WSGI adapter is closed; create a new one")
            if self.context is None:
                context = adapter.processor.context()
                context.__enter__()
                push = PushDelivery(adapter, context)
                observers = adapter.processor.observers
                if observers:  # before any request can see the context
                    observers.worker_started(adapter)
                self.context, self.push = context, push
                atexit.register(adapter.close)
                adapter._set_ready()
                logger.info("processing started in process %d", os.getpid())

    def close(self, adapter: WSGIAdapter[M], timeout: float | None) -> None:
        """Take no more requests, wait for those in progress, exit the context."""
        with self.lock:
            self.closed = True
            adapter.stop()
            if not self.lock.wait_for(lambda: not self.active, timeout):
                logger.warning(
                    "closing with %d requests still in progress after %ss",
                    len(self.active),
                    timeout,
                )
            context, self.context, self.push = self.context, None, None
        atexit.unregister(adapter.close)
        if context is not None:
            observers = adapter.processor.observers
            if observers:
                observers.worker_stopping(adapter)
            logger.info("processing stopped in process %d", os.getpid())
            context.__exit__(None, None, None)

    def begin(self, adapter: WSGIAdapter[M]) -> PushDelivery[M] | None:
        """The running delivery with one more request in progress; ``None``: answer 503."""
        # Counted before the check, so that close() waits for it; list.append and
        # list.pop are atomic, which keeps locks off the common path.
        self.active.append(None)
        push = self.push
        if push is None or self.closed:
            push = self._start_for_request(adapter)
            if push is None:
                self.end()
        return push

    def _start_for_request(self, adapter: WSGIAdapter[M]) -> PushDelivery[M] | None:
        with self.lock:
            if self.closed:
                return None
            if self.push is None:
                try:
                    adapter.start()
                except Exception:
                    logger.exception("a before_processing hook failed; answering 503")
                    return None
            return self.push

    def end(self) -> None:
        """One request fewer in progress (after :meth:`begin` gave a delivery)."""
        self.active.pop()
        if self.closed:
            with self.lock:
                self.lock.notify_all()
