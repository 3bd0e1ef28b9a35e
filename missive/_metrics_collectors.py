"""The Prometheus collectors of :mod:`missive.metrics`: one set per registry, and the
label children one observer uses, looked up once per handler rather than per message.

In one process the per-message metrics (received, outcomes, durations, in flight)
are a :class:`~missive._metrics_local.LocalCollector`, read at each scrape; with
``PROMETHEUS_MULTIPROC_DIR`` set they are prometheus_client metrics, which write to
its files. The rarer ones (reconnections, DLQ writes, backlog) are metrics in both.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from missive._metrics_local import (
    CONSUMED,
    DURATION,
    DURATION_BUCKETS,
    HELP,
    IN_FLIGHT,
    NO_HANDLER,
    OUTCOMES,
    LocalCollector,
)

__all__ = ["DURATION_BUCKETS", "NO_HANDLER", "Children", "Collectors", "collectors_for"]

_WHERE = ("adapter", "source")


class Collectors:
    """The metrics of one registry, shared by every observer that reports into it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        #: Whether values go to PROMETHEUS_MULTIPROC_DIR: then the per-message metrics
        #: are prometheus_client's, and :attr:`local`'s numbers are added to them from
        #: time to time; else :attr:`local` is registered, and read at each scrape.
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.local = LocalCollector()
        self.consumed: Any = None
        self.outcomes: Any = None
        self.duration: Any = None
        self.in_flight: Any = None
        if self.multiprocess:
            self._register_per_message(registry)
        else:
            registry.register(self.local)
        self.reconnections = Counter(
            "missive_reconnections",
            "Connections to the broker lost or refused (each reconnection attempt).",
            _WHERE,
            registry=registry,
        )
        self.dlq_writes = Counter(
            "missive_dlq_writes",
            "Writes to the dead-letter queue, by result: stored, failed, no_dlq.",
            (*_WHERE, "result"),
            registry=registry,
        )
        # Every worker of one queue sees the same depth: the freshest live one counts.
        self.backlog = Gauge(
            "missive_backlog_messages",
            "Messages waiting for this consumer, as the broker last counted them.",
            _WHERE,
            multiprocess_mode="livemostrecent",
            registry=registry,
        )

    def _register_per_message(self, registry: CollectorRegistry) -> None:
        """The per-message metrics as prometheus_client metrics (multiprocess mode)."""
        self.consumed = Counter(CONSUMED, HELP[CONSUMED], _WHERE, registry=registry)
        self.outcomes = Counter(
            OUTCOMES, HELP[OUTCOMES], (*_WHERE, "handler", "outcome"), registry=registry
        )
        self.duration = Histogram(
            DURATION,
            HELP[DURATION],
            (*_WHERE, "handler"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # livesum: a worker's messages in flight end with it (mark_worker_dead).
        self.in_flight = Gauge(
            IN_FLIGHT, HELP[IN_FLIGHT], _WHERE, multiprocess_mode="livesum", registry=registry
        )


_sets: weakref.WeakKeyDictionary[CollectorRegistry, Collectors] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def collectors_for(registry: CollectorRegistry | None) -> Collectors:
    """The collectors registered in ``registry`` (``None``: the default one), made once."""
    key = REGISTRY if registry is None else registry
    with _lock:
        collectors = _sets.get(key)
        if collectors is None:
            collectors = _sets[key] = Collectors(key)
        return collectors


class Children:
    """The label children of one (adapter, source): each made on first use, then reused.
    ``consumed``, ``in_flight``, :meth:`outcome` and :meth:`duration` exist only in
    multiprocess mode (elsewhere they are ``None``, and the store counts them).

    Dict reads and writes are atomic, and ``labels()`` returns the same child to two
    threads racing to make it, so no lock is needed here.
    """

    __slots__ = (
        "_durations",
        "_outcomes",
        "collectors",
        "consumed",
        "dlq_writes",
        "in_flight",
        "reconnections",
        "where",
    )

    def __init__(self, collectors: Collectors, adapter: str, source: str) -> None:
        self.collectors = collectors
        self.where = (adapter, source)
        mp = collectors.multiprocess
        self.consumed: Any = collectors.consumed.labels(adapter, source) if mp else None
        self.in_flight: Any = collectors.in_flight.labels(adapter, source) if mp else None
        self.reconnections: Any = collectors.reconnections.labels(adapter, source)
        self.dlq_writes: dict[str, Any] = {
            result: collectors.dlq_writes.labels(adapter, source, result)
            for result in ("stored", "failed", "no_dlq")
        }
        self._outcomes: dict[tuple[str, str], Any] = {}
        self._durations: dict[str, Any] = {}

    def outcome(self, handler: str, outcome: str) -> Any:
        """The outcome counter child of ``handler`` and ``outcome``."""
        key = (handler, outcome)
        child = self._outcomes.get(key)
        if child is None:
            child = self._outcomes[key] = self.collectors.outcomes.labels(
                *self.where, handler, outcome
            )
        return child

    def duration(self, handler: str) -> Any:
        """The duration histogram child of ``handler``."""
        child = self._durations.get(handler)
        if child is None:
            child = self._durations[handler] = self.collectors.duration.labels(*self.where, handler)
        return child
