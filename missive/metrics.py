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
from bisect import bisect_left
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
from missive._metrics_local import BOUNDS, Shard, Store
from missive._metrics_rules import Ended, Open, adapter_labels, counted_as
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
_FIRST = DURATION_BUCKETS[0]


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

    In one process the per-message numbers are plain Python numbers, one set per
    thread, added up at each scrape (``docs/metrics.md``, "What it costs"); with
    ``PROMETHEUS_MULTIPROC_DIR`` set the instance is a subclass that updates
    prometheus_client's metrics, which write to that directory.

    :param registry: where to register the metrics; ``None``: prometheus_client's
        default ``REGISTRY``. Several observers share one set of metrics per registry.
    :raises ValueError: if ``registry`` already holds other metrics of these names.
    """

    def __new__(cls, registry: CollectorRegistry | None = None) -> PrometheusMetrics:
        kind: type[PrometheusMetrics] = cls
        if cls is PrometheusMetrics and collectors_for(registry).multiprocess:
            from missive._metrics_multiprocess import MultiprocessMetrics

            kind = MultiprocessMetrics
        return super().__new__(kind)

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._collectors = collectors_for(registry)
        # Made by worker_started, or by the first event with empty labels (the test
        # client): never before, so a run leaves no empty-labelled series behind.
        self._children: Children | None = None
        self._store: Store | None = None
        self._local: Any = None  # the store's threading.local: .shard is this thread's
        self._open: dict[int, Open] = {}

    @property
    def labels(self) -> tuple[str, str]:
        """The ``(adapter, source)`` labels in use."""
        children = self._children
        return ("", "") if children is None else children.where

    def _label(self, labels: tuple[str, str]) -> Children:
        children = Children(self._collectors, *labels)
        if self._store is not None:
            self._store.untrack(self._open)
        self._store = store = self._collectors.local.store(labels)
        store.track(self._open)
        self._local = store.local
        self._children = children
        return children

    def _unlabelled(self) -> Children:
        return self._label(("", ""))

    def _shard(self) -> Shard:
        """This thread's shard of the current store, made on its first event."""
        store = self._store
        if store is None:
            self._unlabelled()
            store = self._store
            assert store is not None
        return store.shard()

    def worker_started(self, adapter: Any) -> None:
        labels = adapter_labels(adapter)
        if labels != self.labels or self._children is None:
            self._label(labels)

    def connection_lost(self, where: str, error: BaseException, retry_in: float) -> None:
        (self._children or self._unlabelled()).reconnections.inc()

    def backlog(self, depth: int) -> None:
        # Made on the first depth: a transport that cannot tell shows no backlog series.
        self._collectors.backlog.labels(*self.labels).set(depth)

    # The per-message events: a few dict and list operations on this thread's shard.

    def message_received(self, message: Message, delivery_count: int | None) -> None:
        try:
            shard = self._local.shard
        except AttributeError:  # this thread's first event (or no labels yet)
            shard = self._shard()
        shard.consumed += 1
        self._open[id(message)] = message

    def handling_finished(
        self,
        pctx: ProcessingContext[Any],
        hctx: HandlingContext[Any],
        outcome: Outcome | None,
        duration: float,
    ) -> None:
        try:
            shard = self._local.shard
        except AttributeError:
            shard = self._shard()
        handler = hctx.handler_name  # None: NO_HANDLER, when exported
        counts = shard.durations.get(handler)
        if counts is None:
            counts = shard.histogram(handler)
        # Handlers at full speed take under a millisecond: skip the search for them.
        counts[0 if duration <= _FIRST else bisect_left(BOUNDS, duration)] += 1
        counts[-1] += duration
        key = id(hctx.message)
        if key in self._open:  # received: not under the test client, which settles none
            self._open[key] = hctx

    def acked(self, message: Message) -> None:
        # _settled(message, "acked"), inlined: every handled message ends here.
        entry = self._open.pop(id(message), None)
        if entry is None:
            return
        try:
            shard = self._local.shard
        except AttributeError:
            shard = self._shard()
        if entry is message:
            handler = None  # settled unhandled
        elif entry.__class__ is Ended or entry.failure is not None:
            return  # dead-lettered or failed: counted as such already
        else:
            handler = entry.handler_name
        handlers = shard.acked
        handlers[handler] = handlers.get(handler, 0) + 1

    def requeued(self, message: Message, delay: float) -> None:
        self._settled(message, "nacked")

    def retried(self, message: Message, delay: float) -> None:
        self._settled(message, "retried")

    def lost(self, message: Message, error: MissiveError) -> None:
        self._settled(message, "failed")  # counted already, at dlq_write_failed

    def dead_lettered(self, message: Message, reason: DeadLetterReason) -> None:
        children = self._children or self._unlabelled()
        children.dlq_writes["stored"].inc()
        self._count(self._ended(message, reason), "dead_lettered")

    def dlq_write_failed(
        self, message: Message, reason: DeadLetterReason, error: BaseException | None
    ) -> None:
        children = self._children or self._unlabelled()
        children.dlq_writes["no_dlq" if error is None else "failed"].inc()
        self._count(self._ended(message, reason), "failed")

    def _ended(self, message: Message, reason: DeadLetterReason) -> str:
        """Note that ``message``'s outcome is counted; return its handler label.

        A message dead-lettered after its attempts is a copy carrying their history,
        not the object received: its settle event is known by its failed handling."""
        key = id(message)
        if key in self._open:
            self._open[key] = Ended(message)
        return reason.handler or NO_HANDLER

    def _count(self, handler: str, outcome: str) -> None:
        """One more delivery of ``handler`` ended in ``outcome``."""
        self._shard_now().count(outcome, handler)

    def _settled(self, message: Message, outcome: str) -> None:
        """``message`` was settled as ``outcome``: count it, unless counted already."""
        entry = self._open.pop(id(message), None)
        if entry is None:
            return
        handler = counted_as(entry, message, outcome)
        if handler is not None:
            self._shard_now().count(outcome, handler)

    def _shard_now(self) -> Shard:
        local = self._local
        shard: Shard | None = None if local is None else getattr(local, "shard", None)
        return self._shard() if shard is None else shard


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
