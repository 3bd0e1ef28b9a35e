"""The ``missive dlq`` commands against the real PostgreSQL server.

Every test uses its own table (``--dlq-table``, a random name), dropped when it
ends. The server is ``MISSIVE_TEST_POSTGRES`` (default
``postgresql://root@127.0.0.1:5432/test``), as in ``tests/dlq/test_postgres.py``;
when it is down the tests skip, or fail under ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import missive
from missive.testing.conformance.dlq_suite import failure
from tests.cli._apps import SHOP, write_app
from tests.cli.conftest import CLI, Result, assert_one_line_error
from tests.cli.test_dlq_inspect import order
from tests.services import require

psycopg = pytest.importorskip("psycopg")

from missive.dlq.postgres import PostgresDLQ  # noqa: E402

DSN = os.environ.get("MISSIVE_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")


@pytest.fixture
def table() -> Iterator[str]:
    """A table name of this test's own, dropped when the test ends."""
    require("postgres")
    name = f"missive_cli_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(psycopg.sql.Identifier(name))
        )


def fill(table: str, *entries: tuple[missive.Message, str]) -> None:
    """Write dead letters to the test's table as the processor does."""
    with PostgresDLQ(DSN, table=table) as dlq:
        for message, reason in entries:
            dlq[message.message_id] = (message, reason)


def stored(table: str) -> dict[bytes, int]:
    """``{id: times}`` of the test's table."""
    with PostgresDLQ(DSN, table=table) as dlq:
        return {record.message_id: record.times for record in dlq.records()}


def dlq(cli: CLI, table: str, *args: str) -> Result:
    """Run ``missive dlq ARGS`` on the test's table."""
    return cli("dlq", *args, "--dlq", DSN, "--dlq-table", table)


def test_ls_lists_the_dead_letters_of_a_postgresql_dlq(cli: CLI, table: str) -> None:
    fill(table, (order(1), failure("bad", "orders")), (order(2), "no handler matched"))

    result = dlq(cli, table, "ls")

    assert result.returncode == 0, result.stderr
    assert [row.split("\t")[0] for row in result.stdout.splitlines()[1:]] == ["order-1", "order-2"]
    assert result.stdout.splitlines()[1].split("\t")[3] == "orders"


def test_the_dlq_and_table_default_to_the_environment(cli: CLI, table: str) -> None:
    fill(table, (order(1), "no handler matched"))

    result = cli("dlq", "stats", "--json", env={"MISSIVE_DLQ": DSN, "MISSIVE_DLQ_TABLE": table})

    assert result.returncode == 0, result.stderr
    assert '"total": 1' in result.stdout


def test_show_raw_gives_the_exact_bytes_from_postgresql(cli: CLI, table: str) -> None:
    payload = bytes(range(256))
    fill(table, (missive.RawMessage(payload, b"raw"), "x"))

    result = dlq(cli, table, "show", "raw", "--raw")

    assert result.returncode == 0, result.stderr
    assert result.stdout_bytes == payload


def test_replay_after_a_fix_empties_a_postgresql_dlq(cli: CLI, table: str, tmp_path: Path) -> None:
    write_app(tmp_path, "shop", SHOP)
    fill(table, (order(1), failure("down", "orders")), (order(2), failure("down", "orders")))
    (tmp_path / "fixed").touch()

    result = dlq(cli, table, "replay", "--processor", "shop:processor", "--all")

    assert result.returncode == 0, result.stderr
    assert stored(table) == {}
    assert (tmp_path / "handled.log").read_text().split() == ["1", "2"]


def test_a_failed_replay_updates_the_postgresql_record(
    cli: CLI, table: str, tmp_path: Path
) -> None:
    write_app(tmp_path, "shop", SHOP)
    fill(table, (order(1), failure("down", "orders")))

    result = dlq(cli, table, "replay", "--processor", "shop:processor", "order-1")

    assert result.returncode == 1
    assert stored(table) == {b"order-1": 2}
    with PostgresDLQ(DSN, table=table) as store:
        assert store.record(b"order-1").reason.endswith("orders are broken")


def test_rm_and_purge_delete_from_postgresql(cli: CLI, table: str) -> None:
    fill(table, (order(1), "x"), (order(2), "x"), (order(3), "y"))

    removed = dlq(cli, table, "rm", "order-1")
    purged = dlq(cli, table, "purge", "--reason", "x", "--yes")

    assert removed.returncode == purged.returncode == 0
    assert stored(table) == {b"order-3": 1}


def test_an_unknown_id_in_postgresql_is_an_error(cli: CLI, table: str) -> None:
    fill(table, (order(1), "x"))

    result = dlq(cli, table, "show", "nope")

    assert_one_line_error(result, "no dead letter with id 'nope'")


def test_a_table_that_does_not_exist_is_an_error_and_is_not_created(cli: CLI, table: str) -> None:
    result = dlq(cli, table, "ls")

    assert_one_line_error(result, f"no table public.{table}")
    with psycopg.connect(DSN, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)
