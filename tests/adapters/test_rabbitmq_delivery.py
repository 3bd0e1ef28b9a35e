"""RabbitMQAdapter specifics: failures without a DLQ, acks, options, config errors, signals."""

from __future__ import annotations

import logging
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from typing import Any

import pika
import pika.exceptions
import pytest

import missive
from missive.adapters.rabbitmq import DEFAULT_URL, RabbitMQAdapter
from missive.testing.conformance.support import TIMEOUT, Recorder, running, wait_until
from tests.adapters.test_rabbitmq import (
    URL,
    RabbitMQHarness,
    harness,  # noqa: F401 - fixture
)
from tests.services import require


class BrokenDLQ(dict[bytes, tuple[missive.Message, str]]):
    def __setitem__(self, key: bytes, value: tuple[missive.Message, str]) -> None:
        raise OSError("disk full")


@pytest.mark.parametrize("dlq", [None, BrokenDLQ()], ids=["no-dlq", "dlq-write-fails"])
def test_a_failure_that_cannot_be_stored_is_requeued_never_acked_and_logged(
    harness: RabbitMQHarness,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    dlq: BrokenDLQ | None,
) -> None:
    # Given a handler that raises and no working DLQ
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    attempts: list[bytes] = []

    @processor.handle_for(lambda m: True)
    def broken(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        attempts.append(message.message_id)
        raise RuntimeError("secret payload detail")

    if dlq is not None:
        processor.set_dlq(dlq)
    harness.publish([b"fails"])
    # When it is consumed
    with running(harness.adapter(missive.RawMessage, processor, retry_delay=0.05)):
        wait_until(lambda: len(attempts) >= 3, "the message is delivered 3 times")
    # Then it was requeued each time with the same id, and is still on the broker
    assert set(attempts) == {f"{harness.queue}-1".encode()}
    assert harness.remaining() == 1
    # And each failure was logged at ERROR with the id, without the exception's text
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors
    assert all(f"{harness.queue}-1" in e and "not acked" in e for e in errors)
    assert not any("secret payload detail" in e for e in errors)


def test_several_queues_are_consumed_by_one_adapter(harness: RabbitMQHarness) -> None:  # noqa: F811
    # Given a second queue, and one message on each
    other = f"{harness.queue}-other"
    channel = harness.channel
    channel.queue_declare(other, durable=True)
    try:
        harness.publish([b"first"])
        channel.basic_publish("", other, b"second")
        recorder = Recorder()
        adapter = RabbitMQAdapter(
            missive.RawMessage, recorder.processor, [harness.queue, other], url=URL
        )
        # When one adapter consumes both queues
        with running(adapter):
            wait_until(lambda: len(recorder.messages) == 2, "both messages are handled")
        # Then each message says which queue it came from
        by_queue = {m.attributes["queue"]: m.raw_data for m in recorder.messages}
        assert by_queue == {harness.queue: b"first", other: b"second"}
    finally:
        channel.queue_delete(other)


def test_prefetch_bounds_the_messages_taken_ahead(harness: RabbitMQHarness) -> None:  # noqa: F811
    # Given 10 messages and a handler blocked on the first one, with prefetch=3
    release = threading.Event()
    recorder = Recorder(on_message=lambda m: release.wait(TIMEOUT))
    harness.publish([b"%d" % i for i in range(10)])
    with running(harness.adapter(missive.RawMessage, recorder.processor, prefetch=3)):
        # When the handler holds the first message
        # Then the broker sent only 3 and keeps 7 ready
        wait_until(lambda: harness.ready() == 7, "7 messages are ready")
        release.set()
        wait_until(lambda: len(recorder.messages) == 10, "all 10 are handled")


def test_a_missing_queue_makes_run_raise_at_once(harness: RabbitMQHarness) -> None:  # noqa: F811
    # Given an adapter for a queue that does not exist
    adapter = RabbitMQAdapter(
        missive.RawMessage, missive.Processor(), f"missive-test-missing-{uuid.uuid4().hex}", url=URL
    )
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run_catching(adapter, errors), daemon=True)
    # When it runs
    thread.start()
    thread.join(TIMEOUT)
    # Then run() raises the broker's 404, with a note saying what to do
    assert not thread.is_alive()
    [error] = errors
    assert isinstance(error, pika.exceptions.ChannelClosedByBroker)
    assert error.reply_code == 404
    assert "declare the queues" in " ".join(error.__notes__)


def test_wrong_credentials_make_run_raise_at_once() -> None:
    # Given an adapter with a wrong password
    require("rabbitmq")
    bad = "amqp://guest:wrong@127.0.0.1:5672/%2F"
    adapter = RabbitMQAdapter(missive.RawMessage, missive.Processor(), "any", url=bad)
    # When it runs, then it raises instead of retrying forever
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        adapter.run()


def _run_catching(adapter: missive.Adapter[Any], errors: list[BaseException]) -> None:
    try:
        adapter.run()
    except BaseException as exc:
        errors.append(exc)


def test_the_url_defaults_to_amqp_url_then_the_local_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given no url argument
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    # When AMQP_URL is set, then it is used; when not, the local broker is
    monkeypatch.setenv("AMQP_URL", "amqp://u:p@example.invalid:5673/v")
    assert RabbitMQAdapter(missive.RawMessage, processor, "q").url.endswith("invalid:5673/v")
    monkeypatch.delenv("AMQP_URL")
    assert RabbitMQAdapter(missive.RawMessage, processor, "q").url == DEFAULT_URL
    assert DEFAULT_URL == "amqp://guest:guest@127.0.0.1:5672/%2F"


def test_importing_the_adapter_without_pika_names_the_extra() -> None:
    # Given a Python where pika cannot be imported
    code = textwrap.dedent(
        """
        import sys
        sys.modules["pika"] = None
        try:
            import missive.adapters.rabbitmq
        except Exception as exc:
            import missive
            assert isinstance(exc, missive.MissingExtraError), type(exc)
            print(exc)
        """
    )
    # When the adapter module is imported
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    # Then the error names the extra to install
    assert "pip install 'missive[rabbitmq]'" in result.stdout


def test_sigterm_finishes_the_message_in_hand_and_requeues_the_rest(
    harness: RabbitMQHarness,  # noqa: F811
) -> None:
    # Given a worker process (adapter in its main thread) busy with 200 slow messages
    harness.publish([b"%d" % i for i in range(200)])
    code = textwrap.dedent(
        f"""
        import sys, time, missive
        from missive.adapters.rabbitmq import RabbitMQAdapter
        processor = missive.Processor()
        calls = []

        @processor.handle_for(lambda m: True)
        def slow(message, ctx):
            time.sleep(0.05)
            ctx.ack()
            print("handled", flush=True)

        @processor.after_processing
        def done(ctx):
            print("after_processing", flush=True)

        RabbitMQAdapter(missive.RawMessage, processor, {harness.queue!r}, url={URL!r}).run()
        print("returned", flush=True)
        """
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    assert worker.stdout is not None
    try:
        assert worker.stdout.readline() == "handled\n"
        # When it receives SIGTERM
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=TIMEOUT)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    # Then it exits cleanly after the hooks, and every unhandled message is back
    assert worker.returncode == 0
    lines = ["handled", *out.splitlines()]
    assert lines[-2:] == ["after_processing", "returned"]
    handled = lines.count("handled")
    assert handled < 200
    assert harness.remaining() == 200 - handled


def test_stop_before_run_returns_without_consuming(harness: RabbitMQHarness) -> None:  # noqa: F811
    # Given an adapter stopped before it runs
    recorder = Recorder()
    harness.publish([b"x"])
    adapter = harness.adapter(missive.RawMessage, recorder.processor)
    adapter.stop()
    # When it runs, then it returns at once, having taken nothing
    adapter.run()
    assert recorder.messages == []
    assert harness.remaining() == 1


@pytest.fixture(autouse=True)
def _log_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="missive")


def test_a_dead_letter_keeps_its_amqp_attributes_in_an_sqlite_dlq(
    harness: RabbitMQHarness,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    # Given an SQLite DLQ and a message with AMQP headers of several types
    from missive.dlq.sqlite import SQLiteDLQ

    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    processor.handle_for(lambda m: m.get_json()["kind"] == "x")(lambda m, ctx: ctx.ack())
    headers = {"tenant": "acme", "attempt": 3, "urgent": True, "nested": {"a": 1}}
    properties = pika.BasicProperties(
        message_id="order-17", headers=headers, content_type="application/json"
    )
    harness.channel.basic_publish("", harness.queue, b"{broken", properties)
    with SQLiteDLQ(str(tmp_path / "dlq.db")) as dlq:
        processor.set_dlq(dlq)
        # When it cannot be decoded
        with running(harness.adapter(missive.JSONMessage, processor)):
            wait_until(lambda: len(dlq) == 1, "the message is dead-lettered")
        # Then the record holds its id, queue, headers and properties
        record = dlq.record(b"order-17")
    assert record.attributes["queue"] == harness.queue
    assert record.attributes["headers"] == headers
    assert record.attributes["content_type"] == "application/json"
    assert "invalid JSON" in record.reason


def test_acks_of_later_messages_never_ack_a_message_waiting_to_be_requeued(
    harness: RabbitMQHarness,  # noqa: F811
) -> None:
    # Given a first message that fails with no DLQ (requeued only after 60 s), then 20 good
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    good: list[bytes] = []

    @processor.handle_for(lambda m: True)
    def handle(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        if message.raw_data == b"bad":
            raise ValueError("cannot")
        good.append(message.raw_data)
        ctx.ack()

    harness.publish([b"bad"] + [b"good-%d" % i for i in range(20)])
    # When the good ones are handled and acked while the bad one waits
    with running(harness.adapter(missive.RawMessage, processor, retry_delay=60.0)):
        wait_until(lambda: len(good) == 20, "the good messages are handled")
        # Then the broker still holds the bad one, and only it
        wait_until(lambda: harness.remaining() == 1, "only the bad message is held")
    # And after the stop it is back in the queue, ready for another try
    assert harness.ready() == 1


def test_a_queue_deleted_under_a_running_adapter_makes_run_raise(
    harness: RabbitMQHarness,  # noqa: F811
) -> None:
    # Given a running adapter on a queue of its own
    queue = f"{harness.queue}-doomed"
    harness.channel.queue_declare(queue, durable=True)
    adapter = RabbitMQAdapter(missive.RawMessage, missive.Processor(), queue, url=URL)
    errors: list[BaseException] = []
    thread = threading.Thread(target=lambda: _run_catching(adapter, errors), daemon=True)
    thread.start()
    try:
        assert adapter.wait_ready(TIMEOUT)
        # When the queue is deleted (RabbitMQ cancels the consumer)
        harness.channel.queue_delete(queue)
        thread.join(TIMEOUT)
    finally:
        adapter.stop()
        thread.join(TIMEOUT)
    # Then the adapter tries again, finds no queue, and run() raises the 404
    assert not thread.is_alive()
    [error] = errors
    assert isinstance(error, pika.exceptions.ChannelClosedByBroker)
    assert error.reply_code == 404
