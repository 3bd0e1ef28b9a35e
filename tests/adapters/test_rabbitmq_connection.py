"""RabbitMQAdapter's log lines when it cannot connect: one WARNING per attempt, in words."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pika.exceptions
import pytest

import missive
from missive.adapters.rabbitmq import RabbitMQAdapter
from missive.testing.conformance.support import wait_until
from tests.services import require

LOGGER = "missive.runtime"  # the delivery loop logs the reconnections


@contextmanager
def retrying(url: str) -> Iterator[list[BaseException]]:
    """Run an adapter on ``url`` in a thread (reconnecting every 0.1 s) while in the block."""
    adapter = RabbitMQAdapter(
        missive.RawMessage, missive.Processor(), "q", url=url, max_reconnect_delay=0.1
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            adapter.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield errors
    finally:
        adapter.stop()
        thread.join(10)
    assert not thread.is_alive(), "run() did not return after stop()"


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelname == "WARNING"]


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_refused_connection_is_logged_with_host_port_and_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given no broker on a port
    port = closed_port()
    caplog.set_level("WARNING", logger="missive")
    # When an adapter tries to connect there
    with retrying(f"amqp://guest:guest@127.0.0.1:{port}/%2F") as errors:
        wait_until(lambda: len(warnings(caplog)) >= 2, "two failed attempts are logged")
    # Then each attempt is one WARNING naming the host, the port and the cause in words
    assert errors == []
    for line in warnings(caplog):
        assert f"127.0.0.1:{port}" in line
        assert "(connection refused)" in line
        assert "reconnecting in" in line


def test_each_failed_attempt_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    # Given a loopback "broker" that counts the connections it resets at once
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    resets = 0

    def reset_all() -> None:
        nonlocal resets
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
            resets += 1

    threading.Thread(target=reset_all, daemon=True).start()
    caplog.set_level("DEBUG", logger="missive")
    # When an adapter has tried five times
    try:
        with retrying(f"amqp://guest:guest@127.0.0.1:{port}/%2F"):
            wait_until(lambda: len(warnings(caplog)) >= 5, "five failed attempts are logged")
            logged, attempts = len(warnings(caplog)), resets
    finally:
        listener.close()
    # Then there was one WARNING per attempt (the one in progress may not be logged yet)
    assert attempts - 1 <= logged <= attempts
    # (a reset that lands during the AMQP handshake reads as such, under load)
    causes = ("connection reset", "closed during the AMQP handshake", "connection lost")
    assert all(any(cause in line for cause in causes) for line in warnings(caplog))


def test_a_host_name_that_does_not_resolve_is_retried_with_the_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a URL whose host name does not resolve (yet: DNS may lag a new service)
    caplog.set_level("WARNING", logger="missive")
    # When an adapter tries to connect there
    with retrying("amqp://guest:guest@missive-no-such-host.invalid:5672/%2F") as errors:
        wait_until(lambda: warnings(caplog), "a failed attempt is logged")
        # Then it keeps trying, and says why in words
        assert errors == []
    [line, *_] = warnings(caplog)
    assert "missive-no-such-host.invalid:5672" in line
    assert "host name not resolved" in line


def test_a_wrong_password_raises_with_a_note_naming_the_broker_and_the_fix() -> None:
    # Given an adapter with a wrong password
    require("rabbitmq")
    bad = "amqp://guest:wrong@127.0.0.1:5672/%2F"
    adapter = RabbitMQAdapter(missive.RawMessage, missive.Processor(), "any", url=bad)
    # When it runs, then it raises a configuration error whose note says what to check
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as raised:
        adapter.run()
    [note] = raised.value.__notes__
    assert "127.0.0.1:5672" in note
    assert "ACCESS_REFUSED" in note
    assert "check the user, password and vhost" in note
    assert "wrong" not in note  # never the password
