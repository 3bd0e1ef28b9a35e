"""The errors' texts: what they say, and what they leave out because it may be confidential."""

from __future__ import annotations

import missive


def test_a_dlq_write_error_leaves_out_the_text_of_a_driver_error() -> None:
    # Given a driver error whose text quotes the row it could not write
    error = RuntimeError("DETAIL: Failing row contains (\\x7365637265742d7061796c6f6164)")

    # When the processor reports the failed write
    text = str(missive.DLQWriteError(b"id-1", "no handler matched", error))

    # Then the text names the message and the error's type, not its text
    assert "b'id-1'" in text
    assert "RuntimeError" in text
    assert "Failing row" not in text
    assert "7365637265742d" not in text


def test_a_dlq_write_error_quotes_a_dlq_error_s_text() -> None:
    error = missive.DLQError("SQLite DLQ at 'dlq.db': cannot store: the file was removed")

    text = str(missive.DLQWriteError(b"id-1", "no handler matched", error))

    assert "the file was removed" in text
