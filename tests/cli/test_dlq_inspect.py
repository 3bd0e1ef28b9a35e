"""``missive dlq ls``, ``show``, ``stats`` and ``export`` on real SQLite files."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

import missive
from missive.dlq.sqlite import SQLiteDLQ
from missive.testing.conformance.dlq_suite import failure
from tests.cli._apps import SHOP, write_app
from tests.cli.conftest import CLI, assert_one_line_error


def fill(path: Path, *entries: tuple[missive.Message, str]) -> None:
    """Write dead letters to the SQLite DLQ at ``path`` as the processor does."""
    with SQLiteDLQ(path) as dlq:
        for message, reason in entries:
            dlq[message.message_id] = (message, reason)


def order(number: int, message_id: bytes | None = None) -> missive.JSONMessage:
    """A JSON order message."""
    data = json.dumps({"kind": "order", "n": number}).encode()
    return missive.JSONMessage(data, message_id or b"order-%d" % number, {"queue": "orders"})


def test_ls_prints_a_row_per_dead_letter_tab_separated_when_piped(cli: CLI, dlq_path: Path) -> None:
    # Given two dead letters, one of them dead-lettered twice
    fill(dlq_path, (order(1), failure("bad", "orders")), (order(2), "no handler matched"))
    fill(dlq_path, (order(1), failure("bad", "orders")))

    # When they are listed into a pipe
    result = cli("dlq", "ls", "--dlq", str(dlq_path))

    # Then there is a header and a row each, oldest first, in plain tab-separated text
    assert result.returncode == 0
    header, *rows = result.stdout.splitlines()
    assert header.split("\t") == ["ID", "WHEN", "REASON", "HANDLER", "SIZE", "TIMES"]
    first, second = (row.split("\t") for row in rows)
    assert first[0] == "order-1"
    assert first[1].endswith("Z")
    assert first[2:] == ["handler 'orders' raised ValueError", "orders", "25", "2"]
    assert second[0] == "order-2"
    assert second[2:] == ["no handler matched", "-", "25", "1"]
    assert "\x1b" not in result.stdout


def test_ls_filters_by_reason_text_and_handler(cli: CLI, dlq_path: Path) -> None:
    fill(
        dlq_path,
        (order(1), failure("card declined", "orders")),
        (order(2), failure("timeout", "orders")),
        (order(3), failure("card declined", "refunds")),
    )

    result = cli("dlq", "ls", "--dlq", str(dlq_path), "--reason", "declined", "--handler", "orders")

    assert result.returncode == 0
    assert [row.split("\t")[0] for row in result.stdout.splitlines()[1:]] == ["order-1"]


def test_ls_filters_by_time_iso_or_relative(cli: CLI, dlq_path: Path) -> None:
    # Given a dead letter written just now
    fill(dlq_path, (order(1), "no handler matched"))

    def ids(*filters: str) -> list[str]:
        result = cli("dlq", "ls", "--dlq", str(dlq_path), *filters)
        assert result.returncode == 0, result.stderr
        return [row.split("\t")[0] for row in result.stdout.splitlines()[1:]]

    # Then relative and ISO-8601 times select it, or not
    assert ids("--since", "1h") == ["order-1"]
    assert ids("--before", "1h") == []
    assert ids("--since", "2999-01-01T00:00:00Z") == []
    assert ids("--before", "2999-01-01T00:00:00+02:00") == ["order-1"]


def test_a_time_that_cannot_be_read_is_a_usage_error(cli: CLI, dlq_path: Path) -> None:
    result = cli("dlq", "ls", "--dlq", str(dlq_path), "--since", "yesterday")

    assert result.returncode == 2
    assert "cannot read the time 'yesterday'" in result.stderr
    assert "Traceback" not in result.stderr


def test_ls_json_gives_one_object_a_line(cli: CLI, dlq_path: Path) -> None:
    fill(dlq_path, (order(1), failure("bad", "orders")), (order(2), "no handler matched"))

    result = cli("dlq", "ls", "--dlq", str(dlq_path), "--json", "--limit", "1")

    assert result.returncode == 0
    [line] = result.stdout.splitlines()
    record = json.loads(line)
    assert record["id"] == "order-1"
    assert record["handler"] == "orders"
    assert record["times"] == 1
    assert record["size"] == 25
    assert record["summary"] == "handler 'orders' raised ValueError"
    assert record["reason"] == "handler 'orders' raised ValueError: bad"
    assert record["attributes"] == {"queue": "orders"}
    assert "payload_b64" not in record


def test_the_dlq_defaults_to_the_missive_dlq_variable(cli: CLI, dlq_path: Path) -> None:
    fill(dlq_path, (order(1), "no handler matched"))

    result = cli("dlq", "ls", env={"MISSIVE_DLQ": f"sqlite:///{dlq_path}"})

    assert result.returncode == 0
    assert "order-1" in result.stdout


def test_dlq_may_come_before_the_subcommand(cli: CLI, dlq_path: Path) -> None:
    fill(dlq_path, (order(1), "no handler matched"))

    result = cli("dlq", "--dlq", "dlq.db", "ls")

    assert result.returncode == 0
    assert "order-1" in result.stdout


def test_show_prints_everything_stored_with_a_text_payload(cli: CLI, dlq_path: Path) -> None:
    fill(dlq_path, (order(7), failure("bad total", "orders")))

    result = cli("dlq", "show", "order-7", "--dlq", str(dlq_path))

    assert result.returncode == 0
    out = result.stdout
    for expected in (
        "id: order-7",
        "message class: missive.message.JSONMessage",
        "handler: orders",
        "exception: ValueError",
        "times: 1",
        'attributes: {"queue":"orders"}',
        "reason: handler 'orders' raised ValueError: bad total",
        "Traceback (most recent call last):",
        'payload: 25 bytes of UTF-8 text:\n{"kind": "order", "n": 7}',
    ):
        assert expected in out


def test_show_prints_the_history_of_a_message_retried_before_it_was_dead_lettered(
    cli: CLI, dlq_path: Path
) -> None:
    history = [
        {"at": 1796500000.0, "reason": "handler 'orders' raised ConnectionError", "delay": 0},
        {"at": 1796500000.5, "reason": "handler 'orders' raised ConnectionError", "delay": 2.5},
        {"at": 1796500003.0, "reason": "handler 'orders' raised ConnectionError", "delay": None},
    ]
    message = missive.JSONMessage(
        b'{"kind": "order", "n": 8}', b"order-8", {"x-missive-history": history}
    )
    fill(dlq_path, (message, failure("database down", "orders")))

    result = cli("dlq", "show", "order-8", "--dlq", str(dlq_path))

    assert result.returncode == 0
    assert (
        "history:\nattempts (3):\n"
        "  1. 2026-12-05T19:46:40.000+00:00 handler 'orders' raised ConnectionError; "
        "retried at once\n"
        "  2. 2026-12-05T19:46:40.500+00:00 handler 'orders' raised ConnectionError; "
        "retried in 2.5 s\n"
        "  3. 2026-12-05T19:46:43.000+00:00 handler 'orders' raised ConnectionError; given up\n"
    ) in result.stdout


def test_show_gives_a_hex_preview_of_a_binary_payload(cli: CLI, dlq_path: Path) -> None:
    fill(dlq_path, (missive.RawMessage(b"\xff\x00\x01abc" * 100, b"bin"), "no handler matched"))

    result = cli("dlq", "show", "bin", "--dlq", str(dlq_path))

    assert result.returncode == 0
    assert "payload: 600 bytes, not text; hex preview:" in result.stdout
    assert "00000000  ff 00 01 61 62 63 ff 00" in result.stdout
    assert "(344 more bytes; use --raw for all of them)" in result.stdout


def test_show_never_lets_stored_text_drive_the_terminal(cli: CLI, dlq_path: Path) -> None:
    # Given a dead letter whose payload and reason hold terminal escape sequences
    message = missive.RawMessage(b"\x1b]0;pwned\x07\x1b[2J", b"esc")
    fill(dlq_path, (message, "bad \x1b[31mred\x1b[0m"))

    # When it is shown
    result = cli("dlq", "show", "esc", "--dlq", str(dlq_path))

    # Then no escape character is written; the payload is shown in hex
    assert result.returncode == 0
    assert "\x1b" not in result.stdout
    assert "reason: bad \\x1b[31mred\\x1b[0m" in result.stdout
    assert "not text; hex preview" in result.stdout


def test_show_raw_writes_the_exact_payload_bytes(cli: CLI, dlq_path: Path) -> None:
    payload = bytes(range(256)) + b"\r\n\x00"
    fill(dlq_path, (missive.RawMessage(payload, b"raw"), "no handler matched"))

    result = cli("dlq", "show", "raw", "--raw", "--dlq", str(dlq_path))

    assert result.returncode == 0
    assert result.stdout_bytes == payload


def test_an_id_that_is_not_text_is_shown_and_taken_as_hex(cli: CLI, dlq_path: Path) -> None:
    fill(dlq_path, (missive.RawMessage(b"x", b"\x00\xff id"), "no handler matched"))

    listed = cli("dlq", "ls", "--dlq", str(dlq_path))
    shown = cli("dlq", "show", "hex:00ff206964", "--dlq", str(dlq_path))

    assert listed.stdout.splitlines()[1].split("\t")[0] == "hex:00ff206964"
    assert shown.returncode == 0
    assert "id: hex:00ff206964" in shown.stdout


def test_stats_counts_by_reason_and_handler(cli: CLI, dlq_path: Path) -> None:
    fill(
        dlq_path,
        (order(1), failure("a", "orders")),
        (order(2), failure("b", "orders")),
        (order(3), "no handler matched"),
    )

    result = cli("dlq", "stats", "--json", "--dlq", str(dlq_path))

    assert result.returncode == 0
    stats = json.loads(result.stdout)
    assert stats["total"] == 3
    assert stats["by_reason"] == {"handler 'orders' raised ValueError": 2, "no handler matched": 1}
    assert stats["by_handler"] == {"orders": 2, "-": 1}
    assert stats["oldest"]["id"] == "order-1"
    assert stats["newest"]["id"] == "order-3"


def test_stats_as_text_shows_totals_and_both_ends(cli: CLI, dlq_path: Path) -> None:
    fill(dlq_path, (order(1), failure("a", "orders")), (order(2), failure("b", "orders")))

    result = cli("dlq", "stats", "--dlq", str(dlq_path))

    assert result.returncode == 0
    assert "dead letters: 2" in result.stdout
    assert "(order-1)" in result.stdout.split("oldest:")[1].splitlines()[0]
    assert "(order-2)" in result.stdout.split("newest:")[1].splitlines()[0]
    assert "2\thandler 'orders' raised ValueError" in result.stdout


def test_export_writes_json_lines_with_the_payload_in_base64(cli: CLI, dlq_path: Path) -> None:
    payload = b"\xffnot utf-8\n"
    fill(
        dlq_path,
        (missive.RawMessage(payload, b"\x01bin"), failure("x", "orders")),
        (order(2), "no handler matched"),
    )

    result = cli("dlq", "export", "--dlq", str(dlq_path))

    assert result.returncode == 0
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert base64.b64decode(first["payload_b64"]) == payload
    assert base64.b64decode(first["id_b64"]) == b"\x01bin"
    assert first["traceback"].startswith("Traceback")
    assert first["message_class"] == "missive.message.RawMessage"
    assert second["id"] == "order-2"


def test_export_takes_the_same_filters_as_ls(cli: CLI, dlq_path: Path) -> None:
    fill(dlq_path, (order(1), failure("x", "orders")), (order(2), "no handler matched"))

    result = cli("dlq", "export", "--handler", "orders", "--dlq", str(dlq_path))

    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["order-1"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _application_database(path: Path) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ann')")
        conn.execute("PRAGMA user_version = 3")
    return path


READ_ONLY_COMMANDS = [
    ("dlq", "ls"),
    ("dlq", "show", "order-1"),
    ("dlq", "stats"),
    ("dlq", "export"),
    ("routes", "check", "shop:processor"),
]


@pytest.mark.parametrize("command", READ_ONLY_COMMANDS, ids=" ".join)
def test_a_read_only_command_leaves_a_dlq_file_unchanged(
    cli: CLI, dlq_path: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    # Given a DLQ file whose dead letters were all checkpointed into it
    write_app(tmp_path, "shop", SHOP)
    fill(dlq_path, (order(1), failure("bad", "orders")))
    before = _digest(dlq_path)

    # When a command that only looks runs on it
    result = cli(*command, "--dlq", str(dlq_path))

    # Then it worked and the file is byte for byte what it was
    assert result.returncode == 0, result.stderr
    assert _digest(dlq_path) == before


@pytest.mark.parametrize("command", READ_ONLY_COMMANDS, ids=" ".join)
def test_a_read_only_command_on_another_application_s_database_says_it_is_not_a_dlq(
    cli: CLI, tmp_path: Path, command: tuple[str, ...]
) -> None:
    write_app(tmp_path, "shop", SHOP)
    path = _application_database(tmp_path / "app.db")
    before = _digest(path)

    result = cli(*command, "--dlq", str(path))

    assert_one_line_error(result, "not a Missive DLQ")
    assert "newer" not in result.stderr
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("app.db")) == ["app.db"]


def test_ls_lists_a_reused_id_s_other_payload_as_its_own_row(cli: CLI, dlq_path: Path) -> None:
    # Given two different payloads that came with one id
    fill(dlq_path, (order(1, b"reused"), "first"), (order(2, b"reused"), "second"))

    # When they are listed
    result = cli("dlq", "ls", "--dlq", str(dlq_path))

    # Then both are there, the second under an id that says what it is
    ids = [row.split("\t")[0] for row in result.stdout.splitlines()[1:]]
    assert ids[0] == "reused"
    assert len(ids) == 2
    assert ids[1].startswith("reused~other-payload-")


def test_show_names_the_other_payloads_that_came_with_the_id(cli: CLI, dlq_path: Path) -> None:
    fill(dlq_path, (order(1, b"reused"), "first"), (order(2, b"reused"), "second"))
    other = cli("dlq", "ls", "--dlq", str(dlq_path)).stdout.splitlines()[2].split("\t")[0]

    shown = cli("dlq", "show", "reused", "--dlq", str(dlq_path))
    shown_other = cli("dlq", "show", other, "--dlq", str(dlq_path))

    assert '{"kind": "order", "n": 1}' in shown.stdout
    assert f"other payloads: 1 more came with this id, kept as: {other}" in shown.stdout
    assert '{"kind": "order", "n": 2}' in shown_other.stdout
