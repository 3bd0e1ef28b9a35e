"""The WSGI adapter called in process, through wsgiref's PEP 3333 validator.

Most tests are three steps without comments: given an adapter (fixture or first
lines), when one request is made (``call``), then the asserts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import io
import json
import logging
import socket
import threading
import time
import wsgiref.util
import wsgiref.validate
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

import missive
import missive.events
import missive.runtime
import missive.runtime.push
from missive.adapters.wsgi import HMACSignature, StripeSignature, WSGIAdapter

SECRET = b"s3cret"
PAYLOAD_SECRET = "card-4111-1111"  # stands for customer data: must never reach logs


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def call(
    app: Any,
    method: str = "POST",
    path: str = "/",
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    query: str = "",
    chunked: bool = False,
    stream: Any = None,
    validate: bool = True,
) -> Response:
    """Call ``app`` as a WSGI server would, with PEP 3333 checks on both sides."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": stream if stream is not None else io.BytesIO(body),
    }
    if chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    else:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key] = value
    wsgiref.util.setup_testing_defaults(environ)
    started: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]]) -> Any:
        started["status"] = int(status.split()[0])
        started["headers"] = dict(response_headers)
        return lambda data: None

    if validate:
        app = wsgiref.validate.validator(app)
    result = app(environ, start_response)
    try:
        data = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return Response(started["status"], started["headers"], data)


class Recorder:
    """A processor whose one handler does what ``action`` says, recording each message."""

    def __init__(self, action: str = "ack") -> None:
        self.action = action
        self.messages: list[missive.Message] = []
        self.events: list[str] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self.processor: missive.Processor[missive.Message] = missive.Processor()
        self.processor.handle_for(lambda m: True)(self.handle)
        self.processor.before_processing(lambda ctx: self.events.append("before"))
        self.processor.after_processing(lambda ctx: self.events.append("after"))

    def handle(self, message: missive.Message, ctx: missive.HandlingContext[Any]) -> None:
        if self.action == "block":
            self.entered.set()
            self.release.wait(5)
            self.events.append("handled")
        self.messages.append(message)
        if self.action in ("ack", "block"):
            ctx.ack()
        elif self.action == "nack":
            ctx.nack()
        elif self.action == "raise":
            raise ValueError(f"bad payload {message.raw_data!r}")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def adapter(recorder: Recorder) -> Iterator[WSGIAdapter[missive.Message]]:
    adapter = WSGIAdapter(missive.RawMessage, recorder.processor)
    yield adapter
    adapter.close()


def adapter_for(recorder: Recorder, **options: Any) -> WSGIAdapter[missive.Message]:
    return WSGIAdapter(missive.RawMessage, recorder.processor, **options)


class FailingDLQ(dict[bytes, Any]):
    def __setitem__(self, key: bytes, value: Any) -> None:
        raise OSError("disk full")


class UnreadableStream:
    """A wsgi.input that fails the test if anything reads it."""

    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the body was read")

    readline = readlines = read

    def __iter__(self) -> Iterator[bytes]:
        raise AssertionError("the body was read")


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


# -- outcomes ------------------------------------------------------------------------


def test_acked_message_answers_200_with_its_id(adapter: WSGIAdapter[Any]) -> None:
    response = call(adapter, body=b"hello")
    assert response.status == 200
    assert response.json["status"] == "acked"
    assert response.json["message_id"]


def test_message_holds_body_path_query_and_headers(
    adapter: WSGIAdapter[Any], recorder: Recorder
) -> None:
    call(adapter, body=b"\x00hello", query="a=1", headers={"X-Event": "push"})
    (message,) = recorder.messages
    assert message.raw_data == b"\x00hello"
    assert message.attributes["path"] == "/"
    assert message.attributes["query_string"] == "a=1"
    assert message.attributes["headers"]["x-event"] == "push"
    assert message.attributes["method"] == "POST"


def test_credential_headers_are_left_out_of_attributes(
    adapter: WSGIAdapter[Any], recorder: Recorder
) -> None:
    call(adapter, body=b"x", headers={"Authorization": "Bearer t", "Cookie": "s=1"})
    headers = recorder.messages[0].attributes["headers"]
    assert "authorization" not in headers
    assert "cookie" not in headers


def test_nacked_message_answers_503_with_retry_after() -> None:
    adapter = adapter_for(Recorder("nack"), retry_after=7)
    response = call(adapter, body=b"x")
    adapter.close()
    assert response.status == 503
    assert response.headers["Retry-After"] == "7"
    assert response.json["status"] == "nacked"


def test_dead_lettered_message_answers_202_and_is_in_the_dlq() -> None:
    recorder = Recorder("raise")
    dlq: dict[bytes, Any] = {}
    recorder.processor.set_dlq(dlq)
    adapter = adapter_for(recorder)
    response = call(adapter, body=b"x")
    adapter.close()
    assert response.status == 202
    assert response.json["status"] == "dead-lettered"
    assert response.json["message_id"].encode() in dlq


def test_handler_error_without_dlq_answers_500_without_exception_text() -> None:
    adapter = adapter_for(Recorder("raise"))
    response = call(adapter, body=PAYLOAD_SECRET.encode())
    adapter.close()
    assert response.status == 500
    assert response.json["status"] == "failed"
    assert PAYLOAD_SECRET not in response.body.decode()
    assert "ValueError" not in response.body.decode()


def test_dlq_write_failure_answers_500() -> None:
    recorder = Recorder("raise")
    recorder.processor.set_dlq(FailingDLQ())
    adapter = adapter_for(recorder)
    response = call(adapter, body=b"x")
    adapter.close()
    assert response.status == 500


def test_failure_logs_id_and_reason_but_never_the_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter = adapter_for(Recorder("raise"))
    with caplog.at_level(logging.INFO):
        response = call(adapter, body=PAYLOAD_SECRET.encode())
    adapter.close()
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert response.json["message_id"] in logged
    assert "ValueError" in logged
    assert PAYLOAD_SECRET not in logged


def test_an_error_processing_should_never_raise_answers_500_and_is_logged_as_a_bug(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: Any, message: missive.Message, count: int | None = 1) -> Any:
        raise RuntimeError(PAYLOAD_SECRET)

    monkeypatch.setattr(missive.runtime.push.PushDelivery, "deliver", broken)
    adapter = adapter_for(Recorder())
    with caplog.at_level(logging.INFO):
        response = call(adapter, body=b"x")
    adapter.close()
    assert response.status == 500
    assert response.json["status"] == "failed"
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "processing raised RuntimeError" in logged
    assert PAYLOAD_SECRET not in logged


def test_a_verdict_a_push_delivery_never_gives_answers_500(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    retry = missive.runtime.Verdict.RETRY
    monkeypatch.setattr(missive.runtime.push.PushDelivery, "deliver", lambda *args: retry)
    adapter = adapter_for(Recorder())
    response = call(adapter, body=b"x")
    adapter.close()
    assert response.status == 500


# -- limits, methods and paths -------------------------------------------------------


def test_body_over_the_limit_gets_413_without_being_read(recorder: Recorder) -> None:
    adapter = adapter_for(recorder, max_body_size=10)
    response = call(adapter, body=b"x" * 11, stream=UnreadableStream())
    assert response.status == 413
    assert recorder.messages == []


def test_body_at_the_limit_is_accepted(recorder: Recorder) -> None:
    adapter = adapter_for(recorder, max_body_size=10)
    response = call(adapter, body=b"x" * 10)
    adapter.close()
    assert response.status == 200


def test_chunked_body_over_the_limit_gets_413_after_reading_limit_plus_one(
    recorder: Recorder,
) -> None:
    adapter = adapter_for(recorder, max_body_size=100)
    stream = CountingStream(b"x" * 10_000)
    response = call(adapter, chunked=True, stream=stream)
    assert response.status == 413
    assert stream.bytes_read == 101
    assert recorder.messages == []


def test_chunked_body_within_the_limit_is_the_message(
    adapter: WSGIAdapter[Any], recorder: Recorder
) -> None:
    response = call(adapter, chunked=True, stream=io.BytesIO(b"chunked body"))
    assert response.status == 200
    assert recorder.messages[0].raw_data == b"chunked body"


def test_invalid_content_length_gets_400(adapter: WSGIAdapter[Any], recorder: Recorder) -> None:
    # (wsgiref's validator itself refuses such a request, so it is off here)
    response = call(adapter, headers={"Content-Length": "12abc"}, validate=False)
    assert response.status == 400
    assert recorder.messages == []


def test_content_length_of_a_non_ascii_digit_gets_400(
    adapter: WSGIAdapter[Any], recorder: Recorder
) -> None:
    response = call(adapter, headers={"Content-Length": "\u00b2"}, validate=False)
    assert response.status == 400
    assert recorder.messages == []


def test_content_length_of_5000_digits_gets_400(
    adapter: WSGIAdapter[Any], recorder: Recorder
) -> None:
    response = call(adapter, headers={"Content-Length": "9" * 5000}, validate=False)
    assert response.status == 400
    assert recorder.messages == []


def test_body_without_content_length_or_chunking_gets_411_unprocessed(
    adapter: WSGIAdapter[Any], recorder: Recorder
) -> None:
    # Given an HTTP/1.0 POST whose body runs to the end of the connection
    stream = io.BytesIO(b"a body the server does not delimit")
    # When it arrives without Content-Length (the server passes an empty one)
    response = call(adapter, headers={"Content-Length": ""}, stream=stream, validate=False)
    # Then it is refused as of unknown length, and no empty message is made
    assert response.status == 411
    assert recorder.messages == []


def test_body_shorter_than_its_content_length_gets_400(
    adapter: WSGIAdapter[Any], recorder: Recorder
) -> None:
    response = call(adapter, headers={"Content-Length": "50"}, stream=io.BytesIO(b"short"))
    assert response.status == 400
    assert recorder.messages == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_on_the_path_get_405_with_allow(
    adapter: WSGIAdapter[Any], method: str
) -> None:
    response = call(adapter, method=method)
    assert response.status == 405
    assert response.headers["Allow"] == "POST"


def test_unknown_path_gets_404(adapter: WSGIAdapter[Any], recorder: Recorder) -> None:
    response = call(adapter, path="/other", body=b"x")
    assert response.status == 404
    assert recorder.messages == []


def test_configured_path_takes_messages(recorder: Recorder) -> None:
    adapter = adapter_for(recorder, path="/hooks/github")
    assert call(adapter, path="/", body=b"x").status == 404
    assert call(adapter, path="/hooks/github", body=b"x").status == 200
    adapter.close()


def test_healthz_answers_200(adapter: WSGIAdapter[Any]) -> None:
    response = call(adapter, method="GET", path="/healthz")
    assert response.status == 200


def test_healthz_head_answers_200_without_a_body(adapter: WSGIAdapter[Any]) -> None:
    response = call(adapter, method="HEAD", path="/healthz")
    assert response.status == 200
    assert response.body == b""


def test_post_to_healthz_gets_405_and_is_not_a_message(
    adapter: WSGIAdapter[Any], recorder: Recorder
) -> None:
    response = call(adapter, path="/healthz", body=b"x")
    assert response.status == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert recorder.messages == []


def test_health_path_is_configurable(recorder: Recorder) -> None:
    adapter = adapter_for(recorder, health_path="/ready")
    assert call(adapter, method="GET", path="/ready").status == 200
    assert call(adapter, method="GET", path="/healthz").status == 404
    adapter.close()


def test_healthz_answers_503_when_before_processing_fails() -> None:
    processor: missive.Processor[missive.Message] = missive.Processor()
    processor.before_processing(lambda ctx: 1 / 0)
    adapter = WSGIAdapter(missive.RawMessage, processor)
    assert call(adapter, method="GET", path="/healthz").status == 503


def test_app_alias_is_the_adapter(adapter: WSGIAdapter[Any]) -> None:
    assert adapter.app is adapter


@pytest.mark.parametrize(
    "options", [{"path": "hooks"}, {"health_path": "/"}, {"max_body_size": -1}]
)
def test_invalid_options_raise_value_error(recorder: Recorder, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        adapter_for(recorder, **options)


# -- message ids ---------------------------------------------------------------------


def test_sender_id_header_becomes_the_message_id(recorder: Recorder) -> None:
    adapter = adapter_for(recorder, message_id_header="Idempotency-Key")
    response = call(adapter, body=b"x", headers={"Idempotency-Key": "evt-42"})
    adapter.close()
    assert recorder.messages[0].message_id == b"evt-42"
    assert response.json["message_id"] == "evt-42"


def test_without_the_id_header_an_id_is_generated(recorder: Recorder) -> None:
    adapter = adapter_for(recorder, message_id_header="X-Message-Id")
    call(adapter, body=b"x")
    call(adapter, body=b"x")
    adapter.close()
    first, second = recorder.messages
    assert first.message_id != second.message_id


def test_overlong_sender_id_gets_400(recorder: Recorder) -> None:
    adapter = adapter_for(recorder, message_id_header="X-Message-Id")
    response = call(adapter, body=b"x", headers={"X-Message-Id": "a" * 257})
    assert response.status == 400
    assert recorder.messages == []


# -- signatures ----------------------------------------------------------------------


def github_signature(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()


def test_valid_github_signature_is_processed(recorder: Recorder) -> None:
    adapter = adapter_for(recorder, signature=HMACSignature(SECRET))
    body = b'{"zen": "hi"}'
    response = call(adapter, body=body, headers={"X-Hub-Signature-256": github_signature(body)})
    adapter.close()
    assert response.status == 200
    assert recorder.messages[0].raw_data == body


def test_missing_signature_gets_401_and_is_not_processed(recorder: Recorder) -> None:
    adapter = adapter_for(recorder, signature=HMACSignature(SECRET))
    response = call(adapter, body=b"x")
    assert response.status == 401
    assert recorder.messages == []
    assert recorder.events == []


def test_wrong_signature_gets_401_and_logs_no_payload(
    recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    adapter = adapter_for(recorder, signature=HMACSignature(SECRET))
    body = PAYLOAD_SECRET.encode()
    forged = "sha256=" + hmac.new(b"other", body, hashlib.sha256).hexdigest()
    with caplog.at_level(logging.DEBUG):
        response = call(adapter, body=body, headers={"X-Hub-Signature-256": forged})
    assert response.status == 401
    assert recorder.messages == []
    assert "wrong signature" in caplog.text
    assert PAYLOAD_SECRET not in caplog.text


def test_signature_of_another_body_gets_401(recorder: Recorder) -> None:
    adapter = adapter_for(recorder, signature=HMACSignature(SECRET))
    headers = {"X-Hub-Signature-256": github_signature(b"original")}
    response = call(adapter, body=b"tampered", headers=headers)
    assert response.status == 401


def test_base64_signature_without_prefix_in_custom_header() -> None:
    verifier = HMACSignature(SECRET, header="X-Shopify-Hmac-Sha256", prefix="", encoding="base64")
    body = b"order"
    good = verifier.expected(body)
    assert verifier.verify(body, {"x-shopify-hmac-sha256": good}) is None
    assert verifier.verify(b"other", {"x-shopify-hmac-sha256": good}) is not None


def test_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        HMACSignature(b"")


def stripe_adapter(recorder: Recorder, now: float) -> WSGIAdapter[missive.Message]:
    return adapter_for(recorder, signature=StripeSignature(SECRET, clock=lambda: now))


def test_valid_stripe_signature_is_processed(recorder: Recorder) -> None:
    body, now = b'{"id": "evt_1"}', 1_700_000_000
    adapter = stripe_adapter(recorder, now)
    value = StripeSignature(SECRET).sign(body, now - 10)
    response = call(adapter, body=body, headers={"Stripe-Signature": value})
    adapter.close()
    assert response.status == 200


def test_stripe_signature_with_one_matching_v1_among_several_is_processed(
    recorder: Recorder,
) -> None:
    body, now = b"{}", 1_700_000_000
    adapter = stripe_adapter(recorder, now)
    good_v1 = StripeSignature(SECRET).sign(body, now).split(",")[1]
    value = f"t={now},v1={'0' * 64},{good_v1}"
    response = call(adapter, body=body, headers={"Stripe-Signature": value})
    adapter.close()
    assert response.status == 200


def test_stripe_signature_older_than_tolerance_gets_401(recorder: Recorder) -> None:
    body, now = b"{}", 1_700_000_000
    adapter = stripe_adapter(recorder, now)
    value = StripeSignature(SECRET).sign(body, now - 301)
    response = call(adapter, body=body, headers={"Stripe-Signature": value})
    assert response.status == 401
    assert recorder.messages == []


def test_stripe_signature_without_timestamp_gets_401(recorder: Recorder) -> None:
    adapter = stripe_adapter(recorder, 1_700_000_000)
    response = call(adapter, body=b"{}", headers={"Stripe-Signature": "v1=" + "0" * 64})
    assert response.status == 401


# -- processing hooks and threads ----------------------------------------------------


def test_before_processing_runs_once_for_many_requests(
    adapter: WSGIAdapter[Any], recorder: Recorder
) -> None:
    for _ in range(3):
        call(adapter, body=b"x")
    assert recorder.events == ["before"]


def test_before_processing_waits_for_the_first_request(
    adapter: WSGIAdapter[Any], recorder: Recorder
) -> None:
    assert recorder.events == []
    call(adapter, body=b"x")
    assert recorder.events == ["before"]


def test_close_runs_after_processing_once(adapter: WSGIAdapter[Any], recorder: Recorder) -> None:
    call(adapter, body=b"x")
    adapter.close()
    adapter.close()
    assert recorder.events == ["before", "after"]


def test_requests_after_close_get_503_unprocessed(
    adapter: WSGIAdapter[Any], recorder: Recorder
) -> None:
    adapter.close()
    response = call(adapter, body=b"x")
    assert response.status == 503
    assert "Retry-After" in response.headers
    assert recorder.messages == []


def test_failing_before_processing_gets_503_and_is_retried_next_request() -> None:
    attempts: list[int] = []
    recorder = Recorder()

    def flaky(ctx: Any) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise ConnectionError("database down")

    # Given a before_processing hook that fails the first time only
    recorder.processor.before_processing(flaky)
    adapter = adapter_for(recorder)
    # When two requests arrive one after the other
    first = call(adapter, body=b"x")
    second = call(adapter, body=b"x")
    adapter.close()
    # Then the first is refused unprocessed (the sender retries) and the second handled
    assert (first.status, second.status) == (503, 200)
    assert len(recorder.messages) == 1


def test_concurrent_first_requests_run_before_processing_once(recorder: Recorder) -> None:
    def slow_hook(ctx: Any) -> None:
        time.sleep(0.2)

    # Given a before_processing hook that takes 0.2 s
    recorder.processor.before_processing(slow_hook)
    adapter = adapter_for(recorder)
    statuses: list[int] = []
    # When eight first requests arrive at once
    threads = [
        threading.Thread(target=lambda: statuses.append(call(adapter, body=b"x").status))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    adapter.close()
    # Then the hook ran once, before any of them was handled
    assert statuses == [200] * 8
    assert recorder.events == ["before", "after"]


def test_close_waits_for_the_request_in_progress() -> None:
    # Given a request whose handler is blocked
    recorder = Recorder("block")
    adapter = adapter_for(recorder)
    request = threading.Thread(target=call, args=(adapter,), kwargs={"body": b"x"})
    request.start()
    assert recorder.entered.wait(5)
    # When the adapter is closed meanwhile
    closer = threading.Thread(target=adapter.close)
    closer.start()
    time.sleep(0.1)
    # Then after_processing waits until the handler has finished
    assert recorder.events == ["before"]
    recorder.release.set()
    request.join(5)
    closer.join(5)
    assert recorder.events == ["before", "handled", "after"]


# -- observers -----------------------------------------------------------------------


class EventLog(missive.events.Observer):
    """Records the adapter and delivery events (the processing context's are left out)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def worker_started(self, adapter: Any) -> None:
        self.events.append(("worker_started", adapter))

    def worker_stopping(self, adapter: Any) -> None:
        self.events.append(("worker_stopping", adapter))

    def message_received(self, message: missive.Message, delivery_count: int | None) -> None:
        self.events.append(("message_received", delivery_count))

    def acked(self, message: missive.Message) -> None:
        self.events.append(("acked", message.message_id))

    def requeued(self, message: missive.Message, delay: float) -> None:
        self.events.append(("requeued", delay))


def observed(action: str, dlq: Any = None) -> tuple[WSGIAdapter[Any], EventLog]:
    recorder = Recorder(action)
    if dlq is not None:
        recorder.processor.set_dlq(dlq)
    adapter = adapter_for(recorder)
    log = adapter.add_observer(EventLog())
    assert isinstance(log, EventLog)
    return adapter, log


def test_observers_see_start_delivery_ack_and_stop() -> None:
    adapter, log = observed("ack")
    response = call(adapter, body=b"x")
    adapter.close()
    message_id = response.json["message_id"].encode()
    assert log.events == [
        ("worker_started", adapter),
        ("message_received", 1),
        ("acked", message_id),
        ("worker_stopping", adapter),
    ]


def test_observers_see_a_dead_letter_acked_and_a_nack_requeued() -> None:
    adapter, log = observed("raise", dlq={})
    stored = call(adapter, body=b"x")
    adapter.close()
    assert stored.status == 202
    assert ("acked", stored.json["message_id"].encode()) in log.events
    adapter, log = observed("nack")
    nacked = call(adapter, body=b"x")
    adapter.close()
    assert nacked.status == 503
    assert log.events[1:3] == [("message_received", 1), ("requeued", 0.0)]


def test_observers_see_a_message_answered_500_as_requeued_never_acked() -> None:
    # 500 asks the sender to retry: the message is back with it, as after a requeue
    adapter, log = observed("raise", dlq=FailingDLQ())
    response = call(adapter, body=b"x")
    adapter.close()
    assert response.status == 500
    assert [event for event, _ in log.events] == [
        "worker_started",
        "message_received",
        "requeued",
        "worker_stopping",
    ]


def test_worker_started_fires_once_and_stopping_not_without_a_start() -> None:
    adapter, log = observed("ack")
    adapter.start()
    adapter.start()
    call(adapter, body=b"x")
    assert [event for event, _ in log.events].count("worker_started") == 1
    adapter.close()
    adapter.close()
    assert [event for event, _ in log.events].count("worker_stopping") == 1
    never_started, log = observed("ack")
    never_started.close()
    assert log.events == []


# -- development server --------------------------------------------------------------


def test_run_serves_on_loopback_until_stopped(recorder: Recorder) -> None:
    adapter = adapter_for(recorder)
    server = threading.Thread(target=adapter.run, kwargs={"port": 0})
    server.start()
    try:
        assert adapter.wait_ready(5)
        connection = http.client.HTTPConnection("127.0.0.1", adapter.server_address[1], timeout=5)
        connection.request("POST", "/", body=b"over http")
        status = connection.getresponse().status
        connection.close()
    finally:
        adapter.stop()
        server.join(5)
    assert status == 200
    assert recorder.messages[0].raw_data == b"over http"
    assert recorder.events == ["before", "after"]


def test_run_with_concurrency_handles_requests_side_by_side_and_waits_for_them() -> None:
    # Given handlers that each wait until three run at once
    three = threading.Barrier(3, timeout=10)
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    events: list[str] = []
    processor.after_processing(lambda ctx: events.append("after"))

    @processor.handle_for(lambda m: True)
    def handle(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        three.wait()
        events.append("handled")
        ctx.ack()

    adapter = WSGIAdapter(missive.RawMessage, processor, concurrency=3)
    server = threading.Thread(target=adapter.run, kwargs={"port": 0})
    server.start()
    statuses: list[int] = []

    def post() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", adapter.server_address[1], timeout=10)
        connection.request("POST", "/", body=b"x")
        statuses.append(connection.getresponse().status)
        connection.close()

    try:
        assert adapter.wait_ready(5)
        # When three requests come at once, then all three are answered 200
        clients = [threading.Thread(target=post) for _ in range(3)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(15)
    finally:
        adapter.stop()
        server.join(10)
    assert statuses == [200, 200, 200]
    # and the after_processing hooks ran once the requests were done
    assert events == ["handled", "handled", "handled", "after"]


class StalledStream(io.BytesIO):
    """A wsgi.input whose client stopped sending: reads time out, as a socket's do."""

    def read(self, size: int | None = -1) -> bytes:
        raise TimeoutError("timed out")


def test_body_read_that_times_out_gets_408(
    adapter: WSGIAdapter[Any], recorder: Recorder
) -> None:
    response = call(adapter, body=b"x" * 100, stream=StalledStream())
    assert response.status == 408
    assert recorder.messages == []


def test_development_server_answers_408_to_a_stalled_body(recorder: Recorder) -> None:
    # Given the development server with a body timeout of 0.3 s
    adapter = adapter_for(recorder, body_timeout=0.3)
    server = threading.Thread(target=adapter.run, kwargs={"port": 0})
    server.start()
    try:
        assert adapter.wait_ready(5)
        # When a client announces 100 bytes and sends 5
        with socket.create_connection(("127.0.0.1", adapter.server_address[1]), 5) as client:
            client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshort")
            started = time.monotonic()
            answer = client.recv(4096)
            elapsed = time.monotonic() - started
    finally:
        adapter.stop()
        server.join(5)
    # Then it is answered 408 soon after the timeout, and nothing is processed
    assert answer.startswith(b"HTTP/1.0 408")
    assert elapsed < 2
    assert recorder.messages == []


def test_an_async_handler_answers_as_a_sync_one_does() -> None:
    # Given an async handler that acks one path and nacks another, and an async hook
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    loops: list[object] = []

    @processor.before_processing
    async def remember_loop(pctx: missive.ProcessingContext[Any]) -> None:
        loops.append(asyncio.get_running_loop())

    @processor.handle_for(lambda m: True)
    async def handle(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        await asyncio.sleep(0)
        loops.append(asyncio.get_running_loop())
        if message.raw_data == b"later":
            ctx.nack()
        else:
            ctx.ack()

    adapter = WSGIAdapter(missive.RawMessage, processor)
    # When requests come in
    acked, nacked = call(adapter, body=b"now"), call(adapter, body=b"later")
    adapter.close()
    # Then each gets the answer its handler chose, all awaited on the run's one loop
    assert acked.status == 200
    assert nacked.status == 503
    assert len(loops) == 3
    assert len({id(loop) for loop in loops}) == 1
