"""``/healthz`` and ``/readyz`` of ``missive run --http`` through a Redis restart and a
SIGTERM drain, on a redis-server of the test's own (the shared one is never restarted)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.cli._apps import write_app
from tests.faults.redis_server import RedisServer, require_redis_server
from tests.observability.support import Run, wait_for

#: A Redis Streams consumer whose handler holds each message until a file named
#: ``release`` exists, noting when it started and what it handled.
HELD = """
import os
import time
from pathlib import Path

import missive
from missive.adapters.redis import RedisStreamsAdapter

HERE = Path(os.environ["TEST_DIR"])
processor = missive.Processor()


@processor.handle_for(lambda m: True)
def hold(message, ctx):
    (HERE / "started").touch()
    while not (HERE / "release").exists():
        time.sleep(0.05)
    with open(HERE / "handled", "ab") as handled:
        handled.write(message.raw_data + b"\\n")
    ctx.ack()


def adapter():
    return RedisStreamsAdapter(
        missive.RawMessage, processor, os.environ["TEST_STREAM"],
        url=os.environ["TEST_REDIS_URL"], max_reconnect_delay=1.0, block_ms=200,
    )
"""

WORKERS = {"one process": (), "two workers": ("--workers", "2")}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, killed afterwards."""
    require_redis_server()
    with RedisServer(tmp_path / "redis") as private:
        yield private


def start(tmp_path: Path, server: RedisServer, *args: str) -> tuple[Run, str]:
    """``missive run held:adapter --http ... ARGS`` on a new stream; the run and its stream."""
    write_app(tmp_path, "held", HELD)
    stream = f"probes-{uuid.uuid4().hex[:8]}"
    env = {"TEST_DIR": str(tmp_path), "TEST_STREAM": stream, "TEST_REDIS_URL": server.url}
    return Run(tmp_path, "held:adapter", *args, env=env), stream


def publish(server: RedisServer, stream: str, body: bytes) -> None:
    client = redis.Redis.from_url(server.url)
    try:
        client.xadd(stream, {"data": body})
    finally:
        client.close()


@pytest.mark.parametrize("workers", WORKERS.values(), ids=WORKERS.keys())
def test_readiness_goes_false_while_redis_is_down_and_true_once_it_is_back(
    tmp_path: Path, server: RedisServer, workers: tuple[str, ...]
) -> None:
    (tmp_path / "release").touch()
    run, stream = start(tmp_path, server, *workers)
    try:
        # Given a worker consuming
        run.wait_probe("/readyz", 200)
        assert run.probe("/healthz")[0] == 200

        # When its Redis goes down, it is not ready, and still live (reconnecting)
        server.stop()
        body = run.wait_probe("/readyz", 503)
        assert "connection lost: reconnecting" in body
        assert run.probe("/healthz")[0] == 200

        # Then once Redis is back it is ready again, and consumes
        server.start()
        run.wait_probe("/readyz", 200)
        publish(server, stream, b"after the restart")
        handled = tmp_path / "handled"
        wait_for("the message to be handled", handled.exists)
        assert handled.read_bytes() == b"after the restart\n"
    finally:
        assert run.stop() == 0, run.log


@pytest.mark.parametrize("workers", WORKERS.values(), ids=WORKERS.keys())
def test_readiness_is_false_while_draining_after_sigterm(
    tmp_path: Path, server: RedisServer, workers: tuple[str, ...]
) -> None:
    run, stream = start(tmp_path, server, *workers)
    try:
        # Given a worker in the middle of a message
        run.wait_probe("/readyz", 200)
        publish(server, stream, b"in hand")
        wait_for("the handler to start", (tmp_path / "started").exists)

        # When it is asked to stop, it drains: not ready, still live
        run.terminate()
        body = run.wait_probe("/readyz", 503)
        assert body.startswith("stopping")
        assert run.probe("/healthz")[0] == 200

        # Then it finishes the message and exits cleanly
        (tmp_path / "release").touch()
        assert run.process.wait(30) == 0, run.log
        assert (tmp_path / "handled").read_bytes() == b"in hand\n"
    finally:
        run.stop()
