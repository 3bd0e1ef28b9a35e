"""Archiving, expiry, replacing and the audit table, on SQLiteDLQ and PostgresDLQ,
and the upgrade of a DLQ written by schema version 1."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import missive
from missive.dlq.audit import AuditEntry
from missive.dlq.base import DeadLetterStore
from missive.dlq.sqlite import SQLiteDLQ
from missive.testing.conformance.dlq_suite import failure
from tests.services import require

DSN = os.environ.get("MISSIVE_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")

# What schema version 1 created, as it was: the dead letters without the archive's
# columns, and no audit table.
_V1_COLUMNS = """
    message_id {bytes} NOT NULL UNIQUE, raw_data {bytes} NOT NULL,
    message_class {text} NOT NULL, attributes {text} NOT NULL, reason {text} NOT NULL,
    summary {text} NOT NULL, handler {text}, exc_type {text}, traceback {text},
    first_dead_lettered_at {time} NOT NULL, dead_lettered_at {time} NOT NULL,
    times {integer} NOT NULL DEFAULT 1
"""
_V1_SQLITE = f"CREATE TABLE missive_dead_letters (seq INTEGER PRIMARY KEY, {_V1_COLUMNS})".format(
    bytes="BLOB", text="TEXT", time="TEXT", integer="INTEGER"
)
_V1_POSTGRES = (
    "CREATE TABLE {table} (seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
    + _V1_COLUMNS.format(bytes="bytea", text="text", time="timestamptz", integer="integer")
    + ")"
)


def _message(key: str, data: bytes = b'{"n": 1}') -> missive.RawMessage:
    return missive.RawMessage(data, message_id=key.encode())


@pytest.fixture
def pg_table() -> Iterator[str]:
    """A PostgreSQL table name of this test's own; it and its companions dropped after."""
    require("postgres")
    import psycopg
    from psycopg import sql

    name = f"missive_test_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        for suffix in ("", "_attempts", "_audit"):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name + suffix)))


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., DeadLetterStore]]:
    """Opens stores of one kind, on this test's own file or table; closes them after."""
    opened: list[DeadLetterStore] = []
    if request.param == "sqlite":

        def open_one(**options: Any) -> DeadLetterStore:
            store: DeadLetterStore = SQLiteDLQ(tmp_path / "dlq.db", **options)
            opened.append(store)
            return store

    else:
        table = request.getfixturevalue("pg_table")
        from missive.dlq.postgres import PostgresDLQ

        def open_one(**options: Any) -> DeadLetterStore:
            store: DeadLetterStore = PostgresDLQ(DSN, table=table, **options)
            opened.append(store)
            return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[..., DeadLetterStore]) -> DeadLetterStore:
    """A store holding dead letters a, b and c, oldest first."""
    dlq = open_store()
    for key in "abc":
        dlq[key.encode()] = (_message(key), failure())
    return dlq


def _ids(store: DeadLetterStore, **filters: Any) -> list[bytes]:
    return [record.message_id for record in store.records(**filters)]


def test_archived_letters_leave_records_but_stay_readable(store: DeadLetterStore) -> None:
    until = datetime.now(UTC) + timedelta(days=30)

    archived = store.archive([b"b", b"missing"], until)

    assert archived == 1
    assert _ids(store) == [b"a", b"c"]
    assert _ids(store, archived=True) == [b"b"]
    assert _ids(store, archived=None) == [b"a", b"b", b"c"]
    record = store.record(b"b")
    assert record.archived_at is not None
    assert record.expires_at is not None
    assert abs(record.expires_at - until) < timedelta(seconds=1)
    assert len(store) == 3


def test_unarchive_shows_them_again(store: DeadLetterStore) -> None:
    store.archive([b"a", b"b"], datetime.now(UTC) + timedelta(days=1))

    assert store.unarchive([b"a", b"c"]) == 1

    assert _ids(store) == [b"a", b"c"]
    assert store.record(b"a").archived_at is None


def test_dead_lettered_again_an_archived_letter_is_shown_again(store: DeadLetterStore) -> None:
    store.archive([b"a"], datetime.now(UTC) + timedelta(days=1))

    store[b"a"] = (_message("a"), failure("failed again"))

    assert _ids(store) == [b"a", b"b", b"c"]


def test_expire_deletes_only_archived_letters_past_their_expiry(store: DeadLetterStore) -> None:
    now = datetime.now(UTC)
    store.archive([b"a"], now - timedelta(seconds=1))
    store.archive([b"b"], now + timedelta(days=1))

    assert store.expire(now) == 1

    assert list(store) == [b"b", b"c"]
    assert store.expire(now) == 0


def test_a_naive_expiry_is_refused(store: DeadLetterStore) -> None:
    with pytest.raises(ValueError, match="aware"):
        store.archive([b"a"], datetime(2030, 1, 1))


def test_replace_stores_other_bytes_under_the_same_id(store: DeadLetterStore) -> None:
    store.replace(b"b", (_message("b", b'{"n": 2}'), failure("still bad")))

    record = store.record(b"b")
    assert record.message.raw_data == b'{"n": 2}'
    assert "still bad" in record.reason
    assert list(store) == [b"a", b"c", b"b"]


def test_audit_entries_read_back_newest_first(store: DeadLetterStore) -> None:
    first = AuditEntry("archive", ("a",), 1, None, "alice", "missive dlq archive a", "1 archived")
    second = AuditEntry(
        "edit", ("b",), 1, "--group 0123456789", "bob", "missive dlq edit b", "handled",
        original=b"\x00old",
    )  # fmt: skip

    store.audit(first)
    store.audit(second)

    history = store.history()
    assert [entry.operation for entry in history] == ["edit", "archive"]
    assert history[0].original == b"\x00old"
    assert history[0].selection == "--group 0123456789"
    assert history[1].user == "alice"
    assert history[1].ids == ("a",)
    assert abs(history[1].at - first.at) < timedelta(seconds=1)
    assert [entry.operation for entry in store.history(limit=1)] == ["edit"]


def test_an_audit_entry_keeps_at_most_100_ids() -> None:
    entry = AuditEntry("rm", tuple(map(str, range(150))), 150, None, "u", "c", "ok")

    assert len(entry.ids) == 100
    assert entry.count == 150


# --- upgrading a DLQ of schema version 1 -------------------------------------------------


def _sqlite_v1(path: Path) -> None:
    conn = sqlite3.connect(path)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    conn.execute(_V1_SQLITE)
    conn.execute(
        "INSERT INTO missive_dead_letters (message_id, raw_data, message_class, attributes, "
        "reason, summary, first_dead_lettered_at, dead_lettered_at) "
        "VALUES (?, ?, 'missive.message.RawMessage', '{}', 'old', 'old', ?, ?)",
        (b"old", b"payload", now, now),
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_an_sqlite_dlq_of_version_1_is_upgraded_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _sqlite_v1(path)

    with SQLiteDLQ(path, create=False) as dlq:
        dlq.archive([b"old"], datetime.now(UTC) + timedelta(days=1))
        dlq.audit(AuditEntry("archive", ("old",), 1, None, "u", "c", "1 archived"))
        assert _ids(dlq, archived=True) == [b"old"]

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


def test_an_sqlite_dlq_of_version_1_reads_read_only_without_change(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    _sqlite_v1(path)

    with SQLiteDLQ(path, read_only=True) as dlq:
        assert _ids(dlq) == [b"old"]
        assert _ids(dlq, archived=True) == []
        assert dlq.history() == []

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()


def test_a_postgres_dlq_of_version_1_is_upgraded_when_opened(pg_table: str) -> None:
    import psycopg
    from psycopg import sql

    from missive.dlq.postgres import PostgresDLQ

    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL(_V1_POSTGRES).format(table=sql.Identifier(pg_table)))
        conn.execute(
            sql.SQL("COMMENT ON TABLE {} IS 'missive dead letters, schema version 1'").format(
                sql.Identifier(pg_table)
            )
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (message_id, raw_data, message_class, attributes, reason, "
                "summary, first_dead_lettered_at, dead_lettered_at) "
                "VALUES ('old', 'payload', 'missive.message.RawMessage', '{{}}', 'old', "
                "'old', now(), now())"
            ).format(sql.Identifier(pg_table))
        )

    with pytest.raises(missive.DLQError, match="older than this Missive"):
        PostgresDLQ(DSN, table=pg_table, read_only=True)
    with PostgresDLQ(DSN, table=pg_table, create=False) as dlq:
        assert _ids(dlq) == [b"old"]
        dlq.archive([b"old"], datetime.now(UTC) + timedelta(days=1))
        dlq.audit(AuditEntry("archive", ("old",), 1, None, "u", "c", "1 archived"))
        assert _ids(dlq, archived=True) == [b"old"]
    with PostgresDLQ(DSN, table=pg_table, read_only=True) as dlq:
        assert [entry.operation for entry in dlq.history()] == ["archive"]
