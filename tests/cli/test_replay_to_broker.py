"""``missive dlq replay --to-broker``: dead letters back on the real broker they came from.

The dead letters are made as in production: published to a real RabbitMQ queue or
Redis stream (each test its own, removed afterwards), consumed by the adapter with a
handler that raises, stored in an SQLite DLQ.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pytest
import redis

import missive
from missive.adapters.rabbitmq import RabbitMQAdapter
from missive.adapters.redis import RedisStreamsAdapter
from missive.dlq.sqlite import SQLiteDLQ
from missive.testing.conformance.support import Recorder, running, wait_until
from tests.cli.conftest import CLI, assert_one_line_error
from tests.services import require

AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"
REDIS = "redis://127.0.0.1:6379/0"


def failing() -> missive.Processor[missive.RawMessage]:
    """A processor whose one handler always raises."""
    processor: missive.Processor[missive.RawMessage] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def broken(message: missive.RawMessage, ctx: Any) -> None:
        raise RuntimeError("broken")

    return processor


def dead_letter(adapter: Any, path: Path, count: int) -> None:
    """Run ``adapter`` (its processor failing) until ``count`` letters are in ``path``."""
    with SQLiteDLQ(path) as dlq:
        adapter.processor.set_dlq(dlq)
        with running(adapter):
            wait_until(lambda: len(dlq) >= count, f"{count} dead letters")


class Rabbit:
    """A queue bound to a direct exchange, both this test's own."""

    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:12]
        self.queue, self.exchange = f"missive-replay-{suffix}", f"missive-replay-x-{suffix}"
        self.connection = pika.BlockingConnection(pika.URLParameters(AMQP))
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.channel.exchange_declare(self.exchange, "direct")
        self.channel.queue_declare(self.queue, durable=True)
        self.channel.queue_bind(self.queue, self.exchange, "orders.created")

    def publish(self, body: bytes, message_id: str) -> None:
        headers: dict[str, Any] = {"tenant": "acme"}
        if message_id == "again":
            headers["x-missive-replays"] = 1
        properties = pika.BasicProperties(
            message_id=message_id,
            content_type="application/json",
            correlation_id="corr-1",
            reply_to="replies",
            content_encoding="utf-8",
            priority=3,
            timestamp=1_700_000_000,
            type="order.created",
            app_id="shop",
            headers=headers,
        )
        self.channel.basic_publish(self.exchange, "orders.created", body, properties)

    def get(self) -> tuple[Any, bytes] | None:
        method, properties, body = self.channel.basic_get(self.queue, auto_ack=True)
        return None if method is None else (properties, body)

    def close(self) -> None:
        self.channel.queue_delete(self.queue)
        self.channel.exchange_delete(self.exchange)
        self.connection.close()


@pytest.fixture
def rabbit() -> Iterator[Rabbit]:
    require("rabbitmq")
    made = Rabbit()
    yield made
    made.close()


@pytest.fixture
def stream() -> Iterator[tuple[redis.Redis, str]]:
    require("redis")
    client = redis.Redis.from_url(REDIS)
    name = f"missive-replay-{uuid.uuid4().hex[:12]}"
    yield client, name
    client.delete(name, f"{name}:missive-delayed:replay")
    client.close()


def replay(cli: CLI, path: Path, url: str, *more: str) -> Any:
    return cli("dlq", "replay", "--to-broker", "--broker-url", url, "--dlq", str(path), *more)


def test_rabbitmq_letters_go_back_to_their_exchange_with_their_properties(
    cli: CLI, tmp_path: Path, rabbit: Rabbit
) -> None:
    # Given two dead letters consumed from a real queue, published with properties
    path = tmp_path / "dlq.db"
    rabbit.publish(b'{"n": 1}', "first")
    rabbit.publish(b'{"n": 2}', "again")  # replayed once before
    dead_letter(RabbitMQAdapter(missive.RawMessage, failing(), rabbit.queue, url=AMQP), path, 2)
    # When they are replayed to the broker
    result = replay(cli, path, AMQP, "--all")
    # Then both are back on the queue as published, their replay count one higher
    assert result.returncode == 0, result.stderr + result.stdout
    assert "2 confirmed and removed, 0 not sent" in result.stdout
    got = {}
    while (one := rabbit.get()) is not None:
        got[one[0].message_id] = one
    assert set(got) == {"first", "again"}
    properties, body = got["first"]
    assert body == b'{"n": 1}'
    assert (properties.content_type, properties.correlation_id, properties.reply_to) == (
        "application/json",
        "corr-1",
        "replies",
    )
    assert (
        properties.content_encoding,
        properties.priority,
        properties.timestamp,
        properties.type,
        properties.app_id,
    ) == ("utf-8", 3, 1_700_000_000, "order.created", "shop")
    assert properties.delivery_mode == 2
    assert properties.headers["tenant"] in (b"acme", "acme")
    assert properties.headers["x-missive-replays"] == 1
    assert got["again"][0].headers["x-missive-replays"] == 2
    # And the DLQ is empty
    with SQLiteDLQ(path) as dlq:
        assert len(dlq) == 0


def test_a_rabbitmq_letter_whose_exchange_is_gone_stays_with_a_one_line_reason(
    cli: CLI, tmp_path: Path, rabbit: Rabbit
) -> None:
    # Given a dead letter whose exchange was deleted since
    path = tmp_path / "dlq.db"
    rabbit.publish(b"lost", "lost")
    dead_letter(RabbitMQAdapter(missive.RawMessage, failing(), rabbit.queue, url=AMQP), path, 1)
    rabbit.channel.exchange_delete(rabbit.exchange)
    # When it is replayed to the broker
    result = replay(cli, path, AMQP, "--all")
    # Then it is kept, with one line saying why, and nothing reaches the queue
    assert result.returncode == 1
    [line] = [text for text in result.stdout.splitlines() if text.startswith("lost: ")]
    assert "not sent" in line
    assert "NOT_FOUND" in line
    assert line.endswith("(kept)")
    assert "0 confirmed and removed, 1 not sent (kept)" in result.stdout
    assert rabbit.get() is None
    with SQLiteDLQ(path) as dlq:
        assert list(dlq) == [b"lost"]


def test_an_unroutable_rabbitmq_letter_stays(cli: CLI, tmp_path: Path, rabbit: Rabbit) -> None:
    # Given a dead letter whose exchange no longer routes its key anywhere
    path = tmp_path / "dlq.db"
    rabbit.publish(b"nowhere", "nowhere")
    dead_letter(RabbitMQAdapter(missive.RawMessage, failing(), rabbit.queue, url=AMQP), path, 1)
    rabbit.channel.queue_unbind(rabbit.queue, rabbit.exchange, "orders.created")
    # When it is replayed: mandatory, it comes back unroutable and is kept
    result = replay(cli, path, AMQP, "nowhere")
    assert result.returncode == 1
    assert "nowhere: not sent: unroutable" in result.stdout
    with SQLiteDLQ(path) as dlq:
        assert list(dlq) == [b"nowhere"]


def test_redis_stream_letters_come_back_to_their_group_with_their_id(
    cli: CLI, tmp_path: Path, stream: tuple[redis.Redis, str]
) -> None:
    # Given a dead letter consumed from a real stream, an entry with another field
    client, name = stream
    path = tmp_path / "dlq.db"
    entry_id = client.xadd(name, {"data": b"payload", "tenant": b"acme"})
    options: dict[str, Any] = {"stream": name, "group": "replay", "url": REDIS, "block_ms": 50}
    dead_letter(RedisStreamsAdapter(missive.RawMessage, failing(), **options), path, 1)
    # When it is replayed to the broker
    result = replay(cli, path, REDIS, "--all")
    # Then the DLQ is empty and the group's worker gets it again, same id and fields
    assert result.returncode == 0, result.stderr + result.stdout
    assert "1 confirmed and removed" in result.stdout
    with SQLiteDLQ(path) as dlq:
        assert len(dlq) == 0
    recorder = Recorder()
    with running(RedisStreamsAdapter(missive.RawMessage, recorder.processor, **options)):
        wait_until(lambda: recorder.messages, "the replayed entry is handled")
    [message] = recorder.messages
    assert (message.message_id, message.raw_data) == (entry_id, b"payload")
    assert message.attributes["fields"] == {"tenant": b"acme"}
    assert message.attributes["x-missive-replays"] == "1"


def test_a_letter_replayed_again_counts_its_replays(
    cli: CLI, tmp_path: Path, stream: tuple[redis.Redis, str]
) -> None:
    # Given a letter replayed once, that failed again
    client, name = stream
    path = tmp_path / "dlq.db"
    client.xadd(name, {"data": b"x"})
    options: dict[str, Any] = {"stream": name, "group": "replay", "url": REDIS, "block_ms": 50}
    dead_letter(RedisStreamsAdapter(missive.RawMessage, failing(), **options), path, 1)
    assert replay(cli, path, REDIS, "--all").returncode == 0
    dead_letter(RedisStreamsAdapter(missive.RawMessage, failing(), **options), path, 1)
    # When it is replayed again
    assert replay(cli, path, REDIS, "--all").returncode == 0
    # Then its entry says two
    last = client.xrevrange(name, count=1)[0][1]
    assert last[b"x-missive-replays"] == b"2"


def test_a_letter_from_stdin_stays(cli: CLI, tmp_path: Path) -> None:
    # Given a letter dead-lettered by the stdin adapter
    path = tmp_path / "dlq.db"
    with SQLiteDLQ(path) as dlq:
        message = missive.RawMessage(b"line", b"stdin-1", {"line": 1, "line_size": 4})
        dlq[message.message_id] = (message, "broken")
    # When it is replayed to a broker (none is reached: nothing is to be sent)
    result = replay(cli, path, REDIS, "--all")
    # Then it is kept, and the reason says where it came from
    assert result.returncode == 1
    assert "stdin-1: not sent: cannot be sent to a broker: it came from stdin" in result.stdout
    with SQLiteDLQ(path) as dlq:
        assert list(dlq) == [b"stdin-1"]


def test_a_letter_from_another_broker_stays(
    cli: CLI, tmp_path: Path, stream: tuple[redis.Redis, str]
) -> None:
    path = tmp_path / "dlq.db"
    with SQLiteDLQ(path) as dlq:
        attributes = {"queue": "q", "exchange": "", "routing_key": "q", "headers": {}}
        message = missive.RawMessage(b"m", b"amqp-1", attributes)
        dlq[message.message_id] = (message, "broken")
    result = replay(cli, path, REDIS, "--all")
    assert result.returncode == 1
    assert "it came from RabbitMQ, not the Redis Streams of --broker-url" in result.stdout


def test_dry_run_says_where_each_would_go(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "dlq.db"
    with SQLiteDLQ(path) as dlq:
        for message in (
            missive.RawMessage(b"a", b"s-1", {"stream": "orders", "group": "g"}),
            missive.RawMessage(b"b", b"l-1", {"line": 1}),
        ):
            dlq[message.message_id] = (message, "broken")
    result = replay(cli, path, REDIS, "--all", "--dry-run")
    assert result.returncode == 0
    assert "Redis stream 'orders', group 'g'" in result.stdout
    assert "it came from stdin" in result.stdout
    with SQLiteDLQ(path) as dlq:
        assert len(dlq) == 2


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://127.0.0.1:8080/", "not a broker's URL scheme"),
        ("amqp://guest:secret@127.0.0.1:1/%2F", "cannot connect to RabbitMQ"),
    ],
)
def test_a_bad_broker_url_is_a_one_line_error(
    cli: CLI, tmp_path: Path, url: str, fragment: str
) -> None:
    path = tmp_path / "dlq.db"
    with SQLiteDLQ(path) as dlq:
        message = missive.RawMessage(b"m", b"q-1", {"queue": "q", "routing_key": "q"})
        dlq[message.message_id] = (message, "broken")
    result = replay(cli, path, url, "--all")
    assert_one_line_error(result, fragment)
    assert "secret" not in result.stderr
    with SQLiteDLQ(path) as dlq:
        assert len(dlq) == 1


def test_no_broker_url_is_a_one_line_error(cli: CLI, dlq_path: Path) -> None:
    result = cli("dlq", "replay", "--to-broker", "--all", "--dlq", str(dlq_path))
    assert_one_line_error(result, "--broker-url URL", "MISSIVE_BROKER_URL")
