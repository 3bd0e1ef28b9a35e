"""A real Prometheus scrapes ``missive run --workers 2 --http`` consuming RabbitMQ, and its
query API adds up to what the test published: acked, retried and dead-lettered.

Debian's ``prometheus`` (``.ci/run`` installs it) runs on a free loopback port with a
scrape interval of 1 s and a storage directory of the test's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.adapters.test_rabbitmq import URL, RabbitMQHarness
from tests.cli._apps import write_app
from tests.faults.private_server import free_port
from tests.observability.support import Run, get, wait_for
from tests.services import require

#: A RabbitMQ consumer: ``ok`` messages are acked; ``flaky`` ones fail their first
#: delivery (a delayed retry, 1 s later) and are acked on the second; ``bad`` ones
#: raise an unrecoverable error and are dead-lettered at once.
SHOP = """
import os
from pathlib import Path

import missive
from missive.adapters.rabbitmq import RabbitMQAdapter
from missive.dlq.sqlite import SQLiteDLQ

HERE = Path(os.environ["TEST_DIR"])
retry = missive.Retry(delayed=1, initial_delay=1.0, max_delay=1.0, unrecoverable=(ValueError,))
processor = missive.Processor(retry=retry)


@processor.handle_for(lambda m: m.raw_data.startswith(b"ok"))
def ok(message, ctx):
    ctx.ack()


@processor.handle_for(lambda m: m.raw_data.startswith(b"flaky"))
def flaky(message, ctx):
    seen = HERE / "seen" / message.message_id.decode()
    if not seen.exists():
        seen.touch()
        raise ConnectionError("the dependency is down")
    ctx.ack()


@processor.handle_for(lambda m: m.raw_data.startswith(b"bad"))
def bad(message, ctx):
    raise ValueError("cannot be handled")


def adapter():
    processor.set_dlq(SQLiteDLQ(HERE / "dlq.db"))
    return RabbitMQAdapter(
        missive.RawMessage, processor, os.environ["TEST_QUEUE"],
        url=os.environ["TEST_URL"], max_reconnect_delay=1.0,
    )
"""

CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: missive
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""

ACKED, FLAKY, BAD = 40, 10, 6


def require_prometheus() -> None:
    """Skip (locally) or fail (CI=true) unless Debian's ``prometheus`` is on PATH."""
    if shutil.which("prometheus") is not None:
        return
    problem = "prometheus is not on PATH: apt-get install prometheus (.ci/run does)"
    if os.environ.get("CI") == "true":
        pytest.fail(problem)
    pytest.skip(problem)


class Prometheus:
    """A Prometheus server of the test's own, scraping ``target_port`` every second."""

    def __init__(self, directory: Path, target_port: int) -> None:
        directory.mkdir()
        config = directory / "prometheus.yml"
        config.write_text(CONFIG.format(port=target_port))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log_path = directory / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                ],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip

    def query(self, promql: str) -> float | None:
        """The value of an instant query giving one number; ``None`` while it gives none."""
        status, body = get(f"{self.url}/api/v1/query?query={urllib.parse.quote(promql)}")
        if status != 200:
            return None
        result = json.loads(body)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def harness() -> Iterator[RabbitMQHarness]:
    """A fresh RabbitMQ queue, deleted afterwards with its delay queues."""
    require("rabbitmq")
    require_prometheus()
    queue = RabbitMQHarness()
    try:
        yield queue
    finally:
        queue.close()


def test_prometheus_counts_what_two_workers_did(tmp_path: Path, harness: RabbitMQHarness) -> None:
    # Given two workers consuming a queue, scraped by Prometheus every second
    write_app(tmp_path, "shop", SHOP)
    (tmp_path / "seen").mkdir()
    env = {"TEST_DIR": str(tmp_path), "TEST_QUEUE": harness.queue, "TEST_URL": URL}
    run = Run(tmp_path, "shop:adapter", "--workers", "2", env=env)
    prometheus = Prometheus(tmp_path / "prometheus", run.port)
    try:
        run.wait_probe("/readyz", 200)
        wait_for(
            "Prometheus to scrape the workers", lambda: prometheus.query('up{job="missive"}') == 1
        )

        # When messages are published: some acked, some retried then acked, some dead-lettered
        bodies = [b"ok %d" % n for n in range(ACKED)]
        bodies += [b"flaky %d" % n for n in range(FLAKY)]
        bodies += [b"bad %d" % n for n in range(BAD)]
        harness.publish(bodies)

        # Then Prometheus's sums match what was published
        def outcome(name: str) -> float | None:
            selector = f'source="{harness.queue}",outcome="{name}"'
            return prometheus.query(f"sum(missive_message_outcomes_total{{{selector}}})")

        expected = {"acked": ACKED + FLAKY, "retried": FLAKY, "dead_lettered": BAD}
        seen: dict[str, float | None] = {}

        def counted() -> bool:
            seen.update({name: outcome(name) for name in expected})
            return seen == expected

        try:
            wait_for("Prometheus's counters to match what was published", counted, timeout=90)
        except pytest.fail.Exception:
            pytest.fail(f"Prometheus counted {seen}, not {expected}; the workers' log:\n{run.log}")
        consumed = f'sum(messaging_client_consumed_messages_total{{source="{harness.queue}"}})'
        assert prometheus.query(consumed) == ACKED + 2 * FLAKY + BAD
        in_flight = f'sum(missive_messages_in_flight{{source="{harness.queue}"}})'
        wait_for("no message in flight", lambda: prometheus.query(in_flight) == 0)
    finally:
        prometheus.close()
        assert run.stop() == 0, run.log
