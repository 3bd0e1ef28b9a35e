"""The stdin adapter, in process and as a real program reading a pipe."""

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import missive
from missive.adapters.stdin import StdinAdapter

Ctx = missive.HandlingContext[Any]
ROOT = Path(__file__).resolve().parent.parent


def recording_processor(received: list[missive.Message]) -> missive.Processor[missive.Message]:
    processor = missive.Processor()

    @processor.handle_for(lambda m: m.raw_data != b"nack")
    def record(message: missive.Message, ctx: Ctx) -> None:
        received.append(message)
        ctx.ack()

    @processor.handle_for(lambda m: m.raw_data == b"nack")
    def refuse(message: missive.Message, ctx: Ctx) -> None:
        ctx.nack()

    return processor


def test_each_line_is_one_message_without_its_line_ending() -> None:
    received: list[missive.Message] = []
    stream = io.BytesIO(b"first\nsecond\r\n\nlast without newline")
    StdinAdapter(missive.RawMessage, recording_processor(received), stream).run()
    assert [m.raw_data for m in received] == [b"first", b"second", b"", b"last without newline"]
    assert [m.attributes["line"] for m in received] == [1, 2, 3, 4]


def test_text_streams_are_read_as_utf8_bytes() -> None:
    received: list[missive.Message] = []
    StdinAdapter(missive.RawMessage, recording_processor(received), io.StringIO("héllo\n")).run()
    assert [m.raw_data for m in received] == ["héllo".encode()]


def test_a_line_of_16_mib_is_read_whole() -> None:
    received: list[missive.Message] = []
    line = b"x" * (16 * 1024 * 1024)
    StdinAdapter(missive.RawMessage, recording_processor(received), io.BytesIO(line + b"\n")).run()
    assert len(received) == 1
    assert received[0].raw_data == line


def test_end_of_input_runs_after_processing_hooks_and_returns() -> None:
    processor = recording_processor([])
    events: list[str] = []
    processor.before_processing(lambda p: events.append("start"))
    processor.after_processing(lambda p: events.append("stop"))
    StdinAdapter(missive.RawMessage, processor, io.BytesIO(b"a\n")).run()
    assert events == ["start", "stop"]


def test_a_nacked_line_is_dead_lettered_with_a_reason() -> None:
    processor = recording_processor([])
    dlq: dict[bytes, tuple[missive.Message, str]] = {}
    processor.set_dlq(dlq)
    StdinAdapter(missive.RawMessage, processor, io.BytesIO(b"nack\n")).run()
    [(message, reason)] = dlq.values()
    assert message.raw_data == b"nack"
    assert "nacked" in reason
    assert "cannot redeliver" in reason


def test_without_a_dlq_a_nacked_line_stops_the_run_naming_the_line() -> None:
    received: list[missive.Message] = []
    processor = recording_processor(received)
    events: list[str] = []
    processor.after_processing(lambda p: events.append("stop"))
    adapter = StdinAdapter(missive.RawMessage, processor, io.BytesIO(b"ok\nnack\nnever\n"))
    with pytest.raises(missive.HandlingError) as info:
        adapter.run()
    assert "input line 2" in "".join(getattr(info.value, "__notes__", []))
    assert [m.raw_data for m in received] == [b"ok"]
    assert events == ["stop"]


def test_stop_from_a_handler_finishes_that_message_and_returns() -> None:
    processor: missive.Processor[missive.Message] = missive.Processor()
    handled: list[bytes] = []
    adapter = StdinAdapter(missive.RawMessage, processor, io.BytesIO(b"1\n2\n3\n"))

    @processor.handle_for(lambda m: True)
    def stop_after_first(message: missive.Message, ctx: Ctx) -> None:
        handled.append(message.raw_data)
        adapter.stop()
        ctx.ack()

    adapter.run()
    assert handled == [b"1"]


def run_example(name: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_the_spec_hello_example_greets_hello_from_a_pipe() -> None:
    result = run_example("hello_processor.py", b"Hello\nHello\n")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"Hello whoever you are\nHello whoever you are\n"


def test_the_spec_hello_example_exits_non_zero_on_a_line_it_cannot_handle() -> None:
    result = run_example("hello_processor.py", b"Hello\nGoodbye\n")
    assert result.returncode != 0
    assert b"HandlingError" in result.stderr
    assert b"no handler matched" in result.stderr
    assert b"input line 2" in result.stderr


SIGNAL_PROGRAM = """
import sys, time, missive
from missive.adapters.stdin import StdinAdapter
processor = missive.Processor()
@processor.handle_for(lambda m: True)
def slow(message, ctx):
    print("started", message.raw_data.decode(), flush=True)
    time.sleep(float(message.raw_data))
    print("finished", message.raw_data.decode(), flush=True)
    ctx.ack()
processor.after_processing(lambda p: print("after_processing", flush=True))
StdinAdapter(missive.RawMessage, processor).run()
print("returned", flush=True)
"""


def start_program() -> subprocess.Popen[bytes]:
    program = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_PROGRAM],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert program.stdin is not None
    return program


def read_line(program: subprocess.Popen[bytes]) -> bytes:
    assert program.stdout is not None
    return program.stdout.readline().strip()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_waiting_for_input_runs_the_hooks_and_returns(signum: int) -> None:
    program = start_program()
    assert program.stdin is not None
    program.stdin.write(b"0\n")
    program.stdin.flush()
    assert read_line(program) == b"started 0"
    assert read_line(program) == b"finished 0"
    time.sleep(0.2)  # now blocked reading the pipe, which stays open
    program.send_signal(signum)
    out, err = program.communicate(timeout=30)
    assert program.returncode == 0, err.decode()
    assert out.split() == [b"after_processing", b"returned"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_message_finishes_it_then_returns(signum: int) -> None:
    program = start_program()
    assert program.stdin is not None
    program.stdin.write(b"1\n")
    program.stdin.flush()
    assert read_line(program) == b"started 1"
    program.send_signal(signum)
    time.sleep(0.3)  # the stop is requested; line 1 is still in hand
    out, err = program.communicate(b"5\n", timeout=30)
    assert program.returncode == 0, err.decode()
    # The message in hand finished; the next line was not read.
    assert out.split(b"\n")[:3] == [b"finished 1", b"after_processing", b"returned"]


def test_the_adapter_reads_a_real_pipe_line_by_line() -> None:
    read_fd, write_fd = os.pipe()
    received: list[missive.Message] = []
    with os.fdopen(read_fd, "rb") as reader:
        os.write(write_fd, b"a\nb\n")
        os.close(write_fd)
        StdinAdapter(missive.RawMessage, recording_processor(received), reader).run()
    assert [m.raw_data for m in received] == [b"a", b"b"]


@pytest.mark.parametrize("source", ["bytes object", "regular file"])
def test_a_line_longer_than_max_line_size_is_dead_lettered_and_reading_goes_on(
    source: str, tmp_path: Any
) -> None:
    # Given a DLQ and input whose second line is longer than max_line_size
    received: list[missive.Message] = []
    processor = recording_processor(received)
    dlq: dict[bytes, tuple[missive.Message, str]] = {}
    processor.set_dlq(dlq)
    data = b"first\n" + b"y" * 10_000 + b"\nlast\n"
    if source == "regular file":
        (tmp_path / "input").write_bytes(data)
        stream: Any = (tmp_path / "input").open("rb")
    else:
        stream = io.BytesIO(data)

    # When the adapter reads it with a limit of 5,000 bytes a line
    with stream:
        StdinAdapter(missive.RawMessage, processor, stream, max_line_size=5000).run()

    # Then the long line is dead-lettered with its first bytes and a reason, and the
    # lines around it are handled
    assert [m.raw_data for m in received] == [b"first", b"last"]
    [(message, reason)] = dlq.values()
    assert message.raw_data == b"y" * 4096
    assert message.attributes["line"] == 2
    assert message.attributes["line_size"] == 10_000
    assert "longer than max_line_size (5000 bytes)" in reason


def test_a_stop_on_a_pipe_handles_the_lines_already_read_before_returning() -> None:
    # Given three lines in a pipe, read together, and a handler that stops at the first
    processor: missive.Processor[missive.Message] = missive.Processor()
    handled: list[bytes] = []
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"1\n2\n3\n")
    with os.fdopen(read_fd, "rb") as reader:
        adapter = StdinAdapter(missive.RawMessage, processor, reader)

        @processor.handle_for(lambda m: True)
        def stop_at_first(message: missive.Message, ctx: Ctx) -> None:
            handled.append(message.raw_data)
            adapter.stop()
            ctx.ack()

        # When it runs, the pipe still open
        adapter.run()
        os.close(write_fd)
    # Then the lines taken from the pipe were all handled: none is lost
    assert handled == [b"1", b"2", b"3"]


def test_a_long_line_keeps_its_reason_summary() -> None:
    processor = recording_processor([])
    dlq: dict[bytes, tuple[missive.Message, str]] = {}
    processor.set_dlq(dlq)
    StdinAdapter(
        missive.RawMessage, processor, io.BytesIO(b"z" * 20 + b"\n"), max_line_size=10
    ).run()
    [(_, reason)] = dlq.values()
    assert isinstance(reason, missive.DeadLetterReason)
    assert reason.summary == "line longer than max_line_size (10 bytes)"
    assert reason == (
        "line longer than max_line_size (10 bytes): line 1 is 20 bytes; its first 20 bytes "
        "are kept, the rest was skipped"
    )


def test_without_a_dlq_a_long_line_stops_the_run_naming_the_line() -> None:
    adapter = StdinAdapter(
        missive.RawMessage, recording_processor([]), io.BytesIO(b"ok\n" + b"z" * 20 + b"\n"),
        max_line_size=10,
    )  # fmt: skip
    with pytest.raises(missive.HandlingError) as info:
        adapter.run()
    notes = "".join(getattr(info.value, "__notes__", []))
    assert "(input line 2: it and the lines after it were not handled; resume from line 2)" in notes


def test_with_concurrency_a_line_that_stops_the_run_lets_the_lines_in_flight_finish() -> None:
    # Given four lines handled at once, the third of which no handler matches (no DLQ)
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    handled: list[bytes] = []

    @processor.handle_for(lambda m: m.raw_data != b"bad")
    def slow(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        time.sleep(0.1)
        handled.append(message.raw_data)
        ctx.ack()

    adapter = StdinAdapter(
        missive.RawMessage, processor, io.BytesIO(b"a\nb\nbad\nc\n"), concurrency=4
    )
    # When it runs, then it stops with the error, naming the line to resume from...
    with pytest.raises(missive.HandlingError) as raised:
        adapter.run()
    assert "resume from line 3" in " ".join(raised.value.__notes__)
    # ...once the lines already being handled were done ("c" may not have been read)
    assert {b"a", b"b"} <= set(handled)
