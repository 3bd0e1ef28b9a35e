"""open_dlq: a DLQ from the path or URL a user types."""

from pathlib import Path

import pytest

import missive
from missive.dlq import open_dlq
from missive.dlq.sqlite import SQLiteDLQ


def test_a_bare_path_is_an_sqlite_file(tmp_path: Path) -> None:
    with open_dlq(str(tmp_path / "dlq.db")) as dlq:
        assert isinstance(dlq, SQLiteDLQ)
    assert (tmp_path / "dlq.db").exists()


def test_an_sqlite_url_with_an_absolute_path(tmp_path: Path) -> None:
    with open_dlq(f"sqlite:///{tmp_path}/dlq.db") as dlq:
        assert isinstance(dlq, SQLiteDLQ)
    assert (tmp_path / "dlq.db").exists()


def test_an_sqlite_url_with_a_relative_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_dlq("sqlite:///relative.db"):
        pass
    assert (tmp_path / "relative.db").exists()


def test_a_malformed_sqlite_url_is_a_clear_error() -> None:
    with pytest.raises(missive.DLQError, match="sqlite:///"):
        open_dlq("sqlite://host/dlq.db")


def test_an_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(missive.DLQError, match="unknown scheme 'mysql'"):
        open_dlq("mysql://localhost/dlq")


def test_without_create_a_missing_file_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(missive.DLQError, match="no such file"):
        open_dlq(str(path), create=False)
    assert not path.exists()


def test_without_create_an_existing_file_opens(tmp_path: Path) -> None:
    path = str(tmp_path / "dlq.db")
    open_dlq(path).close()
    with open_dlq(path, create=False) as dlq:
        assert len(dlq) == 0


def test_a_libpq_key_value_string_is_a_postgresql_dlq_not_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a libpq connection string to a port where nothing listens
    monkeypatch.chdir(tmp_path)
    conninfo = "host=127.0.0.1 port=1 dbname=test password=hunter2"

    # When open_dlq opens it, then it connects to PostgreSQL and creates no file
    with pytest.raises(missive.DLQError, match=r"127\.0\.0\.1:1/test") as raised:
        open_dlq(conninfo)
    assert "hunter2" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []
