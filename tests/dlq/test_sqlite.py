"""SQLiteDLQ: the DLQ conformance suite, then what is particular to SQLite."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import re
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

import missive
import missive.dlq._sql_store as sql_store_module
from missive.dlq.sqlite import SCHEMA_VERSION, TABLE, SQLiteDLQ
from missive.testing.conformance.dlq_suite import Features, StoreSuite, failure, put
from tests.dlq import _writer


@pytest.fixture
def open_sqlite(tmp_path: Path) -> Iterator[Callable[..., SQLiteDLQ]]:
    """Opens SQLiteDLQs on this test's own file (or on ``path``); closes them all after."""
    opened: list[SQLiteDLQ] = []

    def open_dlq(path: str | Path = tmp_path / "dlq.db", **options: object) -> SQLiteDLQ:
        dlq = SQLiteDLQ(path, **options)  # type: ignore[arg-type]
        opened.append(dlq)
        return dlq

    yield open_dlq
    for dlq in opened:
        dlq.close()


class TestSQLiteDLQ(StoreSuite):
    features = Features(persistent=True)

    @pytest.fixture
    def open_dlq(self, open_sqlite: Callable[..., SQLiteDLQ]) -> Callable[[], SQLiteDLQ]:
        return open_sqlite


def test_a_directory_is_refused_when_opening(tmp_path: Path) -> None:
    with pytest.raises(missive.DLQError, match="is a directory") as caught:
        SQLiteDLQ(tmp_path)

    assert str(tmp_path) in str(caught.value)


def test_a_missing_directory_is_refused_when_opening(tmp_path: Path) -> None:
    with pytest.raises(missive.DLQError, match=r"does not exist; create it"):
        SQLiteDLQ(tmp_path / "missing" / "dlq.db")


def test_an_unwritable_location_is_refused_when_opening() -> None:
    with pytest.raises(missive.DLQError, match=r"'/proc/missive-dlq.db'.*cannot be opened"):
        SQLiteDLQ("/proc/missive-dlq.db")


def test_a_file_that_is_not_a_database_is_refused_when_opening(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database, just some notes\n" * 100)

    with pytest.raises(missive.DLQError, match="not an SQLite database"):
        SQLiteDLQ(path)


def test_a_database_of_a_newer_schema_is_refused_when_opening(tmp_path: Path) -> None:
    path = tmp_path / "dlq.db"
    SQLiteDLQ(path).close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(missive.DLQError, match="newer"):
        SQLiteDLQ(path)


def test_a_database_with_another_user_version_and_no_dlq_table_is_not_a_dlq(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 7")

    with pytest.raises(missive.DLQError, match=r"not a Missive DLQ.*user_version 7"):
        SQLiteDLQ(path)


def _application_database(path: Path) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ann')")
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_database_of_another_application_is_refused_and_left_unchanged(
    tmp_path: Path,
) -> None:
    path = _application_database(tmp_path / "app.db")
    before = _digest(path)

    with pytest.raises(missive.DLQError, match=r"not a Missive DLQ.*allow_other_tables"):
        SQLiteDLQ(path)

    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]


def test_a_database_of_another_application_gets_its_table_added_when_allowed(
    tmp_path: Path, open_sqlite: Callable[..., SQLiteDLQ]
) -> None:
    path = _application_database(tmp_path / "app.db")

    put(open_sqlite(path, allow_other_tables=True), missive.RawMessage(b"x", b"id-1"))

    assert _query(path, "SELECT name FROM users") == [("ann",)]


def test_a_message_class_that_is_not_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="Message subclasses"):
        SQLiteDLQ(tmp_path / "dlq.db", message_classes=[dict])  # type: ignore[list-item]


def test_the_database_is_in_wal_mode(tmp_path: Path, open_sqlite: Callable[..., SQLiteDLQ]) -> None:
    open_sqlite()

    assert _query(tmp_path / "dlq.db", "PRAGMA journal_mode") == [("wal",)]


def test_writes_are_synced_in_full(open_sqlite: Callable[..., SQLiteDLQ]) -> None:
    dlq = open_sqlite()

    assert dlq._connection.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_the_schema_version_is_stored(
    tmp_path: Path, open_sqlite: Callable[..., SQLiteDLQ]
) -> None:
    open_sqlite()

    assert _query(tmp_path / "dlq.db", "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_a_dead_letter_is_one_row_of_the_table(
    tmp_path: Path, open_sqlite: Callable[..., SQLiteDLQ]
) -> None:
    reason = failure()

    put(open_sqlite(), missive.JSONMessage(b"{}", b"id-1"), reason)

    sql = f"SELECT message_id, raw_data, message_class, reason, handler, exc_type FROM {TABLE}"
    assert _query(tmp_path / "dlq.db", sql) == [
        (b"id-1", b"{}", "missive.message.JSONMessage", str(reason), "orders", "ValueError")
    ]


def test_times_are_stored_as_iso_8601_utc_text(
    tmp_path: Path, open_sqlite: Callable[..., SQLiteDLQ]
) -> None:
    put(open_sqlite(), missive.RawMessage(b"x", b"id-1"))

    [(first, last)] = _query(
        tmp_path / "dlq.db", f"SELECT first_dead_lettered_at, dead_lettered_at FROM {TABLE}"
    )

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", last)
    assert first == last


def test_bytes_attributes_are_stored_as_tagged_base64_json(
    tmp_path: Path, open_sqlite: Callable[..., SQLiteDLQ]
) -> None:
    put(open_sqlite(), missive.RawMessage(b"x", b"id-1", {"key": b"\x00\xff", "n": 1}))

    [(text,)] = _query(tmp_path / "dlq.db", f"SELECT attributes FROM {TABLE}")

    assert json.loads(text) == {"key": {"__missive_bytes_b64__": "AP8="}, "n": 1}


def test_attribute_values_json_cannot_hold_read_back_as_str(
    open_sqlite: Callable[..., SQLiteDLQ],
) -> None:
    moment = datetime(2026, 1, 2, tzinfo=UTC)
    dlq = open_sqlite()

    put(dlq, missive.RawMessage(b"x", b"id-1", {"at": moment, "pair": (1, 2)}))

    assert dict(dlq[b"id-1"][0].attributes) == {"at": str(moment), "pair": [1, 2]}


def test_attribute_keys_read_back_as_json_spells_them(
    open_sqlite: Callable[..., SQLiteDLQ],
) -> None:
    # Keys JSON takes are spelt as JSON spells them; any other key as its str, nested
    # or not, and a mapping of either kind is read back alike.
    dlq = open_sqlite()
    plain = {"d": {3: True, True: 1, None: 2, 1.5: "f"}}
    odd = {"d": MappingProxyType({(1, 2): "pair", b"k": 2, None: 3})}

    put(dlq, missive.RawMessage(b"x", b"id-1", plain))
    put(dlq, missive.RawMessage(b"y", b"id-2", odd))

    assert dict(dlq[b"id-1"][0].attributes) == {"d": {"3": True, "true": 1, "null": 2, "1.5": "f"}}
    assert dict(dlq[b"id-2"][0].attributes) == {"d": {"(1, 2)": "pair", "b'k'": 2, "null": 3}}


def test_a_stored_class_name_is_never_imported(
    tmp_path: Path, open_sqlite: Callable[..., SQLiteDLQ], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    (tmp_path / "planted_module.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    dlq = open_sqlite()
    put(dlq, missive.RawMessage(b"x", b"id-1"))
    with contextlib.closing(sqlite3.connect(tmp_path / "dlq.db")) as conn, conn:
        conn.execute(f"UPDATE {TABLE} SET message_class = 'planted_module.Evil'")

    message = dlq[b"id-1"][0]

    assert type(message) is missive.RawMessage
    assert not marker.exists()
    assert "planted_module" not in sys.modules


def test_an_unknown_class_is_logged_at_debug(
    open_sqlite: Callable[..., SQLiteDLQ], caplog: pytest.LogCaptureFixture
) -> None:
    dlq = open_sqlite()
    put(dlq, _renamed_class()(b"x", b"id-1"))
    caplog.set_level(logging.DEBUG, logger="missive.dlq.sqlite")

    dlq[b"id-1"]

    [record] = [r for r in caplog.records if "not imported" in r.getMessage()]
    assert (record.name, record.levelno) == ("missive.dlq.sqlite", logging.DEBUG)


def test_message_classes_rebuild_classes_no_registry_knows(
    open_sqlite: Callable[..., SQLiteDLQ],
) -> None:
    renamed = _renamed_class()
    dlq = open_sqlite(message_classes=[renamed])

    put(dlq, renamed(b"x", b"id-1"))

    assert type(dlq[b"id-1"][0]) is renamed


def test_a_class_whose_constructor_fails_reads_back_as_raw(
    open_sqlite: Callable[..., SQLiteDLQ],
) -> None:
    class Fussy(missive.Message):
        __slots__ = ()
        refuse = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if Fussy.refuse:
                raise RuntimeError("refused")
            super().__init__(*args, **kwargs)

    dlq = open_sqlite(message_classes=[Fussy])
    put(dlq, Fussy(b"x", b"id-1"))
    Fussy.refuse = True

    assert type(dlq[b"id-1"][0]) is missive.RawMessage


def test_records_and_iteration_read_past_one_page(
    open_sqlite: Callable[..., SQLiteDLQ], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_store_module, "PAGE", 2)
    dlq = open_sqlite()
    ids = [b"id-%d" % number for number in range(5)]
    for message_id in ids:
        put(dlq, missive.RawMessage(b"x", message_id))

    assert list(dlq) == ids
    assert [record.message_id for record in dlq.records()] == ids
    assert [record.message_id for record in dlq.records(limit=3)] == ids[:3]


def test_a_write_waits_for_another_writer_to_finish(
    tmp_path: Path, open_sqlite: Callable[..., SQLiteDLQ]
) -> None:
    dlq = open_sqlite()
    other = sqlite3.connect(tmp_path / "dlq.db", isolation_level=None, check_same_thread=False)
    with contextlib.closing(other):
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(0.2, other.execute, ["COMMIT"]).start()

        put(dlq, missive.RawMessage(b"x", b"id-1"))

    assert b"id-1" in dlq


def test_a_write_blocked_past_the_timeout_raises_dlq_error(
    tmp_path: Path, open_sqlite: Callable[..., SQLiteDLQ]
) -> None:
    dlq = open_sqlite(timeout=0.1)
    with contextlib.closing(sqlite3.connect(tmp_path / "dlq.db", isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")

        with pytest.raises(missive.DLQError, match="locked"):
            put(dlq, missive.RawMessage(b"x", b"id-1"))


def test_a_processor_turns_a_failed_write_into_dlq_write_error(
    tmp_path: Path, open_sqlite: Callable[..., SQLiteDLQ]
) -> None:
    processor = missive.Processor()
    processor.set_dlq(open_sqlite(timeout=0.1))
    message = missive.RawMessage(b"x")
    with contextlib.closing(sqlite3.connect(tmp_path / "dlq.db", isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")

        with pytest.raises(missive.DLQWriteError), processor.test_client() as client:
            client.send(message)


def test_several_processes_write_one_new_file_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "dlq.db")
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [
        context.Process(target=_writer.write, args=(path, worker, 50, start)) for worker in range(4)
    ]
    for worker in workers:
        worker.start()

    start.set()
    for worker in workers:
        worker.join(60)

    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert _query(path, f"SELECT count(*), count(DISTINCT message_id) FROM {TABLE}") == [(200, 200)]


def _open_when(path: str, start: Any, results: Any) -> None:
    start.wait(10)
    try:
        SQLiteDLQ(path).close()
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")
    else:
        results.put("opened")


def test_processes_opening_one_new_file_at_the_same_moment_all_open_it(
    tmp_path: Path,
) -> None:
    # Given processes waiting at one start line, ten times over, each on a new file
    context = multiprocessing.get_context("fork")
    for trial in range(10):
        path = str(tmp_path / f"dlq-{trial}.db")
        start, results = context.Event(), context.Queue()
        openers = [
            context.Process(target=_open_when, args=(path, start, results)) for _ in range(4)
        ]
        for opener in openers:
            opener.start()
        # When they open it at once (one switches it to WAL while others read it)
        start.set()
        outcomes = [results.get(timeout=60) for _ in openers]
        for opener in openers:
            opener.join(30)
        # Then every one opened it: a busy file is waited for, not an error
        assert outcomes == ["opened"] * 4, outcomes


def test_a_forked_child_writes_through_its_own_connection(
    open_sqlite: Callable[..., SQLiteDLQ],
) -> None:
    dlq = open_sqlite()
    put(dlq, missive.RawMessage(b"x", b"parent-1"))

    child = multiprocessing.get_context("fork").Process(
        target=put, args=(dlq, missive.RawMessage(b"x", b"child-1"))
    )
    child.start()
    child.join(30)
    put(dlq, missive.RawMessage(b"x", b"parent-2"))

    assert child.exitcode == 0
    assert list(dlq) == [b"parent-1", b"child-1", b"parent-2"]


def test_a_forked_child_can_write_while_a_parent_thread_holds_the_lock(
    open_sqlite: Callable[..., SQLiteDLQ],
) -> None:
    dlq = open_sqlite()
    child = multiprocessing.get_context("fork").Process(
        target=put, args=(dlq, missive.RawMessage(b"x", b"child-1"))
    )

    with dlq._lock:  # as a thread of the parent writing at the moment of fork()
        child.start()
        child.join(10)
    child.kill()

    assert child.exitcode == 0
    assert list(dlq) == [b"child-1"]


def _renamed_class() -> type[missive.Message]:
    class Renamed(missive.Message):
        __slots__ = ()

    Renamed.__qualname__ = "NotInAnyRegistry"
    return Renamed


def _query(path: str | Path, sql: str) -> list[Any]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def test_a_read_only_store_reads_and_leaves_the_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "dlq.db"
    with SQLiteDLQ(path) as dlq:
        put(dlq, missive.RawMessage(b"x", b"id-1"))
    before = _digest(path)

    with SQLiteDLQ(path, read_only=True) as dlq:
        ids = list(dlq)
        with pytest.raises(missive.DLQError, match="opened read-only"):
            put(dlq, missive.RawMessage(b"y", b"id-2"))

    assert ids == [b"id-1"]
    assert _digest(path) == before


def test_a_read_only_store_of_a_missing_file_is_an_error_and_creates_nothing(
    tmp_path: Path,
) -> None:
    with pytest.raises(missive.DLQError, match="no such file"):
        SQLiteDLQ(tmp_path / "dlq.db", read_only=True)

    assert list(tmp_path.iterdir()) == []
