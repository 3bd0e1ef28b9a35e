"""Bad input: each a one-line error on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import missive
from missive.dlq.sqlite import SQLiteDLQ
from tests.cli._apps import SHOP, write_app
from tests.cli.conftest import CLI, Result, assert_one_line_error, clean_env

DLQ_COMMANDS = [
    ("ls",),
    ("show", "some-id"),
    ("rm", "some-id"),
    ("purge", "--yes"),
    ("export",),
    ("stats",),
    ("replay", "--processor", "shop:processor", "--all"),
]


@pytest.mark.parametrize("command", DLQ_COMMANDS, ids=lambda c: c[0])
def test_a_dlq_file_that_does_not_exist_is_an_error_and_is_not_created(
    cli: CLI, tmp_path: Path, command: tuple[str, ...]
) -> None:
    write_app(tmp_path, "shop", SHOP)

    result = cli("dlq", *command, "--dlq", "missing.db")

    assert_one_line_error(result, "'missing.db' does not exist")
    assert not (tmp_path / "missing.db").exists()


def test_an_sqlite_url_to_a_missing_file_is_not_created_either(cli: CLI, tmp_path: Path) -> None:
    result = cli("dlq", "ls", "--dlq", f"sqlite:///{tmp_path}/missing.db")

    assert_one_line_error(result, "does not exist")
    assert not (tmp_path / "missing.db").exists()


def test_a_directory_is_not_a_dlq(cli: CLI, tmp_path: Path) -> None:
    result = cli("dlq", "ls", "--dlq", str(tmp_path))

    assert_one_line_error(result, "is a directory")


def test_a_file_that_is_not_a_database_is_an_error(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello\n" * 100)

    result = cli("dlq", "ls", "--dlq", "notes.txt")

    assert_one_line_error(result, "not an SQLite database")


def test_no_dlq_given_says_how_to_give_one(cli: CLI) -> None:
    result = cli("dlq", "stats")

    assert_one_line_error(result, "--dlq", "MISSIVE_DLQ")


def test_an_unknown_scheme_is_an_error(cli: CLI) -> None:
    result = cli("dlq", "ls", "--dlq", "mysql://localhost/dlq")

    assert_one_line_error(result, "unknown scheme 'mysql'")


def test_an_unknown_id_is_an_error(cli: CLI, dlq_path: Path) -> None:
    result = cli("dlq", "show", "nope", "--dlq", str(dlq_path))

    assert_one_line_error(result, "no dead letter with id 'nope'")


def test_a_bad_hex_id_is_an_error(cli: CLI, dlq_path: Path) -> None:
    result = cli("dlq", "show", "hex:zz", "--dlq", str(dlq_path))

    assert_one_line_error(result, "not hex")


def test_a_postgresql_url_whose_credentials_are_refused_is_an_error_without_the_password(
    cli: CLI,
) -> None:
    # The local server trusts every password of a known role, so an unknown role
    # is what it refuses here.
    from tests.services import require

    require("postgres")
    url = "postgresql://no_such_role:hunter2-secret@127.0.0.1:5432/test"

    result = cli("dlq", "ls", "--dlq", url)

    assert_one_line_error(result, "postgresql://no_such_role:***@127.0.0.1:5432/test")
    assert "hunter2" not in result.stderr


def test_an_unreachable_postgresql_server_is_an_error(cli: CLI) -> None:
    result = cli("dlq", "ls", "--dlq", "postgresql://root:hunter2@127.0.0.1:1/test")

    assert_one_line_error(result, "127.0.0.1:1")
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("no_such_module:processor", "no module named 'no_such_module'"),
        ("shop:no_such_name", "'shop' has no attribute 'no_such_name'"),
        ("shop:processor.nothing", "'shop.processor' has no attribute 'nothing'"),
        ("shop", "write the processor as module:attribute"),
        ("shop:HERE", "not a missive.Processor"),
        ("broken:processor", "importing it raised ZeroDivisionError"),
    ],
)
def test_a_processor_path_that_does_not_import_is_an_error(
    cli: CLI, tmp_path: Path, dlq_path: Path, path: str, expected: str
) -> None:
    write_app(tmp_path, "shop", SHOP)
    write_app(tmp_path, "broken", "x = 1 / 0\n")

    result = cli("dlq", "replay", "--processor", path, "--all", "--dlq", str(dlq_path))

    assert_one_line_error(result, expected)


def test_a_module_that_fails_to_import_names_the_place(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "broken", "import os\nx = 1 / 0\n")

    result = cli("routes", "check", "broken:processor", "-")

    assert_one_line_error(result, "broken.py:2", "python -c 'import broken'")


def test_a_missing_import_inside_the_module_is_not_blamed_on_the_path(
    cli: CLI, tmp_path: Path
) -> None:
    write_app(tmp_path, "needy", "import no_such_dependency\n")

    result = cli("run", "needy:adapter")

    assert_one_line_error(result, "importing it raised ModuleNotFoundError", "no_such_dependency")


def test_a_bad_message_class_is_an_error(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "shop", SHOP)

    result = cli("routes", "check", "shop:processor", "-", "--message-class", "shop:processor")

    assert_one_line_error(result, "not a missive.Message subclass")


def test_an_unknown_command_is_a_usage_error(cli: CLI) -> None:
    result = cli("dlq", "frobnicate")

    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_a_table_is_refused_for_an_sqlite_dlq(cli: CLI, dlq_path: Path) -> None:
    result = cli("dlq", "ls", "--dlq", str(dlq_path), "--dlq-table", "mine")

    assert_one_line_error(result, "--dlq-table is for PostgreSQL")


def test_a_syntax_error_in_the_module_names_the_line(cli: CLI, tmp_path: Path) -> None:
    write_app(tmp_path, "typo", "import missive\n\ndef broken(:\n    pass\n")

    result = cli("run", "typo:adapter")

    assert_one_line_error(result, "importing it raised SyntaxError", "typo.py:3")


def test_help_and_version_exit_zero(cli: CLI) -> None:
    help_ = cli("--help")
    version = cli("--version")

    assert help_.returncode == version.returncode == 0
    assert "dlq" in help_.stdout
    assert version.stdout.startswith("missive ")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("dlq", "ls", "--limit", "-1"), "argument --limit"),
        (("dlq", "ls", "--limit", "²"), "argument --limit"),
        (("dlq", "ls", "--since", "99999999999d"), "argument --since"),
        (("dlq", "ls", "--since", "9999-12-31T23:59:59-23:59"), "argument --since"),
        (("dlq", "export", "--before", "0001-01-01T00:00:00+23:59"), "argument --before"),
        (("dlq", "frobnicate"), "invalid choice"),
        (("dlq", "ls", "--no-such-option"), "unrecognized arguments"),
    ],
    ids=["negative-limit", "superscript-limit", "huge-duration", "after-9999", "before-1",
         "unknown-command", "unknown-option"],
)  # fmt: skip
def test_a_bad_argument_is_one_error_line_and_status_2(
    cli: CLI, dlq_path: Path, args: tuple[str, ...], fragment: str
) -> None:
    # Given an argument the command cannot use
    # When the command runs
    result = cli(*args, "--dlq", str(dlq_path))

    # Then it says so on one line, and how to get help, with status 2
    assert_one_line_error(result, fragment, "--help")
    assert result.returncode == 2


def test_a_libpq_key_value_string_is_a_postgresql_dlq_and_its_password_is_hidden(
    cli: CLI,
) -> None:
    # Given a libpq connection string to a port where nothing listens
    conninfo = "host=127.0.0.1 port=1 dbname=test user=root password=hunter2-secret"

    # When a command opens it
    result = cli("dlq", "ls", "--dlq", conninfo)

    # Then it was tried as PostgreSQL, not as a file, and the password is not shown
    assert_one_line_error(result, "password=***", "postgresql://root@127.0.0.1:1/test")
    assert "does not exist" not in result.stderr
    assert "hunter2" not in result.stderr


@pytest.mark.parametrize(
    "url",
    ["postgresql://root:hunter2@[::1/test", "postgresql://root:hunter2@[zz]:1/test",
     "sqlite://[::1/dlq.db"],
)  # fmt: skip
def test_a_url_with_a_malformed_ipv6_host_is_an_error_without_the_password(
    cli: CLI, url: str
) -> None:
    result = cli("dlq", "ls", "--dlq", url)

    assert_one_line_error(result, "cannot open the DLQ")
    assert "hunter2" not in result.stderr


def test_purge_with_stdin_closed_asks_for_yes_on_one_line(cli: CLI, dlq_path: Path) -> None:
    # Given a DLQ with a dead letter
    with SQLiteDLQ(dlq_path) as dlq:
        dlq[b"one"] = (missive.RawMessage(b"x", b"one"), "x")

    # When purge runs without --yes and with stdin closed (<&-)
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *cli.command("dlq", "purge", "--dlq", "dlq.db")],
        cwd=cli.cwd, env=clean_env(), capture_output=True, timeout=30, check=False,
    )  # fmt: skip

    # Then it refuses on one line, and the dead letter is kept
    result = Result(done.returncode, done.stdout, done.stderr.decode())
    assert_one_line_error(result, "pass --yes")
    with SQLiteDLQ(dlq_path) as dlq:
        assert b"one" in dlq
