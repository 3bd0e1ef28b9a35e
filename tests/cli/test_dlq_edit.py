"""``missive dlq edit``: a dead letter's payload changed, checked and replayed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import missive
from missive.dlq.sqlite import SQLiteDLQ
from missive.testing.conformance.dlq_suite import failure
from tests.cli.conftest import CLI, assert_one_line_error

# Handles orders whose "n" is positive; raises otherwise.
_APP = """
import missive

processor: missive.Processor[missive.JSONMessage] = missive.Processor()


@processor.handle_for(lambda m: True)
def orders(message, ctx):
    if message.get_json()["n"] <= 0:
        raise ValueError("n must be positive")
    ctx.ack()
"""


def _setup(tmp_path: Path, dlq_path: Path) -> None:
    (tmp_path / "app.py").write_text(_APP)
    with SQLiteDLQ(dlq_path) as dlq:
        dlq[b"o1"] = (missive.JSONMessage(b'{"n": 0}', message_id=b"o1"), failure())


def _edit(cli: CLI, dlq_path: Path, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return cli(
        "dlq", "edit", "o1", "--dlq", str(dlq_path), "--processor", "app:processor", *args,
        env=env,
    )  # fmt: skip


def test_an_edit_that_is_handled_deletes_the_dead_letter(
    cli: CLI, tmp_path: Path, dlq_path: Path
) -> None:
    _setup(tmp_path, dlq_path)
    (tmp_path / "fixed.json").write_bytes(b'{"n": 5}')

    result = _edit(cli, dlq_path, "--from-file", "fixed.json")

    assert result.returncode == 0, result.stderr
    with SQLiteDLQ(dlq_path) as dlq:
        assert list(dlq) == []
        [entry] = dlq.history()
    assert entry.operation == "edit"
    assert entry.original == b'{"n": 0}'


def test_an_edit_that_fails_again_is_stored_with_the_edited_payload(
    cli: CLI, tmp_path: Path, dlq_path: Path
) -> None:
    _setup(tmp_path, dlq_path)
    (tmp_path / "still.json").write_bytes(b'{"n": -1}')

    result = _edit(cli, dlq_path, "--from-file", "still.json")

    assert result.returncode == 1
    with SQLiteDLQ(dlq_path) as dlq:
        record = dlq.record(b"o1")
    assert record.message.raw_data == b'{"n": -1}'
    assert "n must be positive" in record.reason


def test_editor_rewriting_the_file_is_replayed(cli: CLI, tmp_path: Path, dlq_path: Path) -> None:
    _setup(tmp_path, dlq_path)
    editor = tmp_path / "editor.py"
    editor.write_text("import sys\nopen(sys.argv[1], 'w').write('{\"n\": 7}')\n")

    result = _edit(cli, dlq_path, env={"EDITOR": f"{sys.executable} {editor}"})

    assert result.returncode == 0, result.stderr
    with SQLiteDLQ(dlq_path) as dlq:
        assert b"o1" not in dlq


def test_invalid_json_is_refused_in_one_line(cli: CLI, tmp_path: Path, dlq_path: Path) -> None:
    _setup(tmp_path, dlq_path)
    (tmp_path / "bad.json").write_bytes(b'{"n": ')

    result = _edit(cli, dlq_path, "--from-file", "bad.json")

    assert_one_line_error(result, "does not decode as JSONMessage")
    with SQLiteDLQ(dlq_path) as dlq:
        assert dlq.record(b"o1").message.raw_data == b'{"n": 0}'


def test_a_missing_editor_is_one_line_error(cli: CLI, tmp_path: Path, dlq_path: Path) -> None:
    _setup(tmp_path, dlq_path)

    result = _edit(cli, dlq_path, env={"EDITOR": ""})

    assert_one_line_error(result, "$EDITOR")


def test_an_unchanged_payload_is_one_line_error(cli: CLI, tmp_path: Path, dlq_path: Path) -> None:
    _setup(tmp_path, dlq_path)
    (tmp_path / "same.json").write_text(json.dumps({"n": 0}).replace(" ", " "))

    result = _edit(cli, dlq_path, "--from-file", "same.json")

    assert_one_line_error(result, "unchanged")
