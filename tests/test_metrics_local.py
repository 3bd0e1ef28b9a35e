"""missive.metrics in one process: per-thread numbers added up at each scrape.

These tests drive the observer's events from many threads at once, as a WSGI server
and ``concurrency`` above 1 do, and check that no count is lost or doubled.
"""

from __future__ import annotations

import threading
from queue import SimpleQueue
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

import missive
import missive.metrics
from missive._metrics_local import Store
from missive.context import Outcome

WHERE = {"adapter": "redis", "source": "orders"}


class Transport:
    system = "redis"

    def source(self) -> str:
        return "orders"


class Adapter:
    running_transport = Transport()


class Handling:
    """What handling_finished reads of a HandlingContext."""

    failure = None

    def __init__(self, message: missive.Message, handler: str) -> None:
        self.message = message
        self.handler_name = handler


def started(registry: CollectorRegistry) -> missive.metrics.PrometheusMetrics:
    metrics = missive.metrics.PrometheusMetrics(registry)
    metrics.worker_started(Adapter())
    return metrics


def handle(metrics: Any, message: missive.Message, handler: str, duration: float) -> None:
    """message_received and handling_finished, as on the handling thread."""
    metrics.message_received(message, 1)
    outcome = Outcome.NACKED if handler == "nacks" else Outcome.ACKED
    metrics.handling_finished(None, Handling(message, handler), outcome, duration)


def settle(metrics: Any, message: missive.Message) -> None:
    """The settle event, as on the delivery loop's thread."""
    if message.raw_data == b"nack":
        metrics.requeued(message, 0.0)
    else:
        metrics.acked(message)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {**WHERE, **labels}) or 0.0


def test_counts_stay_exact_when_many_threads_handle_and_one_settles() -> None:
    # Given 8 handling threads, one settling thread (the loop), and a scraper meanwhile
    registry = CollectorRegistry()
    metrics = started(registry)
    handled: SimpleQueue[missive.Message | None] = SimpleQueue()
    threads, per_thread = 8, 2_000
    done = threading.Event()
    scrapes: list[int] = []

    def worker(n: int) -> None:
        for i in range(per_thread):
            nack = i % 10 == 0
            message = missive.RawMessage(b"nack" if nack else b"ok", b"%d-%d" % (n, i))
            handle(metrics, message, "nacks" if nack else "acks", 0.0005 * (i % 7))
            handled.put(message)

    def loop() -> None:
        for _ in range(threads * per_thread):
            message = handled.get()
            assert message is not None
            settle(metrics, message)

    def scraper() -> None:
        while not done.is_set():
            scrapes.append(len(generate_latest(registry)))

    settler, watcher = threading.Thread(target=loop), threading.Thread(target=scraper)
    settler.start()
    watcher.start()
    # When they all run at once
    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    settler.join()
    done.set()
    watcher.join()
    # Then every message is counted once, whatever thread counted it
    total = threads * per_thread
    assert value(registry, "messaging_client_consumed_messages_total") == total
    nacked = value(registry, "missive_message_outcomes_total", handler="nacks", outcome="nacked")
    acked = value(registry, "missive_message_outcomes_total", handler="acks", outcome="acked")
    assert (nacked, acked) == (total / 10, total * 9 / 10)
    count = "messaging_process_duration_seconds_count"
    assert value(registry, count, handler="acks") + value(registry, count, handler="nacks") == total
    assert value(registry, "missive_messages_in_flight") == 0
    assert scrapes  # scraping while the threads wrote raised nothing


def test_a_thread_per_request_leaves_its_counts_but_not_its_shard() -> None:
    # Given a server that starts a thread per request (WSGI's ThreadingMixIn)
    registry = CollectorRegistry()
    metrics = started(registry)

    def request(n: int) -> None:
        message = missive.RawMessage(b"ok", b"%d" % n)
        handle(metrics, message, "acks", 0.002)
        settle(metrics, message)

    # When 300 requests each run on a thread of their own, one after another
    for n in range(300):
        thread = threading.Thread(target=request, args=(n,))
        thread.start()
        thread.join()
    # Then their counts stay, and the ended threads' numbers were folded together
    assert value(registry, "missive_message_outcomes_total", handler="acks", outcome="acked") == 300
    assert value(registry, "messaging_process_duration_seconds_sum", handler="acks") == (
        pytest.approx(0.6)
    )
    store = metrics._store
    assert isinstance(store, Store)
    assert store.shard_count() <= 2


def test_the_buckets_match_prometheus_clients_histogram() -> None:
    # Given durations on and around every bucket bound
    durations = [0.0, 1e-9, 0.0009999, 0.1, 0.25000001, 59.9, 60.0, 60.1, 1e9]
    durations += list(missive.metrics.DURATION_BUCKETS)
    registry, reference = CollectorRegistry(), CollectorRegistry()
    metrics = started(registry)
    histogram = Histogram(
        "messaging_process_duration_seconds",
        "reference",
        ["adapter", "source", "handler"],
        buckets=missive.metrics.DURATION_BUCKETS,
        registry=reference,
    ).labels("redis", "orders", "acks")
    # When each is observed by both
    for n, duration in enumerate(durations):
        handle(metrics, missive.RawMessage(b"ok", b"%d" % n), "acks", duration)
        histogram.observe(duration)
    # Then every bucket, the count and the sum are the same
    for bound in [*missive.metrics.DURATION_BUCKETS, float("inf")]:
        le = "+Inf" if bound == float("inf") else repr(bound)
        name = "messaging_process_duration_seconds_bucket"
        assert value(registry, name, handler="acks", le=le) == value(
            reference, name, handler="acks", le=le
        ), le
    for name in ("_count", "_sum"):
        full = "messaging_process_duration_seconds" + name
        assert value(registry, full, handler="acks") == value(reference, full, handler="acks")
