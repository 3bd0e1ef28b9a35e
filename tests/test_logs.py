"""missive.logs: JSON lines with the message's fields and trace ids, never a payload."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

import missive
from missive.adapters.stdin import StdinAdapter
from missive.logs import JSONFormatter, MessageLog
from tests.tracing_support import MARKER, Traces, traces

__all__ = ["traces"]  # the fixture, imported


class Lines:
    """The JSON lines a logger wrote through :class:`JSONFormatter`."""

    def __init__(self, formatter: JSONFormatter) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)

    def text(self) -> str:
        return self.stream.getvalue()

    def parsed(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text().splitlines()]


@pytest.fixture
def lines() -> Iterator[Lines]:
    """The JSON lines of the ``missive`` and ``test`` loggers, from INFO."""
    captured = Lines(JSONFormatter())
    loggers = [logging.getLogger("missive"), logging.getLogger("test")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(captured.handler)
        logger.setLevel(logging.INFO)
    yield captured
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(captured.handler)
        logger.setLevel(level)


def test_a_record_is_one_json_object_with_time_level_logger_message_and_pid(
    lines: Lines,
) -> None:
    logging.getLogger("test").warning("disk %s full", "/var")
    [line] = lines.parsed()
    assert line["level"] == "WARNING"
    assert line["logger"] == "test"
    assert line["message"] == "disk /var full"
    assert line["pid"] == os.getpid()
    assert datetime.fromisoformat(line["time"]).utcoffset() is not None
    assert line["time"].endswith("+00:00")
    assert "trace_id" not in line
    assert lines.text().count("\n") == 1


def test_extra_fields_are_written_and_a_bytes_message_id_as_text(lines: Lines) -> None:
    extra = {
        "message_id": b"abc-1",
        "handler": "billing",
        "outcome": missive.Outcome.DEAD_LETTERED,
        "duration": 0.25,
        "adapter": "rabbitmq",
    }
    logging.getLogger("test").info("done", extra=extra)
    [line] = lines.parsed()
    assert line["message_id"] == "abc-1"
    assert line["handler"] == "billing"
    assert line["outcome"] == "dead_lettered"
    assert line["duration"] == 0.25
    assert line["adapter"] == "rabbitmq"


def test_the_trace_and_span_ids_are_written_under_a_current_span(
    lines: Lines, traces: Traces
) -> None:
    with traces.tracer.start_as_current_span("work") as span:
        logging.getLogger("test").info("inside")
    [line] = lines.parsed()
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


def test_an_exception_is_its_type_and_frames_not_its_text_unless_asked(lines: Lines) -> None:
    try:
        raise ValueError(f"bad order {MARKER}")
    except ValueError:
        logging.getLogger("test").exception("failed")
    [line] = lines.parsed()
    assert line["exception"]["type"] == "ValueError"
    assert "test_logs.py" in line["exception"]["stack"][0]
    assert MARKER not in lines.text()
    # With exception_text=True the text and the traceback are written too
    record = logging.LogRecord("test", logging.ERROR, __file__, 1, "failed", None, None)
    try:
        raise ValueError(MARKER)
    except ValueError:
        record.exc_info = sys.exc_info()
    assert (
        MARKER
        in json.loads(JSONFormatter(exception_text=True).format(record))["exception"]["message"]
    )


def test_processing_logs_carry_the_message_fields_and_never_the_payload(
    lines: Lines, traces: Traces
) -> None:
    # Given a handler that fails quoting the payload, a DLQ, and MessageLog
    processor: missive.Processor[Any] = missive.Processor()

    @processor.handle_for(lambda m: m.raw_data.startswith(b"bad"))
    def billing(message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
        raise ValueError(f"cannot bill {message.raw_data!r}")

    @processor.handle_for(lambda m: m.raw_data.startswith(b"good"))
    def shipping(message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
        ctx.ack()

    processor.set_dlq({})
    processor.add_observer(MessageLog())
    data = f"bad {MARKER}\ngood {MARKER}\n".encode()
    # When both are consumed from stdin
    StdinAdapter(missive.RawMessage, processor, io.BytesIO(data)).run()
    # Then each has a line with its id, handler, outcome, duration and adapter
    parsed = [line for line in lines.parsed() if "message_id" in line]
    by_outcome = {(line["outcome"], line["logger"]): line for line in parsed}
    failed = by_outcome["failed", "missive.messages"]
    assert failed["handler"].endswith("billing")
    assert failed["adapter"] == "stdin"
    assert failed["duration"] >= 0
    dead = by_outcome["dead_lettered", "missive.processor"]
    assert dead["level"] == "WARNING"
    assert dead["message_id"] == failed["message_id"]
    assert by_outcome["acked", "missive.messages"]["handler"].endswith("shipping")
    # and the payload is in none of them
    assert MARKER not in lines.text()


def test_message_log_is_silent_when_info_is_off(lines: Lines) -> None:
    logging.getLogger("missive").setLevel(logging.WARNING)
    processor: missive.Processor[Any] = missive.Processor()
    processor.handle_for(lambda m: True)(lambda m, ctx: ctx.ack())
    processor.add_observer(MessageLog())
    StdinAdapter(missive.RawMessage, processor, io.BytesIO(b"one\n")).run()
    assert lines.parsed() == []


def test_the_logs_module_works_without_opentelemetry() -> None:
    code = (
        "import sys, json, logging; sys.modules['opentelemetry'] = None\n"
        "from missive.logs import JSONFormatter\n"
        "record = logging.LogRecord('x', logging.INFO, 'f', 1, 'hello', None, None)\n"
        "print(JSONFormatter().format(record))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    line = json.loads(result.stdout)
    assert line["message"] == "hello"
    assert "trace_id" not in line
