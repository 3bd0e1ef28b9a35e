"""PostgresDLQ: the DLQ conformance suite on the real server, then what is particular to it.

Every test uses its own table (a random suffix), dropped when it ends. The server is
``MISSIVE_TEST_POSTGRES`` (default ``postgresql://root@127.0.0.1:5432/test``); when
it is down the tests skip, or fail under ``CI=true``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

import missive
import missive.dlq._sql_store as sql_store_module
from missive.dlq import open_dlq
from missive.dlq.postgres import SCHEMA_VERSION, PostgresDLQ
from missive.testing.conformance.dlq_suite import Features, StoreSuite, failure, put
from tests.services import require

DSN = os.environ.get("MISSIVE_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")


def _with(dsn: str, **params: str) -> str:
    """``dsn`` with query parameters added."""
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return f"{dsn}{'&' if '?' in dsn else '?'}{query}"


@pytest.fixture
def admin() -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection of the test's own, to look at and change the server."""
    require("postgres")
    with psycopg.connect(DSN, autocommit=True) as conn:
        yield conn


@pytest.fixture
def table(admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A table name of this test's own, dropped when the test ends."""
    name = f"missive_test_{uuid.uuid4().hex[:12]}"
    yield name
    admin.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def open_pg(table: str) -> Iterator[Callable[..., PostgresDLQ]]:
    """Opens PostgresDLQs on this test's own table; closes them all after."""
    opened: list[PostgresDLQ] = []

    def open_dlq(dsn: str = DSN, **options: Any) -> PostgresDLQ:
        options.setdefault("table", table)
        dlq = PostgresDLQ(dsn, **options)
        opened.append(dlq)
        return dlq

    yield open_dlq
    for dlq in opened:
        dlq.close()


class TestPostgresDLQ(StoreSuite):
    features = Features(persistent=True)

    @pytest.fixture
    def open_dlq(self, open_pg: Callable[..., PostgresDLQ]) -> Callable[[], PostgresDLQ]:
        return open_pg


def _rows(admin: psycopg.Connection[Any], query: str, table: str, *params: Any) -> list[Any]:
    composed = sql.SQL(query).format(table=sql.Identifier(table))
    return admin.execute(composed, params).fetchall()


# --- opening ---------------------------------------------------------------------------------


def test_open_dlq_gives_a_postgres_dlq_for_a_postgresql_url(
    admin: psycopg.Connection[Any], table: str
) -> None:
    # Given a postgresql:// URL
    # When open_dlq opens it
    with open_dlq(DSN, table=table) as dlq:
        # Then it is a PostgresDLQ on that table
        assert isinstance(dlq, PostgresDLQ)
        assert dlq.table.name == table


def test_the_table_is_created_with_its_schema_version(
    admin: psycopg.Connection[Any], table: str, open_pg: Callable[..., PostgresDLQ]
) -> None:
    # When a store is opened on a table that does not exist
    open_pg()

    # Then the table exists, its comment giving the schema version
    [(comment,)] = _rows(admin, "SELECT obj_description(%s::regclass, 'pg_class')", table, table)
    assert comment == f"missive dead letters, schema version {SCHEMA_VERSION}"


def test_a_dead_letter_is_one_row_with_bytea_and_timestamptz_columns(
    admin: psycopg.Connection[Any], table: str, open_pg: Callable[..., PostgresDLQ]
) -> None:
    reason = failure()

    # When a dead letter is written
    put(open_pg(), missive.JSONMessage(b"{}", b"id-1", {"k": b"\x00"}), reason)

    # Then it is one row, ids and bytes as bytea, times as timestamptz
    assert _rows(
        admin,
        "SELECT message_id, raw_data, message_class, reason, handler, exc_type, attributes, "
        "pg_typeof(message_id)::text, pg_typeof(dead_lettered_at)::text FROM {table}",
        table,
    ) == [
        (
            b"id-1",
            b"{}",
            "missive.message.JSONMessage",
            str(reason),
            "orders",
            "ValueError",
            '{"k":{"__missive_bytes_b64__":"AA=="}}',
            "bytea",
            "timestamp with time zone",
        )
    ]


def test_a_schema_given_is_created_and_holds_the_table(
    admin: psycopg.Connection[Any], table: str, open_pg: Callable[..., PostgresDLQ]
) -> None:
    schema = f"missive_test_schema_{uuid.uuid4().hex[:8]}"
    try:
        # When a store is opened in a schema that does not exist
        dlq = open_pg(schema=schema)
        put(dlq, missive.RawMessage(b"x", b"id-1"))

        # Then the schema was created and the dead letter is in its table
        query = sql.SQL("SELECT message_id FROM {}").format(sql.Identifier(schema, table))
        assert admin.execute(query).fetchall() == [(b"id-1",)]
        assert dlq.table.qualified == f"{schema}.{table}"
    finally:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_a_table_of_another_application_is_refused(
    admin: psycopg.Connection[Any], table: str
) -> None:
    # Given a table of that name that is not a DLQ
    admin.execute(sql.SQL("CREATE TABLE {} (name text)").format(sql.Identifier(table)))

    # When a store is opened on it, then it is refused, naming the table
    with pytest.raises(missive.DLQError, match=f"{table} exists but is not a Missive DLQ"):
        PostgresDLQ(DSN, table=table)


def test_a_table_of_a_newer_schema_version_is_refused(
    admin: psycopg.Connection[Any], table: str, open_pg: Callable[..., PostgresDLQ]
) -> None:
    # Given a DLQ table whose comment says a newer version
    open_pg().close()
    comment = f"missive dead letters, schema version {SCHEMA_VERSION + 1}"
    admin.execute(
        sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(table), sql.Literal(comment))
    )

    # When a store is opened on it, then it is refused
    with pytest.raises(missive.DLQError, match="newer"):
        PostgresDLQ(DSN, table=table)


def test_many_stores_creating_one_table_at_once_all_succeed(
    admin: psycopg.Connection[Any], table: str
) -> None:
    # Given eight threads, each about to open a store on the same new table
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_and_close() -> None:
        barrier.wait()
        try:
            PostgresDLQ(DSN, table=table).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_and_close) for _ in range(8)]
    # When they all open it at once
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    # Then none fails and the table exists once
    assert errors == []
    assert _rows(admin, "SELECT count(*) FROM pg_class WHERE relname = %s", table, table) == [(1,)]


def test_a_bad_table_name_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        PostgresDLQ(DSN, table="t" * 60)


# --- errors at construction -----------------------------------------------------------------


def test_a_role_that_cannot_log_in_is_a_clear_error_without_the_password() -> None:
    require("postgres")
    dsn = "postgresql://no_such_role:hunter2-secret@127.0.0.1:5432/test"

    # When a store is opened as a role the server refuses
    with pytest.raises(missive.DLQError) as caught:
        PostgresDLQ(dsn)

    # Then the error names the server and what to do, never the password
    text = str(caught.value)
    assert "postgresql://no_such_role@127.0.0.1:5432/test" in text
    assert "check the user name and password" in text
    assert "hunter2" not in text


@pytest.fixture
def role(admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A login role of this test's own, with no privilege but to connect; dropped after."""
    name = f"missive_test_role_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_a_role_that_may_not_create_the_table_is_a_clear_error(role: str, table: str) -> None:
    # Given a role without CREATE on the schema, and no table yet
    # When it opens a store, then the error says which privilege to grant
    with pytest.raises(missive.DLQError, match=r"permission denied.*grant this role"):
        PostgresDLQ(f"postgresql://{role}@127.0.0.1:5432/test", table=table)


def test_a_role_without_create_uses_a_table_made_by_its_owner(
    admin: psycopg.Connection[Any], role: str, table: str, open_pg: Callable[..., PostgresDLQ]
) -> None:
    # Given the table created by its owner, and a role granted only its rows
    open_pg().close()
    admin.execute(
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
            sql.Identifier(table), sql.Identifier(role)
        )
    )

    # When that role opens a store and writes, then it works
    dlq = open_pg(f"postgresql://{role}@127.0.0.1:5432/test")
    put(dlq, missive.RawMessage(b"x", b"id-1"))

    assert list(dlq) == [b"id-1"]


def test_an_unreachable_server_is_a_clear_error() -> None:
    # When a store is opened on a port where nothing listens
    with pytest.raises(missive.DLQError) as caught:
        PostgresDLQ("postgresql://root:hunter2@127.0.0.1:1/test")

    # Then the error names the server and says to check it runs
    text = str(caught.value)
    assert "127.0.0.1:1" in text
    assert "check that PostgreSQL is running" in text
    assert "hunter2" not in text


def test_a_missing_database_is_a_clear_error() -> None:
    require("postgres")
    name = f"missive_missing_{uuid.uuid4().hex[:8]}"

    with pytest.raises(missive.DLQError, match=f"/{name}.*create the database"):
        PostgresDLQ(f"postgresql://root@127.0.0.1:5432/{name}")


def test_an_invalid_url_is_refused_without_being_echoed() -> None:
    with pytest.raises(missive.DLQError, match="not a valid") as caught:
        PostgresDLQ("postgresql://root:hunter2@127.0.0.1/test?no_such_option=1")

    assert "hunter2" not in str(caught.value)


def test_the_repr_shows_the_server_and_table_but_not_the_password(
    open_pg: Callable[..., PostgresDLQ], table: str
) -> None:
    dlq = open_pg(DSN.replace("://root@", "://root:hunter2@"))

    assert "hunter2" not in repr(dlq)
    assert f"public.{table}" in repr(dlq)


# --- writing and reading --------------------------------------------------------------------


def test_a_nul_character_in_a_reason_is_stored_as_a_replacement(
    open_pg: Callable[..., PostgresDLQ],
) -> None:
    dlq = open_pg()

    # When a reason holds NUL, which PostgreSQL text cannot
    put(dlq, missive.RawMessage(b"\x00", b"id-1"), "bad byte \x00 in name")

    # Then the dead letter is kept, NUL read back as U+FFFD
    assert dlq[b"id-1"][1] == "bad byte \ufffd in name"
    assert dlq[b"id-1"][0].raw_data == b"\x00"


def test_records_and_iteration_read_past_one_page(
    open_pg: Callable[..., PostgresDLQ], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_store_module, "PAGE", 2)
    dlq = open_pg()
    ids = [b"id-%d" % number for number in range(5)]
    for message_id in ids:
        put(dlq, missive.RawMessage(b"x", message_id))

    assert list(dlq) == ids
    assert [record.message_id for record in dlq.records()] == ids
    assert [record.message_id for record in dlq.records(limit=3)] == ids[:3]


def test_a_write_blocked_past_the_timeout_raises_dlq_error(
    admin: psycopg.Connection[Any], table: str, open_pg: Callable[..., PostgresDLQ]
) -> None:
    dlq = open_pg(timeout=0.2)
    # Given another session holding the table locked
    with admin.transaction():
        admin.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(table))
        )

        # When a dead letter is written, then it fails once the timeout passes
        with pytest.raises(missive.DLQError, match="timeout"):
            put(dlq, missive.RawMessage(b"x", b"id-1"))


# --- connections ----------------------------------------------------------------------------


def _terminate(admin: psycopg.Connection[Any], application_name: str) -> int:
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
        (application_name,),
    ).fetchall()
    time.sleep(0.2)  # the backend exits asynchronously
    return len(rows)


def test_a_write_on_a_terminated_connection_fails_and_the_next_reconnects(
    admin: psycopg.Connection[Any], open_pg: Callable[..., PostgresDLQ]
) -> None:
    name = f"missive-test-{uuid.uuid4().hex[:8]}"
    processor = missive.Processor()
    processor.set_dlq(open_pg(_with(DSN, application_name=name)))
    # Given the store's connection ended by the server
    assert _terminate(admin, name) == 1

    with processor.test_client() as client:
        # When a message is dead-lettered, then the write fails and it is not acked
        with pytest.raises(missive.DLQWriteError):
            client.send(missive.RawMessage(b"x", b"id-1"))
        # When the next one is, then the store reconnected and keeps it
        assert client.send(missive.RawMessage(b"x", b"id-2")) is missive.Outcome.DEAD_LETTERED

    assert list(processor.dlq or {}) == [b"id-2"]


def test_the_store_s_connections_carry_its_application_name(
    admin: psycopg.Connection[Any], open_pg: Callable[..., PostgresDLQ]
) -> None:
    name = f"missive-test-{uuid.uuid4().hex[:8]}"

    open_pg(application_name=name)

    assert admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
    ).fetchall() == [(1,)]


def test_the_store_s_own_session_commits_synchronously_even_if_the_url_says_not(
    open_pg: Callable[..., PostgresDLQ],
) -> None:
    # Given a URL whose session would acknowledge commits before they are on disk
    dsn = _with(DSN, options="-c%20synchronous_commit%3Doff")

    # When a store opens it
    dlq = open_pg(dsn)

    # Then its session commits synchronously again
    with dlq._connections.borrow() as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)


def test_a_given_connection_is_used_and_left_open(table: str) -> None:
    with psycopg.connect(DSN) as conn:
        # Given a store on the caller's own (non-autocommit) connection
        with PostgresDLQ(conn, table=table) as dlq:
            put(dlq, missive.RawMessage(b"x", b"id-1"))
        # When the store is closed, then the connection is still open and idle
        assert not conn.closed
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # And the write was committed: another session sees it
        with PostgresDLQ(DSN, table=table) as other:
            assert list(other) == [b"id-1"]


def test_a_given_connection_inside_a_transaction_is_refused(table: str) -> None:
    with psycopg.connect(DSN) as conn, PostgresDLQ(conn, table=table) as dlq:
        conn.execute("SELECT 1")  # the caller leaves a transaction open

        with pytest.raises(missive.DLQError, match="inside a transaction"):
            put(dlq, missive.RawMessage(b"x", b"id-1"))
        conn.rollback()


class _OneConnectionPool:
    """A stand-in for psycopg_pool.ConnectionPool: lends one connection, one user at a time."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.lent = 0
        self._lock = threading.Lock()

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            self.lent += 1
            yield self.conn


def test_a_given_pool_lends_the_connections(table: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        pool = _OneConnectionPool(conn)

        with PostgresDLQ(pool, table=table) as dlq:
            put(dlq, missive.RawMessage(b"x", b"id-1"))
            assert list(dlq) == [b"id-1"]

        assert pool.lent >= 3
        assert dlq.where == "postgresql://root@127.0.0.1:5432/test"
        assert not conn.closed


def test_something_else_than_a_url_connection_or_pool_is_refused() -> None:
    with pytest.raises(TypeError, match="postgresql:// URL"):
        PostgresDLQ(5432)  # type: ignore[arg-type]


# --- several processes ----------------------------------------------------------------------


def write_many(dsn: str, table: str, worker: int, count: int, start: Any) -> None:
    """A writer process: wait for ``start``, then write ``count`` dead letters."""
    with PostgresDLQ(dsn, table=table) as dlq:
        start.wait()
        for number in range(count):
            message = missive.RawMessage(b"x" * 100, b"%d-%d" % (worker, number))
            dlq[message.message_id] = (message, f"worker {worker}")
            if number % 10 == 0:  # some ids are written twice, by two processes
                shared = missive.RawMessage(b"y", b"shared-%d" % number)
                dlq[shared.message_id] = (shared, f"worker {worker}")


def test_four_processes_writing_at_once_keep_every_dead_letter(
    admin: psycopg.Connection[Any], table: str
) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [
        context.Process(target=write_many, args=(DSN, table, worker, 100, start))
        for worker in range(4)
    ]
    # Given four processes, each with its own store on one new table
    for worker in workers:
        worker.start()

    # When they all write at once
    start.set()
    for worker in workers:
        worker.join(120)

    # Then each exits cleanly, every row is there once and shared ids count 4 writes
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert _rows(
        admin, "SELECT count(*) FROM {table} WHERE message_id NOT LIKE 'shared-%%'", table
    ) == [(400,)]
    assert _rows(
        admin,
        "SELECT count(*), min(times), max(times) FROM {table} WHERE message_id LIKE 'shared-%%'",
        table,
    ) == [(10, 4, 4)]


def test_a_forked_child_writes_through_its_own_connection(
    open_pg: Callable[..., PostgresDLQ],
) -> None:
    dlq = open_pg()
    put(dlq, missive.RawMessage(b"x", b"parent-1"))

    # When a forked child writes through the parent's store
    child = multiprocessing.get_context("fork").Process(
        target=put, args=(dlq, missive.RawMessage(b"x", b"child-1"))
    )
    child.start()
    child.join(30)
    # Then the parent's connection still works
    put(dlq, missive.RawMessage(b"x", b"parent-2"))

    assert child.exitcode == 0
    assert list(dlq) == [b"parent-1", b"child-1", b"parent-2"]


def test_importing_without_psycopg_names_the_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "try:\n    import missive.dlq.postgres\n"
        "except ImportError as exc:\n    print(type(exc).__name__, exc)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.startswith("MissingExtraError")
    assert "pip install 'missive[postgres]'" in result.stdout


def test_without_create_a_missing_table_is_an_error_and_is_not_created(
    open_pg: Callable[..., PostgresDLQ], admin: psycopg.Connection[Any], table: str
) -> None:
    # When a tool opens a table that does not exist, asking not to create it
    with pytest.raises(missive.DLQError, match=f"no table .*{table}"):
        open_pg(create=False)

    # Then nothing was created
    found = admin.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    assert found == (None,)


def test_without_create_an_existing_table_opens(open_pg: Callable[..., PostgresDLQ]) -> None:
    open_pg()  # a worker created it
    put(open_pg(), missive.RawMessage(b"x", b"id-1"), "reason")
    assert b"id-1" in open_pg(create=False)


MARKER = "MARKER-5e1f0c"


def _loud(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]


def _carries_marker(text: str) -> bool:
    return MARKER in text or MARKER.encode().hex() in text


def test_a_write_failing_on_a_constraint_logs_no_row_data_at_info_or_above(
    open_pg: Callable[..., PostgresDLQ],
    admin: psycopg.Connection[Any],
    table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a DLQ whose table refuses the row on a constraint
    dlq = open_pg()
    admin.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT payload_small CHECK (length(raw_data) < 8)").format(
            sql.Identifier(table)
        )
    )
    processor: missive.Processor[missive.RawMessage] = missive.Processor()
    processor.set_dlq(dlq)

    @processor.handle_for(lambda message: True)
    def explode(message: missive.RawMessage, ctx: missive.HandlingContext[Any]) -> None:
        raise ValueError(f"cannot handle {MARKER}")

    message = missive.RawMessage(f"payload {MARKER}".encode(), b"id-1", {"api_key": MARKER})
    caplog.set_level(logging.DEBUG)

    # When a message carrying the marker (payload, attributes, reason) is dead-lettered
    with processor.test_client() as client, pytest.raises(missive.DLQWriteError) as caught:
        client.send(message)
    logging.getLogger("missive.adapters").error("%s", caught.value)  # as an adapter logs it
    logging.getLogger("missive.cli").error("failed", exc_info=caught.value)

    # Then the error says what failed, and no record at INFO or above holds the marker
    assert "violates check constraint" in str(caught.value)
    assert "payload_small" in str(caught.value)
    assert _loud(caplog)
    assert not [text for text in _loud(caplog) if _carries_marker(text)]
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and r.exc_text
                and _carries_marker(r.exc_text)]  # fmt: skip
    # and the driver's full text is at DEBUG only
    assert any("Failing row contains" in r.getMessage() for r in caplog.records
               if r.levelno == logging.DEBUG)  # fmt: skip


def test_a_read_only_store_refuses_to_write(open_pg: Callable[..., PostgresDLQ]) -> None:
    open_pg().close()
    dlq = open_pg(read_only=True)

    with pytest.raises(missive.DLQError, match="opened read-only"):
        put(dlq, missive.RawMessage(b"x", b"id-1"))


def test_a_read_only_store_does_not_create_a_missing_table(
    open_pg: Callable[..., PostgresDLQ], admin: psycopg.Connection[Any], table: str
) -> None:
    with pytest.raises(missive.DLQError, match="there is no table"):
        open_pg(read_only=True)

    assert _rows(admin, "SELECT to_regclass(%s)", table, table) == [(None,)]


def test_a_read_only_store_s_session_is_read_only(open_pg: Callable[..., PostgresDLQ]) -> None:
    open_pg().close()
    dlq = open_pg(read_only=True)

    with dlq._connections.borrow() as conn:
        setting = conn.execute("SHOW default_transaction_read_only").fetchone()

    assert setting == ("on",)
