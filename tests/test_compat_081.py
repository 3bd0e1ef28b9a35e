"""What missive 0.8.1 code and files still do here (issue 17): written from 0.8.1's public
behaviour, not from its tests."""

from __future__ import annotations

import pickle
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import missive
from missive.dlq._legacy import looks_pickled
from missive.dlq.sqlite import SQLiteDLQ
from tests.cli.conftest import CLI, assert_one_line_error
from tests.services import require

# 0.8.1's table, as its SQLiteDLQ created it.
_LEGACY_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS messages (message_id BLOB PRIMARY KEY, "
    "message_bytes BLOB, reason TEXT, inserted TEXT)"
)
_PICKLED_ID = b"\x01" * 16
_RAW_ID = b"raw-1"
_WHEN = datetime(2020, 3, 1, 12, 30, tzinfo=UTC)


def test_handling_error_is_a_runtime_error() -> None:
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    with processor.test_client() as client, pytest.raises(RuntimeError):
        client.send(missive.RawMessage(b"no handler for this"))


def test_connection_str_warns_and_opens_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dlq.db"
    with pytest.warns(DeprecationWarning, match="SQLiteDLQ\\(path\\)"):
        dlq = SQLiteDLQ(connection_str=str(path))
    try:
        dlq[b"m1"] = (missive.RawMessage(b"x", b"m1"), "reason")
        assert dlq.path == str(path)
    finally:
        dlq.close()
    reopened = SQLiteDLQ(path)
    assert list(reopened) == [b"m1"]
    reopened.close()


def test_path_and_connection_str_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not both"):
        SQLiteDLQ(tmp_path / "a.db", connection_str=str(tmp_path / "b.db"))


def test_dlq_alias_is_subscriptable() -> None:
    alias = missive.DLQ[missive.JSONMessage]
    dlq: missive.DLQ[missive.JSONMessage] = {}
    assert alias.__args__[1] == tuple[missive.JSONMessage, str]  # type: ignore[attr-defined]
    assert dlq == {}


@pytest.fixture
def legacy_db(tmp_path: Path) -> Path:
    """A DLQ file as 0.8.1 left it: one pickled message, one row of raw bytes."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(_LEGACY_SCHEMA)
    rows = [
        (
            _PICKLED_ID,
            pickle.dumps({"order": 7}),
            "no matching handlers",
            "2020-01-01 10:00:00+00:00",
        ),
        (_RAW_ID, b'{"order": 8}', "boom", _WHEN.isoformat(sep=" ")),
    ]
    conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return path


def test_sqlite_dlq_names_a_legacy_file_and_the_import_command(legacy_db: Path) -> None:
    with pytest.raises(missive.DLQError, match=r"0\.8\.1 DLQ.*import-legacy"):
        SQLiteDLQ(legacy_db)
    with pytest.raises(missive.DLQError, match=r"0\.8\.1 DLQ"):
        SQLiteDLQ(legacy_db, read_only=True)
    assert sqlite3.connect(legacy_db).execute("PRAGMA user_version").fetchone() == (0,)


def test_dlq_ls_on_a_legacy_file_is_one_line(legacy_db: Path, tmp_path: Path) -> None:
    result = CLI(tmp_path)("dlq", "ls", "--dlq", str(legacy_db))
    assert result.returncode == 1
    assert_one_line_error(result, "0.8.1 DLQ", "missive dlq import-legacy")


def test_import_legacy_reports_pickles_and_imports_raw_rows(
    legacy_db: Path, tmp_path: Path
) -> None:
    new = tmp_path / "new.db"
    result = CLI(tmp_path)("dlq", "import-legacy", "--from", str(legacy_db), "--dlq", str(new))
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [f"hex:{_PICKLED_ID.hex()}  pickled, not imported"]
    assert "imported 1 dead letters" in result.stderr
    dlq = SQLiteDLQ(new)
    try:
        assert list(dlq) == [_RAW_ID]
        message, reason = dlq[_RAW_ID]
        assert (message.raw_data, str(reason)) == (b'{"order": 8}', "boom")
        (record,) = dlq.records()
        assert record.first_dead_lettered_at == _WHEN
    finally:
        dlq.close()


def test_import_legacy_of_a_file_that_is_not_0_8_1_is_one_line(tmp_path: Path) -> None:
    SQLiteDLQ(tmp_path / "current.db").close()
    result = CLI(tmp_path)("dlq", "import-legacy", "--from", "current.db", "--dlq", "new.db")
    assert_one_line_error(result, "not", "0.8.1")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickle_of_any_protocol_is_recognised(protocol: int) -> None:
    assert looks_pickled(pickle.dumps(["a", 1, {"b": 2.5}], protocol=protocol))


@pytest.mark.parametrize("data", [b"", b'{"a": 1}', b"hello.", b"\x80", bytes(range(256))])
def test_bytes_that_are_no_pickle_are_not_taken_for_one(data: bytes) -> None:
    assert not looks_pickled(data)


# RabbitMQ: declare=True


@pytest.fixture
def queue_name() -> Iterator[str]:
    require("rabbitmq")
    import pika

    name = f"missive-test-declare-{uuid.uuid4().hex[:12]}"
    yield name
    connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/"))
    connection.channel().queue_delete(name)
    connection.close()


def _processor(seen: list[bytes]) -> missive.Processor[missive.RawMessage]:
    processor: missive.Processor[missive.RawMessage] = missive.Processor()

    @processor.handle_for(lambda m: True)
    def handle(
        message: missive.RawMessage, ctx: missive.HandlingContext[missive.RawMessage]
    ) -> None:
        seen.append(message.raw_data)
        ctx.ack()

    return processor


def test_declare_true_declares_a_durable_queue_and_consumes_it(queue_name: str) -> None:
    import pika
    import pika.exceptions

    from missive.adapters.rabbitmq import RabbitMQAdapter

    seen: list[bytes] = []
    adapter = RabbitMQAdapter(missive.RawMessage, _processor(seen), queue_name, declare=True)
    runner = threading.Thread(target=adapter.run)
    runner.start()
    try:
        connection = pika.BlockingConnection(pika.URLParameters(adapter.url))
        channel = connection.channel()
        for _ in range(100):  # the adapter declares it as it connects
            try:
                channel.queue_declare(queue_name, passive=True)
                break
            except pika.exceptions.ChannelClosedByBroker:
                channel = connection.channel()
                threading.Event().wait(0.05)
        channel.basic_publish("", queue_name, b"hello")
        for _ in range(200):
            if seen:
                break
            threading.Event().wait(0.05)
        assert seen == [b"hello"]
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_declare(queue_name, durable=False)  # differs from the queue's
        assert refused.value.reply_code == 406
        connection.close()
    finally:
        adapter.stop()
        runner.join(30)


def test_without_declare_a_missing_queue_is_still_an_error(queue_name: str) -> None:
    import pika.exceptions

    from missive.adapters.rabbitmq import RabbitMQAdapter

    adapter = RabbitMQAdapter(missive.RawMessage, _processor([]), queue_name)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as missing:
        adapter.run()
    assert missing.value.reply_code == 404


def test_declare_arguments_need_declare() -> None:
    pytest.importorskip("pika")
    from missive.adapters.rabbitmq import RabbitMQAdapter

    with pytest.raises(ValueError, match="declare=True"):
        RabbitMQAdapter(
            missive.RawMessage, missive.Processor(), "q", declare_arguments={"x-max-length": 1}
        )
