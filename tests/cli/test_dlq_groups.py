"""``missive dlq groups`` and ``--group ID`` on ``ls``, ``purge`` and ``export``, on
DLQs filled by a real processor whose handlers fail."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import missive
from missive.dlq import DeadLetterStore
from missive.dlq.sqlite import SQLiteDLQ
from tests.cli.conftest import CLI, Result
from tests.services import require

DSN = os.environ.get("MISSIVE_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/test")


def _charge(n: int) -> None:
    raise RuntimeError(f"card of 'customer-{n}' declined for order {n}, secret hunter{n}")


def orders(message: missive.JSONMessage, ctx: missive.HandlingContext[missive.JSONMessage]) -> None:
    """Fails to charge every order."""
    _charge(message.get_json()["n"])


def refunds(
    message: missive.JSONMessage, ctx: missive.HandlingContext[missive.JSONMessage]
) -> None:
    """Fails on a missing field."""
    raise KeyError(message.get_json()["field"])


def fill(dlq: DeadLetterStore) -> None:
    """Dead-letter, through a processor: 3 declined orders, 2 refunds missing a field,
    1 message no handler takes, in that order of arrival (m-0 ... m-5)."""
    processor: missive.Processor[missive.JSONMessage] = missive.Processor()
    processor.set_dlq(dlq)
    processor.handle_for(lambda m: m.get_json().get("kind") == "order")(orders)
    processor.handle_for(lambda m: m.get_json().get("kind") == "refund")(refunds)
    bodies = [
        {"kind": "order", "n": 1},
        {"kind": "refund", "field": "amount-1"},
        {"kind": "order", "n": 22},
        {"kind": "nobody"},
        {"kind": "refund", "field": "amount-99"},
        {"kind": "order", "n": 333},
    ]
    with processor.context() as context:
        for number, body in enumerate(bodies):
            data = json.dumps(body).encode()
            context.process(missive.JSONMessage(data, b"m-%d" % number, {}))


@pytest.fixture
def filled(dlq_path: Path) -> Path:
    """The test's SQLite DLQ, filled by :func:`fill`."""
    with SQLiteDLQ(dlq_path) as dlq:
        fill(dlq)
    return dlq_path


def groups(cli: CLI, *args: str) -> list[dict[str, object]]:
    """``missive dlq groups --json ARGS``, read."""
    result = cli("dlq", "groups", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def ids(result: Result) -> list[str]:
    """The ids in ``ls --json`` or ``export`` output."""
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["id"] for line in result.stdout.splitlines()]


def test_groups_lists_the_groups_largest_first(cli: CLI, filled: Path) -> None:
    result = cli("dlq", "groups", "--dlq", str(filled))

    assert result.returncode == 0, result.stderr
    header, *rows = (line.split("\t") for line in result.stdout.splitlines())
    assert header == ["GROUP", "COUNT", "FIRST", "LAST", "HANDLER", "EXAMPLE"]
    assert [row[1:2] + row[4:] for row in rows] == [
        ["3", "orders", "handler 'orders' raised RuntimeError"],
        ["2", "refunds", "handler 'refunds' raised KeyError"],
        ["1", "-", "no handler matched the message"],
    ]
    assert all(len(row[0]) == 10 and row[2] <= row[3] for row in rows)


def test_groups_never_shows_a_payload_or_exception_text(cli: CLI, filled: Path) -> None:
    result = cli("dlq", "groups", "--dlq", str(filled))
    as_json = cli("dlq", "groups", "--json", "--dlq", str(filled))

    for output in (result.stdout, as_json.stdout):
        assert "hunter" not in output
        assert "customer" not in output
        assert "amount" not in output


def test_groups_json_gives_each_group_as_an_object(cli: CLI, filled: Path) -> None:
    found = groups(cli, "--dlq", str(filled))

    assert [(g["kind"], g["count"], g["handlers"]) for g in found] == [
        ("exception", 3, ["orders"]),
        ("exception", 2, ["refunds"]),
        ("no-handler", 1, []),
    ]
    assert found[0]["exc_type"] == "RuntimeError"
    assert {"id", "first_seen", "last_seen", "example"} <= set(found[0])


def test_ls_with_group_lists_only_that_group(cli: CLI, filled: Path) -> None:
    declined, missing, _ = groups(cli, "--dlq", str(filled))

    where = ("--dlq", str(filled))

    listed = cli("dlq", "ls", "--json", "--group", str(declined["id"]), *where)
    limited = cli("dlq", "ls", "--json", "--limit", "1", "--group", str(missing["id"]), *where)
    upper = cli("dlq", "ls", "--json", "--group", str(missing["id"]).upper(), *where)

    assert ids(listed) == ["m-0", "m-2", "m-5"]
    assert ids(limited) == ["m-1"]
    assert ids(upper) == ["m-1", "m-4"]


def test_purge_with_group_deletes_that_group_only(cli: CLI, filled: Path) -> None:
    declined = groups(cli, "--dlq", str(filled))[0]

    result = cli("dlq", "purge", "--group", str(declined["id"]), "--yes", "--dlq", str(filled))

    assert result.returncode == 0, result.stderr
    assert "purged 3 dead letter(s)" in result.stdout
    with SQLiteDLQ(filled) as dlq:
        assert list(dlq) == [b"m-1", b"m-3", b"m-4"]
    assert [g["count"] for g in groups(cli, "--dlq", str(filled))] == [2, 1]


def test_export_with_group_writes_that_group_with_payloads(cli: CLI, filled: Path) -> None:
    missing = groups(cli, "--dlq", str(filled))[1]

    result = cli("dlq", "export", "--group", str(missing["id"]), "--dlq", str(filled))

    assert ids(result) == ["m-1", "m-4"]
    assert all("payload_b64" in json.loads(line) for line in result.stdout.splitlines())


FIXED = """
import missive

processor = missive.Processor()


@processor.handle_for(lambda m: True)
def fixed(message, ctx):
    ctx.ack()
"""


def test_replay_with_group_replays_that_group_only(
    cli: CLI, filled: Path, tmp_path: Path
) -> None:
    # Given the declined orders' bug fixed: a processor that acks everything
    declined = groups(cli, "--dlq", str(filled))[0]
    (tmp_path / "fixed.py").write_text(FIXED)
    # When the group is replayed
    result = cli(
        "dlq", "replay", "--processor", "fixed:processor", "--group", str(declined["id"]),
        "--dlq", str(filled),
    )  # fmt: skip
    # Then its letters left the DLQ, and only they did
    assert result.returncode == 0, result.stderr
    assert ids(cli("dlq", "ls", "--json", "--dlq", str(filled))) == ["m-1", "m-3", "m-4"]


def test_a_group_and_another_filter_select_both(cli: CLI, filled: Path) -> None:
    declined = groups(cli, "--dlq", str(filled))[0]

    result = cli(
        "dlq",
        "ls",
        "--json",
        "--group",
        str(declined["id"]),
        "--handler",
        "refunds",
        "--dlq",
        str(filled),
    )
    assert ids(result) == []


@pytest.mark.parametrize("bad", ["nope", "12345", "0123456789a", "ghijklmnop"])
def test_a_group_that_is_not_a_fingerprint_is_a_usage_error(
    cli: CLI, filled: Path, bad: str
) -> None:
    result = cli("dlq", "ls", "--group", bad, "--dlq", str(filled))

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("missive: error: ")
    assert "10 hex digits" in lines[0]


def test_groups_of_an_empty_dlq_is_just_the_header_when_piped(cli: CLI, dlq_path: Path) -> None:
    result = cli("dlq", "groups", "--dlq", str(dlq_path))

    assert result.returncode == 0
    assert result.stdout.splitlines() == ["GROUP\tCOUNT\tFIRST\tLAST\tHANDLER\tEXAMPLE"]


@pytest.fixture
def table() -> Iterator[str]:
    """A PostgreSQL table of this test's own, dropped when the test ends."""
    require("postgres")
    psycopg = pytest.importorskip("psycopg")
    name = f"missive_groups_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(psycopg.sql.Identifier(name))
        )


def test_groups_and_group_filters_on_postgresql(cli: CLI, table: str) -> None:
    from missive.dlq.postgres import PostgresDLQ

    with PostgresDLQ(DSN, table=table) as dlq:
        fill(dlq)
    where = ("--dlq", DSN, "--dlq-table", table)

    found = groups(cli, *where)
    purged = cli("dlq", "purge", "--group", str(found[1]["id"]), "--yes", *where)

    assert [g["count"] for g in found] == [3, 2, 1]
    assert ids(cli("dlq", "ls", "--json", "--group", str(found[0]["id"]), *where)) == [
        "m-0",
        "m-2",
        "m-5",
    ]
    assert purged.returncode == 0, purged.stderr
    assert ids(cli("dlq", "export", *where)) == ["m-0", "m-2", "m-3", "m-5"]
