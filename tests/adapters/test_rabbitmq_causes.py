"""The words a failed RabbitMQ connection is logged with (no broker needed)."""

from __future__ import annotations

import errno

from missive.adapters._rabbitmq_causes import describe


def test_a_socket_gone_before_pika_could_use_it_reads_as_a_reset() -> None:
    # Given pika's error for a socket reset between connect() and the handshake
    def hand_over() -> None:
        try:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        except OSError:
            raise ValueError("Expected connected socket, but getpeername() failed")  # noqa: B904

    try:
        hand_over()
    except ValueError as exc:
        error = exc
    # When it is described, then it is a reset, not pika's internal text
    assert describe(error) == "connection reset"


def test_a_value_error_of_another_kind_keeps_its_text() -> None:
    assert describe(ValueError("bad port")) == "bad port"
