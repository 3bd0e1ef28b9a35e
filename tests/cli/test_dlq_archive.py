"""``missive dlq archive``, ``unarchive``, ``expire`` and ``history``, run as a user runs
them, on an SQLite DLQ, and the audit entries they leave."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import missive
from missive.dlq.sqlite import SQLiteDLQ
from missive.testing.conformance.dlq_suite import failure
from tests.cli.conftest import CLI, assert_one_line_error


def _fill(path: Path, *keys: str) -> None:
    with SQLiteDLQ(path) as dlq:
        for key in keys:
            dlq[key.encode()] = (missive.RawMessage(b"{}", message_id=key.encode()), failure())


def _ls(cli: CLI, path: Path, *options: str) -> list[str]:
    result = cli("dlq", "ls", "--dlq", str(path), "--json", *options)
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["id"] for line in result.stdout.splitlines()]


def _history(cli: CLI, path: Path) -> list[dict[str, object]]:
    result = cli("dlq", "history", "--dlq", str(path), "--json")
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_archived_letters_are_hidden_from_ls_unless_archived(cli: CLI, dlq_path: Path) -> None:
    _fill(dlq_path, "a", "b", "c")

    result = cli("dlq", "archive", "--dlq", str(dlq_path), "a", "c", "--retention", "2d")

    assert result.returncode == 0, result.stderr
    assert "archived 2 dead letter(s)" in result.stdout
    assert _ls(cli, dlq_path) == ["b"]
    assert _ls(cli, dlq_path, "--archived") == ["a", "c"]


def test_unarchive_shows_them_in_ls_again(cli: CLI, dlq_path: Path) -> None:
    _fill(dlq_path, "a", "b")
    cli("dlq", "archive", "--dlq", str(dlq_path), "a")

    result = cli("dlq", "unarchive", "--dlq", str(dlq_path), "a")

    assert result.returncode == 0, result.stderr
    assert _ls(cli, dlq_path) == ["a", "b"]


def test_expire_deletes_archived_letters_past_retention_only(cli: CLI, dlq_path: Path) -> None:
    _fill(dlq_path, "a", "b", "c")
    with SQLiteDLQ(dlq_path) as dlq:
        dlq.archive([b"a"], datetime.now(UTC) - timedelta(minutes=1))
    cli("dlq", "archive", "--dlq", str(dlq_path), "b")

    result = cli("dlq", "expire", "--dlq", str(dlq_path))

    assert result.returncode == 0, result.stderr
    assert "expired 1 archived dead letter(s)" in result.stdout
    with SQLiteDLQ(dlq_path) as dlq:
        assert list(dlq) == [b"b", b"c"]


def test_archive_without_ids_or_filters_is_one_line_error(cli: CLI, dlq_path: Path) -> None:
    result = cli("dlq", "archive", "--dlq", str(dlq_path))

    assert_one_line_error(result, "give the ids to archive")


def test_a_bad_retention_is_one_line_error(cli: CLI, dlq_path: Path) -> None:
    result = cli("dlq", "archive", "--dlq", str(dlq_path), "a", "--retention", "soon")

    assert_one_line_error(result, "--retention", "duration")
    assert result.returncode == 2


def test_history_records_each_operation_with_user_and_command(cli: CLI, dlq_path: Path) -> None:
    _fill(dlq_path, "a", "b", "c")
    cli("dlq", "archive", "--dlq", str(dlq_path), "a", env={"USER": "alice", "LOGNAME": "alice"})
    cli("dlq", "rm", "--dlq", str(dlq_path), "b", env={"USER": "bob", "LOGNAME": "bob"})
    cli("dlq", "purge", "--dlq", str(dlq_path), "--yes", "--reason", "bad")

    entries = _history(cli, dlq_path)

    assert [entry["operation"] for entry in entries] == ["purge", "rm", "archive"]
    purge, rm, archive = entries
    assert archive["user"] == "alice"
    assert archive["ids"] == ["a"]
    assert "missive dlq archive" in str(archive["command"])
    assert rm["user"] == "bob"
    assert rm["ids"] == ["b"]
    assert purge["selection"] == "--reason bad"
    assert "purged 1" in str(purge["outcome"])


def test_history_redacts_a_url_password_in_the_command(cli: CLI, dlq_path: Path) -> None:
    _fill(dlq_path, "a")
    url = "postgresql://user:s3cret@127.0.0.1:1/none"
    # The command's --dlq is the file; a password elsewhere on the line is redacted too.
    cli("dlq", "archive", "--dlq", str(dlq_path), "--reason", url)

    [entry] = _history(cli, dlq_path)

    assert "s3cret" not in str(entry["command"])
    assert "user:***@127.0.0.1" in str(entry["command"])
