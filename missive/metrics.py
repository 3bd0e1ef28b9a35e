"""Prometheus metrics for Missive: an :class:`~missive.events.Observer` that counts.

Needs the ``prometheus`` extra (``pip install 'missive[prometheus]'``)::

    import missive.metrics

    missive.metrics.instrument(adapter)        # before adapter.run()
    body, content_type = missive.metrics.exposition()   # serve it on /metrics

The metrics, their labels and their cardinality are listed in ``docs/metrics.md``.
No payload, header or exception text ever becomes a label: only the transport's
system, the source it consumes, the handler's name, an outcome and a result.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``missive run --workers N``), every worker
writes its values there and :func:`exposition` adds them up across the workers.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from missive.errors import MissingExtraError

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )
except ImportError as _exc:  # pragma: no cover - exercised by a test in a subprocess
    raise MissingExtraError("prometheus", "missive.metrics") from _exc

from missive._metrics_collectors import DURATION_BUCKETS, NO_HANDLER, Children, collectors_for
from missive.events import Observer

if TYPE_CHECKING:
    from missive.adapters.base import Adapter
    from missive.context import HandlingContext, Outcome, ProcessingContext
    from missive.errors import MissiveError
    from missive.message import Message
    from missive.processor import Processor
    from missive.reason import DeadLetterReason

__all__ = [
    "DURATION_BUCKETS",
    "NO_HANDLER",
    "PrometheusMetrics",
    "exposition",
    "instrument",
    "mark_worker_dead",
]

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# One delivery on its way, from message_received to its settle event: [message (kept
# alive, so its id() stays unique), its last HandlingContext or None, outcome counted].
_Open = list[Any]


class PrometheusMetrics(Observer):
    """Counts messages, outcomes, handling time, reconnections, DLQ writes and backlog.

    Register it on the processor (or adapter) it observes, once, or use
    :func:`instrument`. Its labels ``adapter`` and ``source`` are the transport's
    ``system`` and ``source()`` of the adapter that last started (``worker_started``);
    empty until then (the test client starts none). One instance observes one run at
    a time: a processor shared by several adapters running together gets the labels
    of the last one started.

    Thread-safe: WSGI servers and ``concurrency`` above 1 call it from many threads.
    Each delivery ends in exactly one outcome: ``acked``, ``nacked`` (given back to
    the transport), ``retried`` (a delayed retry), ``dead_lettered`` or ``failed``
    (neither handled nor stored). The test client emits no settle events, so under
    it only ``dead_lettered``, ``failed`` and the durations are counted.

    :param registry: where to register the metrics; ``None``: prometheus_client's
        default ``REGISTRY``. Several observers share one set of metrics per registry.
    :raises ValueError: if ``registry`` already holds other metrics of these names.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._collectors = collectors = collectors_for(registry)
        # Made by worker_started, or by the first event with empty labels (the test
        # client): never before, so a run leaves no empty-labelled series behind.
        self._children: Children | None = None
        self._open: dict[int, _Open] = {}
        self._count_in_flight = collectors.multiprocess

    @property
    def labels(self) -> tuple[str, str]:
        """The ``(adapter, source)`` labels in use."""
        children = self._children
        return ("", "") if children is None else children.where

    def _label(self, labels: tuple[str, str]) -> Children:
        old = self._children
        children = self._children = Children(self._collectors, *labels)
        self._collectors.track(labels, self._open, None if old is None else old.where)
        return children

    def _unlabelled(self) -> Children:
        return self._label(("", ""))

    def worker_started(self, adapter: Any) -> None:
        labels = adapter_labels(adapter)
        if labels != self.labels or self._children is None:
            self._label(labels)

    def connection_lost(self, where: str, error: BaseException, retry_in: float) -> None:
        (self._children or self._unlabelled()).reconnections.inc()

    def backlog(self, depth: int) -> None:
        # Made on the first depth: a transport that cannot tell shows no backlog series.
        self._collectors.backlog.labels(*self.labels).set(depth)

    def message_received(self, message: Message, delivery_count: int | None) -> None:
        children = self._children or self._unlabelled()
        children.consumed.inc()
        if self._count_in_flight:
            children.in_flight.inc()
        self._open[id(message)] = [message, None, False]

    def handling_finished(
        self,
        pctx: ProcessingContext[Any],
        hctx: HandlingContext[Any],
        outcome: Outcome | None,
        duration: float,
    ) -> None:
        children = self._children or self._unlabelled()
        children.duration(hctx.handler_name or NO_HANDLER).observe(duration)
        entry = self._open.get(id(hctx.message))
        if entry is not None:
            entry[1] = hctx

    def acked(self, message: Message) -> None:
        self._settled(message, "acked")

    def requeued(self, message: Message, delay: float) -> None:
        self._settled(message, "nacked")

    def retried(self, message: Message, delay: float) -> None:
        self._settled(message, "retried")

    def lost(self, message: Message, error: MissiveError) -> None:
        self._settled(message, "failed")  # counted already, at dlq_write_failed

    def dead_lettered(self, message: Message, reason: DeadLetterReason) -> None:
        children = self._children or self._unlabelled()
        children.dlq_writes["stored"].inc()
        children.outcome(self._ended(message, reason), "dead_lettered").inc()

    def dlq_write_failed(
        self, message: Message, reason: DeadLetterReason, error: BaseException | None
    ) -> None:
        children = self._children or self._unlabelled()
        children.dlq_writes["no_dlq" if error is None else "failed"].inc()
        children.outcome(self._ended(message, reason), "failed").inc()

    def _ended(self, message: Message, reason: DeadLetterReason) -> str:
        """Note that ``message``'s outcome is counted; return its handler label.

        A message dead-lettered after its attempts is a copy carrying their history,
        not the object received: its settle event is known by its failed handling."""
        entry = self._open.get(id(message))
        if entry is not None:
            entry[2] = True
        return reason.handler or NO_HANDLER

    def _settled(self, message: Message, outcome: str) -> None:
        entry = self._open.pop(id(message), None)
        if entry is None:
            return
        children = self._children or self._unlabelled()
        if self._count_in_flight:
            children.in_flight.dec()
        hctx = entry[1]
        if hctx is None:
            if not entry[2]:
                children.outcome(NO_HANDLER, outcome).inc()
        elif outcome == "retried" or not (entry[2] or hctx.failure is not None):
            children.outcome(hctx.handler_name or NO_HANDLER, outcome).inc()


def adapter_labels(adapter: Any) -> tuple[str, str]:
    """The ``(adapter, source)`` labels of ``adapter``: its running transport's
    ``system`` and ``source()``; ``("http", path)`` for the WSGI adapter."""
    transport = getattr(adapter, "running_transport", None)
    if transport is not None:
        return str(getattr(transport, "system", "custom")), _source(transport)
    path = getattr(adapter, "path", None)
    if isinstance(path, str):
        return "http", path
    return "custom", ""


def _source(transport: Any) -> str:
    source = getattr(transport, "source", None)
    return str(source()) if callable(source) else ""


def instrument(
    target: Processor[Any] | Adapter[Any], registry: CollectorRegistry | None = None
) -> PrometheusMetrics:
    """Build a :class:`PrometheusMetrics` on ``registry``, register it on ``target``
    (a processor, or an adapter: its processor) and return it.

    Instrument a processor once: two observers on it would count every message twice.
    """
    metrics = PrometheusMetrics(registry)
    target.add_observer(metrics)
    return metrics


def exposition(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The metrics in Prometheus's text format: ``(body, content type)``.

    :param registry: the registry to read; ``None``: with ``PROMETHEUS_MULTIPROC_DIR``
        set, the values every worker process wrote there, added up (prometheus_client's
        ``MultiProcessCollector``); otherwise the default ``REGISTRY``.
    """
    if registry is None:
        if os.environ.get(_MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """Forget the live gauges (messages in flight, backlog) of worker ``pid``, which
    exited; its counters and histograms stay in the totals. A no-op outside
    multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` unset)."""
    if os.environ.get(_MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
