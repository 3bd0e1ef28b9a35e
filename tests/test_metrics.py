"""missive.metrics: what each event counts, with a fresh registry per test.

Outcomes come from the settle events, which the delivery loop emits: those tests run
the in-memory broker through the real loop. The test client (no settle events) shows
the handling-side counts: durations, dead letters, DLQ failures.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import missive
import missive.metrics
from missive.testing.conformance import MemoryHarness
from missive.testing.conformance.support import running, wait_until

Ctx = missive.HandlingContext[Any]
SECRET = "card-4111-1111"  # stands for customer data: never in a metric

# -- helpers -------------------------------------------------------------------------


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist."""
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def outcome(registry: CollectorRegistry, handler: str, what: str, **where: str) -> float:
    labels = {"adapter": "", "source": "", **where, "handler": handler, "outcome": what}
    return value(registry, "missive_message_outcomes_total", **labels)


def outcomes_total(registry: CollectorRegistry) -> float:
    """Every delivery's outcome so far, whatever its labels."""
    return sum(
        sample.value
        for family in registry.collect()
        if family.name == "missive_message_outcomes"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def acks(message: missive.Message, ctx: Ctx) -> None:
    ctx.ack()


def nacks(message: missive.Message, ctx: Ctx) -> None:
    ctx.nack()


def fails(message: missive.Message, ctx: Ctx) -> None:
    raise ValueError(f"cannot parse {message.raw_data!r}")


def processor_with(*routes: tuple[bytes, Any]) -> missive.Processor[missive.Message]:
    """Routes by body prefix: each ``(prefix, handler)``."""
    processor: missive.Processor[missive.Message] = missive.Processor()
    for prefix, handler in routes:
        processor.handle_for(starts_with(prefix))(handler)
    return processor


class BrokenDLQ(dict[bytes, Any]):
    def __setitem__(self, key: bytes, item: Any) -> None:
        raise OSError("disk full")


def starts_with(prefix: bytes) -> Any:
    return lambda message: message.raw_data.startswith(prefix)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def harness() -> Iterator[MemoryHarness]:
    harness = MemoryHarness()
    yield harness
    harness.close()


# -- the test client: handling-side counts ----------------------------------------


def test_each_attempt_is_timed_under_its_handler(registry: CollectorRegistry) -> None:
    processor = processor_with((b"ok", acks), (b"bad", fails))
    processor.retry = missive.Retry(immediate=2)
    processor.set_dlq({})
    missive.metrics.instrument(processor, registry)

    with processor.test_client() as client:
        client.send(missive.RawMessage(b"ok"))
        client.send(missive.RawMessage(b"bad"))

    labels = {"adapter": "", "source": ""}
    count = "messaging_process_duration_seconds_count"
    assert value(registry, count, **labels, handler="acks") == 1
    assert value(registry, count, **labels, handler="fails") == 3  # the first and 2 retries
    assert value(registry, "messaging_process_duration_seconds_sum", **labels, handler="acks") > 0
    infinite = value(
        registry, "messaging_process_duration_seconds_bucket", **labels, handler="acks", le="+Inf"
    )
    assert infinite == 1


def test_a_dead_letter_counts_under_its_handler_and_as_a_dlq_write(
    registry: CollectorRegistry,
) -> None:
    processor = processor_with((b"bad", fails))
    processor.set_dlq({})
    missive.metrics.instrument(processor, registry)

    with processor.test_client() as client:
        client.send(missive.RawMessage(b"bad-1"))
        client.send(missive.RawMessage(b"bad-2"))

    assert outcome(registry, "fails", "dead_lettered") == 2
    assert value(registry, "missive_dlq_writes_total", adapter="", source="", result="stored") == 2


def test_a_message_no_handler_takes_is_dead_lettered_under_the_empty_handler(
    registry: CollectorRegistry,
) -> None:
    processor = processor_with((b"ok", acks))
    processor.set_dlq({})
    missive.metrics.instrument(processor, registry)

    with processor.test_client() as client:
        client.send(missive.RawMessage(b"unknown"))

    assert outcome(registry, "", "dead_lettered") == 1
    assert missive.metrics.NO_HANDLER == ""


def test_without_a_dlq_a_failure_counts_as_failed_with_no_dlq(
    registry: CollectorRegistry,
) -> None:
    processor = processor_with((b"bad", fails))
    missive.metrics.instrument(processor, registry)

    with processor.test_client() as client, pytest.raises(missive.HandlingError):
        client.send(missive.RawMessage(b"bad"))

    assert outcome(registry, "fails", "failed") == 1
    assert value(registry, "missive_dlq_writes_total", adapter="", source="", result="no_dlq") == 1


def test_a_dlq_write_that_raises_counts_as_failed(registry: CollectorRegistry) -> None:
    processor = processor_with((b"bad", fails))
    processor.set_dlq(BrokenDLQ())
    missive.metrics.instrument(processor, registry)

    with processor.test_client() as client, pytest.raises(missive.DLQWriteError):
        client.send(missive.RawMessage(b"bad"))

    assert outcome(registry, "fails", "failed") == 1
    assert value(registry, "missive_dlq_writes_total", adapter="", source="", result="failed") == 1


# -- the delivery loop: every outcome --------------------------------------------


MEMORY = {"adapter": "custom", "source": "memory"}


def test_each_delivery_ends_in_exactly_one_outcome(
    harness: MemoryHarness, registry: CollectorRegistry
) -> None:
    seen: set[bytes] = set()
    lock = threading.Lock()

    def first_time(message: missive.Message) -> bool:
        with lock:
            new = message.message_id not in seen
            seen.add(message.message_id)
            return new

    def nack_once(message: missive.Message, ctx: Ctx) -> None:
        ctx.nack() if first_time(message) else ctx.ack()

    def retry_once(message: missive.Message, ctx: Ctx) -> None:
        ctx.retry(delay=0.01) if first_time(message) else ctx.ack()

    processor = processor_with(
        (b"ok", acks), (b"nack", nack_once), (b"retry", retry_once), (b"bad", fails)
    )
    processor.retry = missive.Retry(delayed=1, initial_delay=0.01)
    processor.set_dlq({})
    missive.metrics.instrument(processor, registry)
    adapter = harness.adapter(missive.RawMessage, processor)
    harness.publish([b"ok-1", b"ok-2", b"ok-3", b"nack-1", b"retry-1", b"retry-2", b"bad-1"])

    with running(adapter):
        wait_until(lambda: outcomes_total(registry) == 11, "every delivery settled")

    assert outcome(registry, "acks", "acked", **MEMORY) == 3
    assert outcome(registry, "nack_once", "nacked", **MEMORY) == 1
    assert outcome(registry, "nack_once", "acked", **MEMORY) == 1
    assert outcome(registry, "retry_once", "retried", **MEMORY) == 2
    assert outcome(registry, "fails", "retried", **MEMORY) == 1  # the policy's one retry
    assert outcome(registry, "fails", "dead_lettered", **MEMORY) == 1
    assert outcome(registry, "fails", "acked", **MEMORY) == 0  # its ack is the dead letter's
    # 7 first deliveries, 1 redelivery after the nack, 3 back from their delayed retry.
    assert value(registry, "messaging_client_consumed_messages_total", **MEMORY) == 11
    assert value(registry, "missive_messages_in_flight", **MEMORY) == 0


def test_counts_stay_exact_with_concurrent_workers(
    harness: MemoryHarness, registry: CollectorRegistry
) -> None:
    processor = processor_with((b"ok", acks), (b"bad", fails))
    processor.set_dlq({})
    missive.metrics.instrument(processor, registry)
    adapter = harness.adapter(missive.RawMessage, processor, concurrency=4)
    harness.publish([b"ok-%d" % i for i in range(300)] + [b"bad-%d" % i for i in range(30)])

    with running(adapter):
        wait_until(
            lambda: (
                outcome(registry, "acks", "acked", **MEMORY) == 300
                and outcome(registry, "fails", "dead_lettered", **MEMORY) == 30
            ),
            "every message counted",
        )

    assert value(registry, "messaging_client_consumed_messages_total", **MEMORY) == 330
    assert value(registry, "missive_messages_in_flight", **MEMORY) == 0
    count = "messaging_process_duration_seconds_count"
    assert value(registry, count, **MEMORY, handler="acks") == 300


def test_a_message_being_handled_is_in_flight_until_settled(
    harness: MemoryHarness, registry: CollectorRegistry
) -> None:
    release = threading.Event()

    def held(message: missive.Message, ctx: Ctx) -> None:
        release.wait(30)
        ctx.ack()

    processor = processor_with((b"", held))
    missive.metrics.instrument(processor, registry)
    harness.publish([b"one", b"two"])

    with running(harness.adapter(missive.RawMessage, processor, concurrency=2)):
        wait_until(lambda: value(registry, "missive_messages_in_flight", **MEMORY) == 2, "2 held")
        release.set()
        wait_until(lambda: outcome(registry, "held", "acked", **MEMORY) == 2, "both acked")

    assert value(registry, "missive_messages_in_flight", **MEMORY) == 0


def test_a_failed_dlq_write_then_requeued_counts_as_failed_only(
    harness: MemoryHarness, registry: CollectorRegistry
) -> None:
    processor = processor_with((b"bad", fails))
    processor.set_dlq(BrokenDLQ())
    missive.metrics.instrument(processor, registry)
    adapter = harness.adapter(missive.RawMessage, processor)
    harness.publish([b"bad"])

    with running(adapter):
        wait_until(lambda: outcome(registry, "fails", "failed", **MEMORY) >= 2, "two failures")

    delivered = value(registry, "messaging_client_consumed_messages_total", **MEMORY)
    assert outcome(registry, "fails", "failed", **MEMORY) == delivered
    assert outcome(registry, "fails", "nacked", **MEMORY) == 0
    assert value(registry, "missive_dlq_writes_total", **MEMORY, result="failed") == delivered


def test_a_lost_connection_counts_as_a_reconnection(
    harness: MemoryHarness, registry: CollectorRegistry
) -> None:
    processor = processor_with((b"ok", acks))
    missive.metrics.instrument(processor, registry)
    adapter = harness.adapter(missive.RawMessage, processor)

    with running(adapter):
        harness.kill_connections()
        wait_until(
            lambda: value(registry, "missive_reconnections_total", **MEMORY) >= 1,
            "the reconnection counted",
        )
        harness.publish([b"ok"])
        wait_until(lambda: outcome(registry, "acks", "acked", **MEMORY) == 1, "acked after it")


def test_the_backlog_gauge_holds_the_last_depth(registry: CollectorRegistry) -> None:
    metrics = missive.metrics.PrometheusMetrics(registry)

    metrics.backlog(12)
    metrics.backlog(5)

    assert value(registry, "missive_backlog_messages", adapter="", source="") == 5


# -- labels, registries, exposition ------------------------------------------------


def test_the_wsgi_adapter_is_labelled_http_and_its_path(registry: CollectorRegistry) -> None:
    from missive.adapters.wsgi import WSGIAdapter

    processor = processor_with((b"ok", acks))
    adapter = WSGIAdapter(missive.RawMessage, processor, path="/hooks/orders")
    metrics = missive.metrics.instrument(adapter, registry)
    metrics.worker_started(adapter)

    assert metrics.labels == ("http", "/hooks/orders")


def test_two_processors_on_one_registry_share_its_metrics(registry: CollectorRegistry) -> None:
    first, second = processor_with((b"ok", acks)), processor_with((b"ok", acks))
    missive.metrics.instrument(first, registry)
    missive.metrics.instrument(second, registry)

    with first.test_client() as one, second.test_client() as two:
        one.send(missive.RawMessage(b"ok"))
        two.send(missive.RawMessage(b"ok"))

    count = "messaging_process_duration_seconds_count"
    assert value(registry, count, adapter="", source="", handler="acks") == 2


def test_the_exposition_never_holds_a_payload_or_an_error_text(
    harness: MemoryHarness, registry: CollectorRegistry
) -> None:
    processor = processor_with((b"ok", acks), (b"bad", fails))
    processor.set_dlq({})
    missive.metrics.instrument(processor, registry)
    adapter = harness.adapter(missive.RawMessage, processor)
    harness.publish([b"ok " + SECRET.encode(), b"bad " + SECRET.encode(), SECRET.encode()])

    with running(adapter):
        wait_until(lambda: outcomes_total(registry) == 3, "every message settled")

    body, content_type = missive.metrics.exposition(registry)
    assert b"missive_message_outcomes_total" in body
    assert SECRET.encode() not in body
    assert b"cannot parse" not in body
    assert content_type.startswith("text/plain")


def test_a_run_shows_only_its_own_labels_and_no_backlog_it_cannot_know(
    harness: MemoryHarness, registry: CollectorRegistry
) -> None:
    processor = processor_with((b"ok", acks))
    missive.metrics.instrument(processor, registry)
    harness.publish([b"ok"])

    with running(harness.adapter(missive.RawMessage, processor)):
        wait_until(lambda: outcomes_total(registry) == 1, "the message settled")

    body, _ = missive.metrics.exposition(registry)
    assert b'adapter="custom"' in body
    assert b'adapter=""' not in body
    assert b"missive_backlog_messages{" not in body  # the memory broker tells no depth


def test_missing_prometheus_client_names_the_extra() -> None:
    program = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None  # as if it were not installed\n"
        "import missive\n"
        "try:\n"
        "    import missive.metrics\n"
        "except missive.MissingExtraError as exc:\n"
        "    print(exc.extra, '|', exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    extra, message = result.stdout.strip().split(" | ")
    assert extra == "prometheus"
    assert "pip install 'missive[prometheus]'" in message


# -- multiprocess mode --------------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import missive, missive.metrics

    def acks(message, ctx):
        ctx.ack()

    processor = missive.Processor()
    processor.handle_for(lambda m: True)(acks)
    metrics = missive.metrics.instrument(processor)
    if LOOP:  # as a delivery loop: a receive first, the worker's stop last
        metrics.polled(4)
    for _ in range(3):
        message = missive.RawMessage(b"x")
        metrics.message_received(message, 1)
        metrics.acked(message)
    metrics.message_received(missive.RawMessage(b"y"), 1)  # still in flight at exit
    metrics.backlog(7)
    if LOOP:
        metrics.worker_stopping(None)
    """
)


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    return tmp_path


def run_worker(directory: Path, loop: bool = False) -> int:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    program = f"LOOP = {loop}\n{WORKER}"
    worker = subprocess.Popen([sys.executable, "-c", program], env=env, stderr=subprocess.PIPE)
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr.decode()
    return worker.pid


def scrape() -> CollectorRegistry:
    """The exposition parsed back into a registry-like lookup."""
    from prometheus_client.parser import text_string_to_metric_families

    body, _ = missive.metrics.exposition()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }

    class Parsed(CollectorRegistry):
        def get_sample_value(self, name: str, labels: Any = None) -> float | None:
            return samples.get((name, tuple(sorted((labels or {}).items()))))

    return Parsed()


@pytest.mark.parametrize("loop", [False, True], ids=["events-only", "delivery-loop"])
def test_multiprocess_exposition_adds_up_the_workers(multiproc_dir: Path, loop: bool) -> None:
    # A delivery loop's counts are added to the files from time to time, and at its stop
    pids = [run_worker(multiproc_dir, loop), run_worker(multiproc_dir, loop)]

    scraped = scrape()
    assert outcome(scraped, "", "acked") == 6
    assert value(scraped, "messaging_client_consumed_messages_total", adapter="", source="") == 8
    assert value(scraped, "missive_messages_in_flight", adapter="", source="") == 2
    assert value(scraped, "missive_backlog_messages", adapter="", source="") == 7

    for pid in pids:
        missive.metrics.mark_worker_dead(pid)

    scraped = scrape()
    assert outcome(scraped, "", "acked") == 6  # counters outlive their worker
    assert value(scraped, "missive_messages_in_flight", adapter="", source="") == 0


def test_mark_worker_dead_is_a_no_op_outside_multiprocess_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)

    missive.metrics.mark_worker_dead(os.getpid())


# -- docs/metrics.md ----------------------------------------------------------------

DOC = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text("utf-8")


def test_the_docs_example_runs_as_printed() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC, flags=re.DOTALL)
    assert len(blocks) == 1
    namespace: dict[str, object] = {"__name__": "docs_metrics"}
    exec(compile(blocks[0], "docs/metrics.md", "exec"), namespace)  # our own docs


def test_the_docs_list_every_metric(registry: CollectorRegistry) -> None:
    missive.metrics.PrometheusMetrics(registry)
    families = {family.name for family in registry.collect()}

    assert len(families) == 7
    for name in families:
        assert f"`{name}" in DOC, name
