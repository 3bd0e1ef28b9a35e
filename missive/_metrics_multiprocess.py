""":class:`~missive.metrics.PrometheusMetrics` with ``PROMETHEUS_MULTIPROC_DIR`` set.

There a scrape reads the files every worker wrote, not this process's memory, and
each prometheus_client update locks and writes a memory-mapped file (about a
microsecond and a half). Where a delivery loop runs (the observer has seen
``polled``), the counters of received messages and outcomes are counted in this
process's per-thread numbers, as in one process, and added to prometheus_client's
metrics at most every :data:`FLUSH_INTERVAL` seconds (from a receive, its heartbeat
or a settle event) and when the worker stops; the in-flight gauge is set then. The
histogram has no public way to add many observations at once: it is observed per
message. Without a loop (WSGI, events called directly) every update is made at once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from missive._metrics_local import NO_HANDLER
from missive._metrics_rules import counted_as
from missive.metrics import PrometheusMetrics

if TYPE_CHECKING:
    from missive._metrics_collectors import Children
    from missive.context import HandlingContext, Outcome, ProcessingContext
    from missive.message import Message

__all__ = ["FLUSH_INTERVAL", "MultiprocessMetrics"]

#: The longest a count waits in this process before it reaches the metrics' files,
#: while messages come or the loop polls (the loop's heartbeat is ``poll_timeout``).
FLUSH_INTERVAL = 0.5


class MultiprocessMetrics(PrometheusMetrics):
    """What :class:`PrometheusMetrics` builds in multiprocess mode: the same events and
    rules, reaching prometheus_client's metrics (and through them, its files)."""

    _batched = False  # set at the first polled: a delivery loop runs
    _due = 0.0

    def polled(self, count: int) -> None:
        self._batched = True
        self._flush_if_due()

    def worker_stopping(self, adapter: Any) -> None:
        self._flush()

    def _label(self, labels: tuple[str, str]) -> Children:
        self._flush()  # what was counted under the labels before
        return super()._label(labels)

    def message_received(self, message: Message, delivery_count: int | None) -> None:
        if self._batched:
            self._shard_now().consumed += 1
        else:
            children = self._children or self._unlabelled()
            children.consumed.inc()
            children.in_flight.inc()
        self._open[id(message)] = message

    def handling_finished(
        self,
        pctx: ProcessingContext[Any],
        hctx: HandlingContext[Any],
        outcome: Outcome | None,
        duration: float,
    ) -> None:
        children = self._children or self._unlabelled()
        children.duration(hctx.handler_name or NO_HANDLER).observe(duration)
        key = id(hctx.message)
        if key in self._open:
            self._open[key] = hctx

    def acked(self, message: Message) -> None:
        self._settled(message, "acked")

    def _count(self, handler: str, outcome: str) -> None:
        if self._batched:
            self._shard_now().count(outcome, handler)
        else:
            (self._children or self._unlabelled()).outcome(handler, outcome).inc()

    def _settled(self, message: Message, outcome: str) -> None:
        entry = self._open.pop(id(message), None)
        if entry is None:
            return
        handler = counted_as(entry, message, outcome)
        if self._batched:
            if handler is not None:
                self._shard_now().count(outcome, handler)
            self._flush_if_due()
            return
        children = self._children or self._unlabelled()
        children.in_flight.dec()
        if handler is not None:
            children.outcome(handler, outcome).inc()

    def _flush_if_due(self) -> None:
        now = time.monotonic()
        if now >= self._due:
            self._due = now + FLUSH_INTERVAL
            self._flush()

    def _flush(self) -> None:
        """Add what was counted here since the last flush to prometheus_client's metrics."""
        store, children = self._store, self._children
        if store is None or children is None or not self._batched:
            return
        new = store.since_last()
        if new.consumed:
            children.consumed.inc(new.consumed)
        for outcome, handlers in new.outcomes.items():
            for handler, count in handlers.items():
                children.outcome(handler or NO_HANDLER, outcome).inc(count)
        children.in_flight.set(store.in_flight())
