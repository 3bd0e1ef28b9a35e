"""The per-message metrics of one process, kept in plain Python numbers and exported
at scrape time: :mod:`missive.metrics` without ``PROMETHEUS_MULTIPROC_DIR``.

A message costs a few attribute, dict and list operations here instead of three
locked prometheus_client updates. Each thread writes only its own :class:`Shard`
(a ``threading.local``), so ``+=`` needs no lock: no two threads ever update one
number. A scrape adds the shards up. A thread's shard outlives it: once the thread
has ended its numbers are folded into the store's ``retired`` shard, so a server
that starts a thread per request keeps one shard per live thread, not per request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

__all__ = ["BOUNDS", "DURATION_BUCKETS", "NO_HANDLER", "LocalCollector", "Shard", "Store"]

#: The ``handler`` label of a message no handler was chosen for (no route, several
#: routes, undecodable, over ``max_deliveries``): no handler's name is empty.
NO_HANDLER = ""

#: The upper bounds, in seconds, of the handling-duration histogram's buckets: from
#: a millisecond (handlers at full broker speed) to a minute (a slow call out).
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

#: The duration buckets' upper bounds with ``+Inf``: ``bisect_left(BOUNDS, d)`` is the
#: bucket of ``d`` (Prometheus's ``le``: the first bound not below it).
BOUNDS = (*DURATION_BUCKETS, float("inf"))
_SUM = -1  # a histogram list holds one count per bucket, then the sum of durations

CONSUMED = "messaging_client_consumed_messages"
OUTCOMES = "missive_message_outcomes"
DURATION = "messaging_process_duration_seconds"
IN_FLIGHT = "missive_messages_in_flight"
HELP = {
    CONSUMED: "Deliveries received from the transport, redeliveries included.",
    OUTCOMES: "What became of each delivery: acked, nacked, retried, dead_lettered, failed.",
    DURATION: "Time to handle one attempt (hooks and handler), by handler.",
    IN_FLIGHT: "Deliveries received and not yet settled.",
}
_WHERE = ["adapter", "source"]


class Shard:
    """The numbers one thread wrote: only that thread changes them."""

    __slots__ = ("acked", "consumed", "durations", "outcomes", "thread")

    def __init__(self, thread: threading.Thread | None = None) -> None:
        self.thread = thread
        #: Deliveries received.
        self.consumed = 0
        #: outcome -> handler -> deliveries; ``acked`` is ``outcomes["acked"]``. A
        #: handler is its name, or ``None`` for none (exported as :data:`NO_HANDLER`).
        self.outcomes: dict[str, dict[str | None, int]] = {"acked": {}}
        self.acked = self.outcomes["acked"]
        #: handler -> one count per bucket of ``BOUNDS``, then the sum of the durations.
        self.durations: dict[str | None, list[float]] = {}

    def histogram(self, handler: str | None) -> list[float]:
        """The duration list of ``handler``, made on first use."""
        counts = self.durations.get(handler)
        if counts is None:
            counts = self.durations[handler] = [0.0] * (len(BOUNDS) + 1)
        return counts

    def count(self, outcome: str, handler: str | None, deliveries: int = 1) -> None:
        """``deliveries`` more deliveries of ``handler`` ended in ``outcome``."""
        handlers = self.outcomes.get(outcome)
        if handlers is None:
            handlers = self.outcomes[outcome] = {}
        handlers[handler] = handlers.get(handler, 0) + deliveries

    def add(self, other: Shard) -> None:
        """Add ``other``'s numbers to this one's (``other`` may be written meanwhile:
        its dicts and lists are copied first, which the GIL makes atomic)."""
        self.consumed += other.consumed
        for outcome, handlers in other.outcomes.copy().items():
            mine = self.outcomes.setdefault(outcome, {})
            for handler, count in handlers.copy().items():
                key = handler or NO_HANDLER
                mine[key] = mine.get(key, 0) + count
        for handler, counts in other.durations.copy().items():
            total = self.histogram(handler or NO_HANDLER)
            for i, value in enumerate(counts[:]):
                total[i] += value


class Store:
    """The numbers of one ``(adapter, source)`` in one registry, in per-thread shards."""

    def __init__(self, where: tuple[str, str]) -> None:
        self.where = where
        #: ``local.shard`` is the calling thread's shard, once it has one.
        self.local = threading.local()
        self._shards: list[Shard] = []
        self._retired = Shard()  # the numbers of threads that ended
        self._lock = threading.Lock()
        self._flushed = Shard()  # the total at the last since_last()
        self._flush_lock = threading.Lock()
        # The open deliveries of each observer with these labels: the in-flight gauge.
        self._open: list[dict[int, Any]] = []

    def track(self, open_map: dict[int, Any]) -> None:
        """Count ``open_map``'s deliveries (an observer's) as in flight here."""
        with self._lock:
            if not any(known is open_map for known in self._open):
                self._open.append(open_map)

    def untrack(self, open_map: dict[int, Any]) -> None:
        """No longer count ``open_map``'s deliveries here (its observer moved on)."""
        with self._lock:
            self._open = [known for known in self._open if known is not open_map]

    def in_flight(self) -> int:
        """The deliveries received and not yet settled, now."""
        with self._lock:
            maps = list(self._open)
        return sum(len(deliveries) for deliveries in maps)

    def shard(self) -> Shard:
        """The calling thread's shard, made and registered on its first event."""
        shard = getattr(self.local, "shard", None)
        if shard is None:
            shard = Shard(threading.current_thread())
            with self._lock:
                self._retire()
                self._shards.append(shard)
            self.local.shard = shard
        return shard

    def shard_count(self) -> int:
        """How many threads' shards are kept apart (those of live threads, and the
        retired one of ended threads): for tests and debugging."""
        with self._lock:
            self._retire()
            return len(self._shards) + 1

    def _retire(self) -> None:
        """Fold the shards of threads that ended into ``_retired`` (under the lock)."""
        ended = [s for s in self._shards if s.thread is not None and not s.thread.is_alive()]
        for shard in ended:
            self._retired.add(shard)
            self._shards.remove(shard)

    def since_last(self) -> Shard:
        """The numbers counted since the last call (what a multiprocess flush adds to
        prometheus_client's metrics): each number is in exactly one call's answer."""
        with self._flush_lock:
            total = self.total()
            new = Shard()
            new.consumed = total.consumed - self._flushed.consumed
            for outcome, handlers in total.outcomes.items():
                before = self._flushed.outcomes.get(outcome, {})
                for handler, count in handlers.items():
                    if count != before.get(handler, 0):
                        new.count(outcome, handler, count - before.get(handler, 0))
            self._flushed = total
            return new

    def total(self) -> Shard:
        """The sum of every shard, now."""
        total = Shard()
        with self._lock:
            self._retire()
            for shard in (self._retired, *self._shards):
                total.add(shard)
        return total


class LocalCollector:
    """A prometheus_client custom collector: the stores of one registry, exported on
    each scrape as the families the multiprocess mode registers as metric objects."""

    def __init__(self) -> None:
        self._stores: dict[tuple[str, str], Store] = {}
        self._lock = threading.Lock()

    def store(self, where: tuple[str, str]) -> Store:
        """The store of ``where``, made once; its series exist from then on."""
        with self._lock:
            store = self._stores.get(where)
            if store is None:
                store = self._stores[where] = Store(where)
            return store

    def describe(self) -> Iterator[Metric]:
        """The families, without samples: what the registry checks names against."""
        return self._families([])

    def collect(self) -> Iterator[Metric]:
        """The families, with every store's numbers as they are now."""
        with self._lock:
            stores = list(self._stores.values())
        return self._families([(store.where, store.total(), store.in_flight()) for store in stores])

    def _families(self, totals: list[tuple[tuple[str, str], Shard, int]]) -> Iterator[Metric]:
        consumed = CounterMetricFamily(CONSUMED, HELP[CONSUMED], labels=_WHERE)
        outcomes = CounterMetricFamily(
            OUTCOMES, HELP[OUTCOMES], labels=[*_WHERE, "handler", "outcome"]
        )
        duration = HistogramMetricFamily(DURATION, HELP[DURATION], labels=[*_WHERE, "handler"])
        in_flight = GaugeMetricFamily(IN_FLIGHT, HELP[IN_FLIGHT], labels=_WHERE)
        for where, total, open_now in totals:
            consumed.add_metric(where, total.consumed)
            in_flight.add_metric(where, open_now)
            for outcome, handlers in total.outcomes.items():
                for handler, count in handlers.items():
                    outcomes.add_metric([*where, handler or NO_HANDLER, outcome], count)
            for handler, counts in total.durations.items():
                duration.add_metric([*where, handler or NO_HANDLER], *_buckets(counts))
        yield from (consumed, outcomes, duration, in_flight)


def _buckets(counts: list[float]) -> tuple[list[tuple[str, float]], float]:
    """A histogram list as prometheus_client's cumulative ``(le, count)`` pairs and sum."""
    pairs: list[tuple[str, float]] = []
    running = 0.0
    for bound, count in zip(BOUNDS, counts, strict=False):
        running += count
        pairs.append(("+Inf" if bound == float("inf") else repr(bound), running))
    return pairs, counts[_SUM]
