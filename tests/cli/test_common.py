"""The pieces every command shares: times, ids and URLs as the user types them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from missive.cli._common import CLIError, format_id, parse_id, parse_time, redact, redact_text

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", NOW - timedelta(seconds=30)),
        ("90m", NOW - timedelta(minutes=90)),
        ("1h", NOW - timedelta(hours=1)),
        ("2d", NOW - timedelta(days=2)),
        ("1w", NOW - timedelta(weeks=1)),
        ("2026-11-28T10:00:00Z", datetime(2026, 11, 28, 10, tzinfo=UTC)),
        ("2026-11-28T10:00:00+02:00", datetime(2026, 11, 28, 8, tzinfo=UTC)),
        ("2026-11-28 10:00", datetime(2026, 11, 28, 10, tzinfo=UTC)),
        ("2026-11-28", datetime(2026, 11, 28, tzinfo=UTC)),
    ],
)
def test_times_are_iso_8601_in_utc_by_default_or_a_duration_ago(
    text: str, expected: datetime
) -> None:
    assert parse_time(text, now=NOW) == expected


def test_a_time_that_is_neither_is_refused() -> None:
    with pytest.raises(CLIError, match="ISO-8601"):
        parse_time("last tuesday")


@pytest.mark.parametrize(
    "message_id", [b"order-1", b"a:b/c", b"", b"with space", b"\x00\xff", b"hex:41", "é".encode()]
)
def test_every_id_reads_back_as_it_was_shown(message_id: bytes) -> None:
    assert parse_id(format_id(message_id)) == message_id


def test_ids_that_are_plain_text_are_shown_as_they_are() -> None:
    assert format_id(b"9d81-1") == "9d81-1"
    assert format_id(b"\x1b[2J") == "hex:1b5b324a"


def test_a_password_in_a_url_is_hidden() -> None:
    assert redact("postgresql://me:s3cret@db:5432/app") == "postgresql://me:***@db:5432/app"
    assert redact("postgresql://me@db/app") == "postgresql://me@db/app"
    assert redact("dlq.db") == "dlq.db"


@pytest.mark.parametrize(
    "text",
    ["99999999999d", "3000000w", "9" * 5000 + "s", "9999-12-31T23:59:59-23:59",
     "0001-01-01T00:00:00+23:59"],
)  # fmt: skip
def test_a_time_beyond_the_calendar_is_refused(text: str) -> None:
    with pytest.raises(CLIError, match="cannot read the time"):
        parse_time(text, now=NOW)


@pytest.mark.parametrize("text", ["\u00b2d", "\u0663d", "\uff13h"])
def test_a_duration_is_written_in_ascii_digits(text: str) -> None:
    with pytest.raises(CLIError, match="cannot read the time"):
        parse_time(text, now=NOW)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("host=db dbname=app password=s3cret", "host=db dbname=app password=***"),
        ("password = 's3 cr\\'et' host=db", "password = *** host=db"),
        ("postgresql://me:s3cret@[::1/app", "postgresql://me:***@[::1/app"),
        ("postgresql://me@db/app?password=s3cret&sslmode=require",
         "postgresql://me@db/app?password=***&sslmode=require"),
        ("postgresql://me:s3/cret@db/app", "postgresql://me:***@db/app"),
    ],
)  # fmt: skip
def test_a_password_in_a_key_value_string_or_a_malformed_url_is_hidden(
    location: str, expected: str
) -> None:
    assert redact(location) == expected


def test_a_short_password_is_hidden_in_an_error_text_without_mangling_its_words() -> None:
    text = 'cannot open u:p@h: password "p" refused'

    assert redact_text(text, "mysql://u:p@h") == 'cannot open u:***@h: password "***" refused'


def test_a_password_in_a_key_value_string_that_does_not_parse_is_hidden() -> None:
    assert redact("host=db password='s3 cret") == "host=db password=***"
