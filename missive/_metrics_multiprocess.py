""":class:`~missive.metrics.PrometheusMetrics` with ``PROMETHEUS_MULTIPROC_DIR`` set.

There a scrape reads the files every worker wrote, not this process's memory, so
each per-message number is a prometheus_client update (it writes the file), and the
in-flight gauge is kept by ``inc`` and ``dec`` rather than read at scrape time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from missive._metrics_local import NO_HANDLER
from missive._metrics_rules import counted_as
from missive.metrics import PrometheusMetrics

if TYPE_CHECKING:
    from missive.context import HandlingContext, Outcome, ProcessingContext
    from missive.message import Message

__all__ = ["MultiprocessMetrics"]


class MultiprocessMetrics(PrometheusMetrics):
    """What :class:`PrometheusMetrics` builds in multiprocess mode: the same events and
    rules, counted in prometheus_client's metrics."""

    def message_received(self, message: Message, delivery_count: int | None) -> None:
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
        (self._children or self._unlabelled()).outcome(handler, outcome).inc()

    def _settled(self, message: Message, outcome: str) -> None:
        entry = self._open.pop(id(message), None)
        if entry is None:
            return
        children = self._children or self._unlabelled()
        children.in_flight.dec()
        handler = counted_as(entry, message, outcome)
        if handler is not None:
            children.outcome(handler, outcome).inc()
