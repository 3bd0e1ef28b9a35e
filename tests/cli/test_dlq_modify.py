"""``missive dlq rm`` and ``purge``: deleting dead letters, and only those asked for."""

from __future__ import annotations

from pathlib import Path

from missive.dlq.sqlite import SQLiteDLQ
from missive.testing.conformance.dlq_suite import failure
from tests.cli.conftest import CLI
from tests.cli.test_dlq_inspect import fill, order


def stored_ids(path: Path) -> list[bytes]:
    """The ids left in the DLQ at ``path``."""
    with SQLiteDLQ(path) as dlq:
        return list(dlq)


def test_rm_deletes_the_dead_letters_named(cli: CLI, dlq_path: Path) -> None:
    fill(dlq_path, (order(1), "x"), (order(2), "x"), (order(3), "x"))

    result = cli("dlq", "rm", "order-1", "order-3", "--dlq", str(dlq_path))

    assert result.returncode == 0
    assert stored_ids(dlq_path) == [b"order-2"]


def test_rm_of_an_unknown_id_fails_but_deletes_the_others(cli: CLI, dlq_path: Path) -> None:
    fill(dlq_path, (order(1), "x"), (order(2), "x"))

    result = cli("dlq", "rm", "order-1", "nope", "--dlq", str(dlq_path))

    assert result.returncode == 1
    assert "missive: error: no dead letter with id 'nope'" in result.stderr
    assert stored_ids(dlq_path) == [b"order-2"]


def test_purge_with_yes_deletes_those_the_filters_select(cli: CLI, dlq_path: Path) -> None:
    fill(
        dlq_path,
        (order(1), failure("card declined", "orders")),
        (order(2), "no handler matched"),
        (order(3), failure("card declined", "orders")),
    )

    result = cli("dlq", "purge", "--reason", "declined", "--yes", "--dlq", str(dlq_path))

    assert result.returncode == 0
    assert "purged 2 dead letter(s)" in result.stdout
    assert stored_ids(dlq_path) == [b"order-2"]


def test_purge_before_a_time_keeps_later_ones(cli: CLI, dlq_path: Path) -> None:
    fill(dlq_path, (order(1), "x"))

    result = cli("dlq", "purge", "--before", "1h", "--yes", "--dlq", str(dlq_path))

    assert result.returncode == 0
    assert stored_ids(dlq_path) == [b"order-1"]


def test_purge_without_yes_and_no_terminal_refuses_and_deletes_nothing(
    cli: CLI, dlq_path: Path
) -> None:
    fill(dlq_path, (order(1), "x"))

    result = cli("dlq", "purge", "--dlq", str(dlq_path), input="y\n")

    assert result.returncode == 1
    assert "pass --yes" in result.stderr
    assert stored_ids(dlq_path) == [b"order-1"]
