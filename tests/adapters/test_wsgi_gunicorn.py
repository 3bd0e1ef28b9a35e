"""The WSGI adapter under a real gunicorn on 127.0.0.1, driven by http.client, urllib and curl."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SECRET = "gunicorn-test-secret"

APP = """
import os, threading, time
import missive
from missive.adapters.wsgi import HMACSignature, WSGIAdapter

EVENTS = os.environ["MISSIVE_TEST_EVENTS"]

def record(line):
    with open(EVENTS, "a") as events:
        events.write(line + "\\n")

processor = missive.Processor()

@processor.before_processing
def before(ctx):
    record(f"before {os.getpid()}")

@processor.after_processing
def after(ctx):
    record(f"after {os.getpid()}")

@processor.handle_for(lambda message: True)
def handle(message, ctx):
    body = message.raw_data
    if body.startswith(b"sleep "):
        time.sleep(float(body.split()[1]))
    if body == b"nack":
        ctx.nack()
        return
    record(f"handled {os.getpid()} {threading.get_ident()} {len(body)} {body[:20].hex()}")
    ctx.ack()

secret = os.environ.get("MISSIVE_TEST_SECRET")
adapter = WSGIAdapter(
    missive.RawMessage,
    processor,
    signature=HMACSignature(secret) if secret else None,
    max_body_size=int(os.environ.get("MISSIVE_TEST_MAX_BODY", 1024 * 1024)),
    body_timeout=float(os.environ.get("MISSIVE_TEST_BODY_TIMEOUT", 10)),
)
if os.environ.get("MISSIVE_TEST_START_AT_IMPORT"):
    adapter.start()
"""

# Eager hooks: each worker starts processing when it boots and closes when it exits.
CONFIG = """
def post_worker_init(worker):
    import app
    app.adapter.start()

def worker_exit(server, worker):
    import app
    app.adapter.close()
"""


class Gunicorn:
    """One gunicorn serving ``app:adapter`` from ``directory`` on a loopback socket."""

    def __init__(self, directory: Path, args: list[str], env: dict[str, str]) -> None:
        self.directory = directory
        self.events = directory / "events.log"
        self.output = directory / "gunicorn.log"
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port: int = listener.getsockname()[1]
        environ = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "MISSIVE_TEST_EVENTS": str(self.events),
            **env,
        }
        with listener, self.output.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "gunicorn", "--bind", f"fd://{listener.fileno()}"),
                    *("--chdir", str(directory), "--graceful-timeout", "5", *args, "app:adapter"),
                ],
                env=environ,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=[listener.fileno()],
                start_new_session=True,
            )
        self._wait_until_answering()

    def _wait_until_answering(self) -> None:
        # An unknown path answers 404 without starting the processing hooks.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if self.request("GET", "/probe")[0] == 404:
                    return
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"gunicorn did not start; its output:\n{self.output.read_text()}")

    def request(
        self, method: str, path: str = "/", body: bytes | None = None, **kwargs: Any
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, body=body, **kwargs)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def curl(self, *args: str) -> int:
        """Run curl against the server; returns the HTTP status."""
        result = subprocess.run(
            [
                *("curl", "-sS", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}"),
                *(*args, f"http://127.0.0.1:{self.port}/"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return int(result.stdout)

    def lines(self, kind: str) -> list[list[str]]:
        if not self.events.exists():
            return []
        rows = [line.split() for line in self.events.read_text().splitlines()]
        return [row[1:] for row in rows if row[0] == kind]

    def stop(self) -> int:
        """SIGTERM, as a deployment does; returns gunicorn's exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"gunicorn did not stop on SIGTERM:\n{self.output.read_text()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    servers: list[Gunicorn] = []

    def start(*args: str, config: bool = False, **env: str) -> Gunicorn:
        (tmp_path / "app.py").write_text(APP)
        extra = list(args)
        if config:
            (tmp_path / "gunicorn_conf.py").write_text(CONFIG)
            extra += ["--config", str(tmp_path / "gunicorn_conf.py")]
        server = Gunicorn(tmp_path, extra, env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()


# -- over HTTP -----------------------------------------------------------------------


def test_post_with_urllib_is_acked_and_handled(serve: Any) -> None:
    server = serve()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/", data=b"hello", method="POST"
    )
    with opener.open(request, timeout=10) as response:
        status = response.status
    assert status == 200
    assert server.lines("handled")[0][2:] == ["5", b"hello".hex()]


def test_nack_answers_503_with_retry_after(serve: Any) -> None:
    server = serve()
    status, headers, _ = server.request("POST", body=b"nack")
    assert status == 503
    assert headers["Retry-After"] == "30"


def test_chunked_post_is_one_message(serve: Any) -> None:
    server = serve()
    chunks = iter([b"chunk-one ", b"chunk-two"])
    status, _, _ = server.request("POST", body=chunks, encode_chunked=True)
    assert status == 200
    assert server.lines("handled")[0][2:] == ["19", b"chunk-one chunk-two"[:20].hex()]


def test_chunked_post_over_the_limit_gets_413(serve: Any) -> None:
    server = serve(MISSIVE_TEST_MAX_BODY="1000")
    chunks = iter([b"x" * 600, b"x" * 600])
    status, _, _ = server.request("POST", body=chunks, encode_chunked=True)
    assert status == 413
    assert server.lines("handled") == []


def test_curl_post_is_acked(serve: Any) -> None:
    server = serve()
    assert shutil.which("curl"), "curl is needed for this test"
    assert server.curl("--data-binary", "from curl") == 200
    assert server.lines("handled")[0][2:] == ["9", b"from curl".hex()]


def test_curl_post_over_the_limit_gets_413(serve: Any, tmp_path: Path) -> None:
    server = serve()
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (2 * 1024 * 1024))
    assert server.curl("--data-binary", f"@{big}") == 413
    assert server.lines("handled") == []


def test_curl_get_on_the_path_gets_405(serve: Any) -> None:
    server = serve()
    assert server.curl() == 405


def test_curl_with_github_signature_is_accepted_and_without_is_401(serve: Any) -> None:
    server = serve(MISSIVE_TEST_SECRET=SECRET)
    body = b'{"action": "opened"}'
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    header = f"X-Hub-Signature-256: {signature}"
    assert server.curl("--data-binary", body.decode(), "-H", header) == 200
    assert server.curl("--data-binary", "forged", "-H", header) == 401
    assert len(server.lines("handled")) == 1


def test_healthz_answers_200(serve: Any) -> None:
    server = serve()
    assert server.request("GET", "/healthz")[0] == 200


# -- workers, threads and processing hooks --------------------------------------------


def test_threaded_worker_handles_requests_concurrently(serve: Any) -> None:
    # Given one worker with four threads, and a handler that takes 0.5 s
    server = serve("--workers", "1", "--threads", "4")
    statuses: list[int] = []

    def post() -> None:
        statuses.append(server.request("POST", body=b"sleep 0.5")[0])

    # When four requests arrive at once
    threads = [threading.Thread(target=post) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    # Then all are acked, handled on several threads at once, after one before_processing
    assert statuses == [200] * 4
    assert elapsed < 1.5, f"4 requests of 0.5 s took {elapsed:.2f} s: not concurrent"
    assert len({row[1] for row in server.lines("handled")}) > 1
    assert len(server.lines("before")) == 1


def test_processing_hooks_run_once_per_worker_lazily(serve: Any) -> None:
    # Given two workers that start processing on their first request
    server = serve("--workers", "2", "--threads", "2")
    # When 30 messages are posted and gunicorn is stopped with SIGTERM
    for _ in range(30):
        assert server.request("POST", body=b"x")[0] == 200
    assert server.stop() == 0
    # Then each worker that handled messages ran each processing hook exactly once
    before = [row[0] for row in server.lines("before")]
    after = [row[0] for row in server.lines("after")]
    handled_by = {row[0] for row in server.lines("handled")}
    assert len(set(before)) == len(before)
    assert len(set(after)) == len(after)
    assert set(before) == set(after) == handled_by
    assert len(server.lines("handled")) == 30


def test_processing_hooks_run_once_per_worker_with_gunicorn_hooks(serve: Any) -> None:
    # Given two workers whose gunicorn hooks call adapter.start() and adapter.close()
    server = serve("--workers", "2", config=True)
    # When one message is posted and gunicorn is stopped with SIGTERM
    server.request("POST", body=b"x")
    assert server.stop() == 0
    # Then both workers ran before_processing at boot and after_processing once at exit
    before = [row[0] for row in server.lines("before")]
    after = [row[0] for row in server.lines("after")]
    assert len(set(before)) == len(before) == 2
    assert sorted(after) == sorted(before)


def test_after_processing_waits_for_the_request_in_progress(serve: Any) -> None:
    # Given a request whose handler takes 1 s
    server = serve("--workers", "1", "--threads", "2")
    result: list[int] = []
    request = threading.Thread(
        target=lambda: result.append(server.request("POST", body=b"sleep 1")[0])
    )
    request.start()
    time.sleep(0.3)
    # When gunicorn is stopped while it is in progress
    assert server.stop() == 0
    request.join(10)
    # Then the request is acked, and after_processing ran only after it was handled
    events = server.events.read_text().split("\n")
    kinds = [line.split()[0] for line in events if line]
    assert result == [200]
    assert kinds == ["before", "handled", "after"]


def test_with_preload_and_start_at_import_each_worker_runs_its_own_hooks(serve: Any) -> None:
    # Given --preload and a module that starts processing at import, in the master
    server = serve("--workers", "2", "--preload", MISSIVE_TEST_START_AT_IMPORT="1")
    # When messages are posted and gunicorn is stopped with SIGTERM
    for _ in range(10):
        assert server.request("POST", body=b"x")[0] == 200
    assert server.stop() == 0
    # Then the master and every worker that handled messages each ran both hooks once
    before = [row[0] for row in server.lines("before")]
    after = [row[0] for row in server.lines("after")]
    handled_by = {row[0] for row in server.lines("handled")}
    master = str(server.process.pid)
    assert sorted(before) == sorted(after)
    assert len(set(before)) == len(before)
    assert set(before) == handled_by | {master}


# -- slow clients ----------------------------------------------------------------------


def stalled_client(port: int) -> socket.socket:
    """A connection that announces a 1,000-byte body, sends 5 bytes and waits."""
    client = socket.create_connection(("127.0.0.1", port), 5)
    client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nshort")
    return client


def test_stalled_clients_get_408_and_ordinary_requests_are_still_answered(serve: Any) -> None:
    # Given 2 workers x 4 threads with a body timeout of 1 s, and 10 stalled clients
    server = serve("--workers", "2", "--threads", "4", MISSIVE_TEST_BODY_TIMEOUT="1")
    clients = [stalled_client(server.port) for _ in range(10)]
    try:
        time.sleep(0.2)
        # When ordinary requests are made meanwhile
        started = time.monotonic()
        statuses = [server.request("POST", body=b"x")[0] for _ in range(3)]
        elapsed = time.monotonic() - started
        answers = [client.recv(4096) for client in clients]
    finally:
        for client in clients:
            client.close()
    # Then they are answered within 2 s, and each stalled client got 408 unprocessed
    assert statuses == [200] * 3
    assert elapsed < 2, f"ordinary requests took {elapsed:.2f} s"
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers
    assert len(server.lines("handled")) == 3


def test_clients_dripping_a_body_get_408_within_the_body_timeout(serve: Any) -> None:
    # Given a body timeout of 1 s, and 8 clients (every thread of both workers) that
    # announce 1,000 bytes and send one every 0.3 s: each recv is within the timeout
    server = serve("--workers", "2", "--threads", "4", MISSIVE_TEST_BODY_TIMEOUT="1")
    clients = [stalled_client(server.port) for _ in range(8)]
    started = time.monotonic()
    answers: dict[int, bytes] = {}
    try:
        # When they go on dripping until answered (or 6 s have passed)
        while len(answers) < len(clients) and time.monotonic() - started < 6:
            time.sleep(0.3)
            for number, client in enumerate(clients):
                if number in answers:
                    continue
                client.setblocking(False)
                try:
                    answer = client.recv(4096)
                except BlockingIOError:
                    answer = b""
                client.setblocking(True)
                if answer:
                    answers[number] = answer
                else:
                    with contextlib.suppress(OSError):
                        client.sendall(b"x")
        elapsed = time.monotonic() - started
        # and an ordinary request is made after them
        status = server.request("POST", body=b"x")[0]
    finally:
        for client in clients:
            client.close()
    # Then each got 408 soon after its second, and the ordinary request was handled
    assert len(answers) == len(clients), f"{len(answers)} of {len(clients)} answered"
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers.values()), answers
    assert elapsed < 4, f"the dripping clients were cut off only after {elapsed:.1f} s"
    assert status == 200
    assert len(server.lines("handled")) == 1
