"""The Prometheus collectors of :mod:`missive.metrics`: one set per registry, and the
label children one observer uses, looked up once per handler rather than per message."""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["DURATION_BUCKETS", "NO_HANDLER", "Children", "Collectors", "collectors_for"]

#: The ``handler`` label of a message no handler was chosen for (no route, several
#: routes, undecodable, over ``max_deliveries``): no handler's name is empty.
NO_HANDLER = ""

#: The upper bounds, in seconds, of the handling-duration histogram's buckets: from
#: a millisecond (handlers at full broker speed) to a minute (a slow call out).
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

_WHERE = ("adapter", "source")


class Collectors:
    """The metrics of one registry, shared by every observer that reports into it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        #: Whether values go to PROMETHEUS_MULTIPROC_DIR: then the in-flight gauge is
        #: kept by inc and dec; else it is read at each scrape, costing nothing per message.
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # (adapter, source) -> the open deliveries of each observer with those labels.
        self._open: dict[tuple[str, str], list[dict[int, Any]]] = {}
        self._lock = threading.Lock()
        self.consumed = Counter(
            "messaging_client_consumed_messages",
            "Deliveries received from the transport, redeliveries included.",
            _WHERE,
            registry=registry,
        )
        self.outcomes = Counter(
            "missive_message_outcomes",
            "What became of each delivery: acked, nacked, retried, dead_lettered, failed.",
            (*_WHERE, "handler", "outcome"),
            registry=registry,
        )
        self.duration = Histogram(
            "messaging_process_duration_seconds",
            "Time to handle one attempt (hooks and handler), by handler.",
            (*_WHERE, "handler"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        # livesum: a worker's messages in flight end with it (mark_worker_dead).
        self.in_flight = Gauge(
            "missive_messages_in_flight",
            "Deliveries received and not yet settled.",
            _WHERE,
            multiprocess_mode="livesum",
            registry=registry,
        )
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

    def track(
        self, where: tuple[str, str], open_map: dict[int, Any], old: tuple[str, str] | None
    ) -> None:
        """Count ``open_map``'s deliveries in the in-flight gauge of ``where`` (no longer
        in that of ``old``), when it is read at each scrape."""
        if self.multiprocess:
            return
        with self._lock:
            before = None if old is None else self._open.get(old)
            if before is not None and open_map in before:
                before.remove(open_map)
            maps = self._open.get(where)
            if maps is None:
                maps = self._open[where] = []
                self.in_flight.labels(*where).set_function(
                    lambda: sum(len(deliveries) for deliveries in maps)
                )
            if open_map not in maps:
                maps.append(open_map)


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
        self.consumed: Any = collectors.consumed.labels(adapter, source)
        self.in_flight: Any = collectors.in_flight.labels(adapter, source)
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
