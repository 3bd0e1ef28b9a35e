"""missive.health: liveness and readiness from the loop's events, and the server of the probes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import missive
from missive._ops_server import NO_METRICS, OpsServer, parse_address
from missive._worker_health import STALE_AFTER, StatusWriter, WorkersHealth, status_path
from missive.health import Health, serve
from missive.testing.conformance.memory import MemoryAdapter, MemoryBroker


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def adapter() -> MemoryAdapter:
    """An adapter that is not running: its stop and ready flags are what the tests set."""
    return MemoryAdapter(missive.RawMessage, missive.Processor(), MemoryBroker())


def started(adapter: MemoryAdapter, clock: Clock, **options: float | None) -> Health:
    """A Health that saw ``worker_started`` and a successful connection."""
    health = Health(clock=clock, **options)  # type: ignore[arg-type]
    health.worker_started(adapter)
    adapter._set_ready()
    health.polled(0)
    return health


def get(url: str) -> tuple[int, bytes]:
    """The status and body of a GET (errors included)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


# --- readiness ----------------------------------------------------------------------------


def test_not_ready_before_the_worker_starts(clock: Clock) -> None:
    assert Health(clock=clock).ready() == (False, "not started")


def test_not_ready_while_the_first_connection_is_made(adapter: MemoryAdapter, clock: Clock) -> None:
    health = Health(clock=clock)

    health.worker_started(adapter)

    assert health.ready() == (False, "connecting")


def test_ready_once_connected_and_consuming(adapter: MemoryAdapter, clock: Clock) -> None:
    health = started(adapter, clock)

    assert health.ready() == (True, "consuming")


def test_a_lost_connection_makes_it_unready_until_restored(
    adapter: MemoryAdapter, clock: Clock
) -> None:
    health = started(adapter, clock)

    health.connection_lost("memory", ConnectionError("reset"), 1.0)
    assert health.ready() == (False, "connection lost: reconnecting")

    health.connection_restored("memory")
    assert health.ready() == (True, "consuming")


def test_the_first_receive_after_a_lost_connection_makes_it_ready_again(
    adapter: MemoryAdapter, clock: Clock
) -> None:
    health = started(adapter, clock)
    health.connection_lost("memory", ConnectionError("reset"), 1.0)

    health.polled(0)

    assert health.ready()[0]


def test_a_requested_stop_makes_it_unready_at_once(adapter: MemoryAdapter, clock: Clock) -> None:
    health = started(adapter, clock)

    adapter.stop()  # what SIGTERM does: the drain starts

    ok, reason = health.ready()
    assert not ok
    assert reason.startswith("stopping")


def test_worker_stopping_makes_it_unready(adapter: MemoryAdapter, clock: Clock) -> None:
    health = started(adapter, clock)

    health.worker_stopping(adapter)

    assert not health.ready()[0]


# --- liveness -----------------------------------------------------------------------------


def test_live_while_starting(clock: Clock) -> None:
    assert Health(clock=clock).live() == (True, "starting")


def test_live_while_the_loop_polls(adapter: MemoryAdapter, clock: Clock) -> None:
    health = started(adapter, clock, progress_timeout=30)

    for _ in range(10):
        clock.now += 20
        health.polled(0)

    assert health.live()[0]


def test_not_live_after_no_progress_for_the_timeout(adapter: MemoryAdapter, clock: Clock) -> None:
    health = started(adapter, clock, progress_timeout=30)

    clock.now += 31

    ok, reason = health.live()
    assert not ok
    assert "no progress for 31 s (limit 30 s)" in reason


def test_a_reconnection_wait_is_allowed_on_top_of_the_timeout(
    adapter: MemoryAdapter, clock: Clock
) -> None:
    health = started(adapter, clock, progress_timeout=30)

    health.connection_lost("memory", ConnectionError("refused"), 25.0)
    clock.now += 50
    assert health.live()[0]

    clock.now += 10
    assert not health.live()[0]


def test_a_long_handler_keeps_it_live_until_the_handler_timeout(
    adapter: MemoryAdapter, clock: Clock
) -> None:
    # Given a handler that started and has not finished
    health = started(adapter, clock, progress_timeout=30, handler_timeout=300)
    pctx = adapter.processor.context()
    hctx = missive.HandlingContext(missive.RawMessage(b"secret payload"), pctx)
    health.handling_started(pctx, hctx)

    # Then it is live past the progress timeout, while below the handler timeout
    clock.now += 299
    assert health.live()[0]

    # And no longer after the handler timeout, with a reason that holds no payload
    clock.now += 2
    ok, reason = health.live()
    assert not ok
    assert reason == "a handler has been running for 301 s (limit 300 s)"


def test_a_finished_handler_no_longer_counts(adapter: MemoryAdapter, clock: Clock) -> None:
    health = started(adapter, clock, progress_timeout=30, handler_timeout=60)
    pctx = adapter.processor.context()
    hctx = missive.HandlingContext(missive.RawMessage(b"x"), pctx)
    health.handling_started(pctx, hctx)
    clock.now += 50

    health.handling_finished(pctx, hctx, None, 50.0)
    clock.now += 20

    assert health.live()[0]


def test_no_handler_timeout_when_none(adapter: MemoryAdapter, clock: Clock) -> None:
    health = started(adapter, clock, handler_timeout=None)
    pctx = adapter.processor.context()
    health.handling_started(pctx, missive.HandlingContext(missive.RawMessage(b"x"), pctx))

    clock.now += 86400

    assert health.live()[0]


def test_a_stopping_worker_is_live_while_it_drains(adapter: MemoryAdapter, clock: Clock) -> None:
    health = started(adapter, clock, progress_timeout=30)
    adapter.stop()

    clock.now += 120

    assert health.live() == (True, "stopping")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"progress_timeout": 0}, "progress_timeout must be above 0 s"),
        ({"handler_timeout": -1}, "handler_timeout must be above 0 s or None"),
        ({"progress_timeout": float("nan")}, "progress_timeout must be above 0 s"),
    ],
)
def test_timeouts_must_be_positive(options: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Health(**options)


# --- addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("localhost:0", ("localhost", 0)),
        (":9000", ("0.0.0.0", 9000)),
        ("[::1]:8000", ("::1", 8000)),
    ],
)
def test_addresses_that_parse(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize(
    "text", ["8000", "127.0.0.1", "127.0.0.1:65536", "host:port", "::1:8000", "h:٨٠", "a b:1", ""]
)
def test_addresses_that_do_not_parse(text: str) -> None:
    with pytest.raises(ValueError, match="must be HOST:PORT"):
        parse_address(text)


# --- the server, on a running adapter -------------------------------------------------------


@pytest.fixture
def running() -> Iterator[tuple[MemoryAdapter, OpsServer, MemoryBroker]]:
    """A memory adapter consuming on a thread, its probes served on a free port."""
    broker = MemoryBroker()
    processor: missive.Processor[missive.RawMessage] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def ack(message: missive.RawMessage, ctx: missive.HandlingContext[missive.RawMessage]) -> None:
        ctx.ack()

    adapter = MemoryAdapter(missive.RawMessage, processor, broker)
    server = serve(adapter, "127.0.0.1:0")
    thread = threading.Thread(target=adapter.run, daemon=True)
    thread.start()
    try:
        yield adapter, server, broker
    finally:
        adapter.stop()
        thread.join(10)
        server.close()


def wait_until(what: str, condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_the_server_answers_the_probes_of_a_consuming_adapter(
    running: tuple[MemoryAdapter, OpsServer, MemoryBroker],
) -> None:
    _, server, _ = running

    wait_until("readiness", lambda: get(server.url + "/readyz")[0] == 200)

    assert get(server.url + "/readyz") == (200, b"consuming\n")
    status, body = get(server.url + "/healthz")
    assert status == 200
    assert body.startswith(b"last progress")


def test_metrics_count_what_the_adapter_handled(
    running: tuple[MemoryAdapter, OpsServer, MemoryBroker],
) -> None:
    _, server, broker = running
    broker.publish(b"a confidential payload")

    wait_until("the message to be acked", lambda: broker.remaining() == 0)

    status, body = get(server.url + "/metrics")
    assert status == 200
    assert b"missive_message_outcomes_total" in body
    assert b"confidential" not in body


def test_unknown_paths_are_not_found(
    running: tuple[MemoryAdapter, OpsServer, MemoryBroker],
) -> None:
    _, server, _ = running

    status, body = get(server.url + "/favicon.ico")

    assert status == 404
    assert b"/healthz" in body


def test_readiness_is_503_once_a_stop_is_requested(clock: Clock) -> None:
    # Given a server for an adapter that consumes (not running: the flags are set by hand)
    adapter = MemoryAdapter(missive.RawMessage, missive.Processor(), MemoryBroker())
    health = started(adapter, clock)
    server = OpsServer("127.0.0.1", 0, health)
    server.start()
    try:
        assert get(server.url + "/readyz")[0] == 200

        # When a stop is requested
        adapter.stop()

        # Then readiness fails, liveness holds
        assert get(server.url + "/readyz") == (503, b"stopping: finishing the messages in hand\n")
        assert get(server.url + "/healthz")[0] == 200
    finally:
        server.close()


def test_a_port_in_use_is_an_oserror(adapter: MemoryAdapter) -> None:
    first = serve(adapter, "127.0.0.1:0")
    try:
        with pytest.raises(OSError, match="in use"):
            serve(adapter, f"127.0.0.1:{first.address[1]}")
    finally:
        first.close()


NO_PROMETHEUS = """
import sys
import urllib.error, urllib.request
sys.modules["prometheus_client"] = None  # as if the extra were not installed
import missive
from missive.health import serve
from missive.testing.conformance.memory import MemoryAdapter, MemoryBroker
adapter = MemoryAdapter(missive.RawMessage, missive.Processor(), MemoryBroker())
server = serve(adapter, "127.0.0.1:0")
for path in ("/metrics", "/healthz"):
    try:
        urllib.request.urlopen(server.url + path, timeout=5)
        print(200)
    except urllib.error.HTTPError as error:
        print(error.code, error.read().decode().strip())
server.close()
"""


def test_without_prometheus_client_metrics_are_404_naming_the_extra() -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_PROMETHEUS],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"404 {NO_METRICS.decode().strip()}", "200"]
    assert "pip install 'missive[prometheus]'" in done.stdout


# --- the supervisor's view of its workers ---------------------------------------------------


def write_status(directory: Path, number: int, health: Health, pid: int | None = None) -> Path:
    path = status_path(directory, number)
    StatusWriter(health, path).write()
    if pid is not None:  # another worker's pid
        document = json.loads(path.read_text())
        document["pid"] = pid
        path.write_text(json.dumps(document))
    return path


def test_every_worker_ready_makes_the_workers_ready(
    tmp_path: Path, adapter: MemoryAdapter, clock: Clock
) -> None:
    health = started(adapter, clock)
    write_status(tmp_path, 1, health)
    write_status(tmp_path, 2, health)
    me = os.getpid()

    workers = WorkersHealth(tmp_path, lambda: [(1, me, 5.0), (2, me, 5.0)], lambda: False)

    assert workers.ready() == (True, "2 workers consuming")
    assert workers.live() == (True, "2 workers live")


def test_one_worker_reconnecting_makes_the_workers_unready(
    tmp_path: Path, adapter: MemoryAdapter, clock: Clock
) -> None:
    write_status(tmp_path, 1, started(adapter, clock))
    lost = started(adapter, clock)
    lost.connection_lost("memory", ConnectionError("reset"), 1.0)
    write_status(tmp_path, 2, lost)
    me = os.getpid()

    workers = WorkersHealth(tmp_path, lambda: [(1, me, 5.0), (2, me, 5.0)], lambda: False)

    assert workers.ready() == (False, f"worker 2 (pid {me}): connection lost: reconnecting")
    assert workers.live()[0]


def test_a_worker_that_stopped_reporting_is_not_live(
    tmp_path: Path, adapter: MemoryAdapter, clock: Clock
) -> None:
    path = write_status(tmp_path, 1, started(adapter, clock))
    past = time.time() - STALE_AFTER - 5
    os.utime(path, (past, past))
    me = os.getpid()

    workers = WorkersHealth(tmp_path, lambda: [(1, me, 60.0)], lambda: False)

    ok, reason = workers.live()
    assert not ok
    assert reason.startswith(f"worker 1 (pid {me}) last reported its health")


def test_a_previous_lifes_status_does_not_count(
    tmp_path: Path, adapter: MemoryAdapter, clock: Clock
) -> None:
    write_status(tmp_path, 1, started(adapter, clock), pid=1)

    young = WorkersHealth(tmp_path, lambda: [(1, 4242, 1.0)], lambda: False)
    old = WorkersHealth(tmp_path, lambda: [(1, 4242, STALE_AFTER + 1)], lambda: False)

    assert young.ready() == (False, "worker 1 (pid 4242) is starting")
    assert young.live()[0]
    assert not old.live()[0]


def test_a_stopping_supervisor_is_unready(tmp_path: Path) -> None:
    workers = WorkersHealth(tmp_path, list, lambda: True)

    assert not workers.ready()[0]


def test_the_probes_and_the_command_load_only_the_standard_library() -> None:
    program = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import missive.health, missive._ops_server, missive._worker_health, missive.cli\n"
        "third = sorted({m.split('.')[0] for m in set(sys.modules) - before}"
        " - set(sys.stdlib_module_names) - {'missive'})\n"
        # sysconfig's data module is the standard library's, named per platform.
        "third = [m for m in third if not m.startswith('_sysconfigdata_')]\n"
        "print(third)\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )

    assert done.stdout.strip() == "[]"
