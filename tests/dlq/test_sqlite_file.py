"""SQLiteDLQ and its file: removed, truncated, overwritten or damaged under a running store."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import missive
from missive.dlq.sqlite import SQLiteDLQ
from missive.testing.conformance.dlq_suite import put


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "dlq.db"


@pytest.fixture
def dlq(path: Path) -> Iterator[SQLiteDLQ]:
    """A store holding 300 dead letters, as a worker's store after a while."""
    store = SQLiteDLQ(path)
    for number in range(300):
        put(store, missive.RawMessage(b"x" * 200, b"id-%d" % number))
    yield store
    store.close()


def _checkpoint(dlq: SQLiteDLQ) -> None:
    # What SQLite does by itself after about 1000 pages: the rows move into the file.
    dlq._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def _overwrite_with_another_database(path: Path) -> None:
    other = path.with_name("other.db")
    with contextlib.closing(sqlite3.connect(other)) as conn, conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    with open(path, "r+b") as file:  # in place: same inode
        file.write(other.read_bytes())
        file.truncate()


def _write_new(dlq: SQLiteDLQ) -> None:
    put(dlq, missive.RawMessage(b"new", b"id-new"))


@pytest.mark.parametrize("checkpointed", [False, True], ids=["in-wal", "checkpointed"])
def test_a_write_after_the_file_was_removed_fails_saying_so(
    dlq: SQLiteDLQ, path: Path, checkpointed: bool
) -> None:
    if checkpointed:
        _checkpoint(dlq)
    _remove(path)

    with pytest.raises(missive.DLQError, match="the file was removed since the DLQ opened it"):
        _write_new(dlq)


def test_a_write_after_the_file_was_replaced_by_another_fails_saying_so(
    dlq: SQLiteDLQ, path: Path
) -> None:
    _checkpoint(dlq)
    shutil.copy(path, path.with_name("copy.db"))
    os.replace(path.with_name("copy.db"), path)

    with pytest.raises(missive.DLQError, match="replaced by another file"):
        _write_new(dlq)


@pytest.mark.parametrize("checkpointed", [False, True], ids=["in-wal", "checkpointed"])
def test_a_write_after_the_file_was_truncated_to_nothing_fails_saying_so(
    dlq: SQLiteDLQ, path: Path, checkpointed: bool
) -> None:
    if checkpointed:
        _checkpoint(dlq)
    os.truncate(path, 0)

    with pytest.raises(missive.DLQError, match="truncated or overwritten"):
        _write_new(dlq)


def test_a_write_after_the_file_was_overwritten_by_another_database_fails_saying_so(
    dlq: SQLiteDLQ, path: Path
) -> None:
    _checkpoint(dlq)
    _overwrite_with_another_database(path)

    with pytest.raises(missive.DLQError, match="overwritten by another database"):
        _write_new(dlq)


def test_a_failed_check_leaves_the_message_unacked_through_the_processor(
    dlq: SQLiteDLQ, path: Path
) -> None:
    processor = missive.Processor[missive.RawMessage]()
    processor.set_dlq(dlq)
    _remove(path)

    with processor.test_client() as client, pytest.raises(missive.DLQWriteError, match="removed"):
        client.send(missive.RawMessage(b"payload", b"id-lost"))

    assert client.dead_lettered == []


def test_counting_an_attempt_after_the_file_was_removed_fails(dlq: SQLiteDLQ, path: Path) -> None:
    _remove(path)

    with pytest.raises(missive.DLQError, match="removed"):
        dlq.record_attempt(b"id-1")


def test_writes_to_a_file_left_alone_still_succeed(dlq: SQLiteDLQ) -> None:
    _checkpoint(dlq)

    _write_new(dlq)

    assert len(dlq) == 301


def _damage(path: Path) -> None:
    """Overwrite the pages after the first two with garbage, keeping the header."""
    with open(path, "r+b") as file:
        file.seek(2 * 4096)
        file.write(b"\xa5" * (os.path.getsize(path) - 2 * 4096))


def test_a_damaged_file_is_refused_when_opening(dlq: SQLiteDLQ, path: Path) -> None:
    dlq.close()
    _damage(path)

    with pytest.raises(missive.DLQError, match=r"malformed.*recover"):
        SQLiteDLQ(path)


def test_a_damaged_file_is_refused_when_opening_read_only(dlq: SQLiteDLQ, path: Path) -> None:
    dlq.close()
    _damage(path)

    with pytest.raises(missive.DLQError, match="malformed"):
        SQLiteDLQ(path, read_only=True)


def test_a_file_found_damaged_by_a_write_refuses_every_later_write(
    dlq: SQLiteDLQ, path: Path
) -> None:
    _checkpoint(dlq)
    _damage(path)
    with contextlib.closing(sqlite3.connect(path)) as other:
        # Another process's commit makes the store read its pages from the file again.
        other.execute("PRAGMA user_version = 1")
    with pytest.raises(missive.DLQError, match="malformed"):
        put(dlq, missive.RawMessage(b"x" * 200, b"id-150"))

    with pytest.raises(missive.DLQError, match="damaged"):
        put(dlq, missive.RawMessage(b"x", b"id-later"))

