"""What the SQL stores share: the columns, the tables, the statements and the filters.

The statements and tables are written once. A :class:`Dialect` says how one database
spells a parameter, finds a text in another and names its column types, and how it
stores text and times (:data:`SQLITE`, :data:`POSTGRES`); each store fills in
``{table}`` and ``{attempts}``, its two tables (:class:`Statements`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from missive.dlq._codec import (
    checked_entry,
    encode_attributes,
    format_time,
    parse_time,
    reason_fields,
    utc,
)
from missive.message import Message

__all__ = ["AUDIT_COLUMNS", "COLUMNS", "POSTGRES", "SQLITE", "Dialect", "Statements"]

#: The dead letters' columns, in the order every query reads them.
COLUMNS = (
    "seq", "message_id", "raw_data", "message_class", "attributes", "reason", "summary",
    "handler", "exc_type", "traceback", "first_dead_lettered_at", "dead_lettered_at", "times",
    "archived_at", "expires_at",
)  # fmt: skip
# A write gives these: the key, then Dialect.fields; times starts at 1.
_WRITTEN = COLUMNS[1 : COLUMNS.index("times")]
# A rewrite keeps seq, the key, the bytes and the first time, and counts one more.
_REPLACED = (
    "message_class", "attributes", "reason", "summary", "handler", "exc_type", "traceback",
    "dead_lettered_at",
)  # fmt: skip
_SET = ",\n    ".join(f"{column} = excluded.{column}" for column in _REPLACED)
# Stores under a key that is free or holds the same bytes; no row back means the key
# holds another payload, which is never replaced (the next key is tried).
_ROW = f"({', '.join(['?'] * len(_WRITTEN))}, 1)"
_CONFLICT = f"""
ON CONFLICT (message_id) DO UPDATE SET
    {_SET},
    times = d.times + 1,
    archived_at = NULL,
    expires_at = NULL
WHERE d.raw_data = excluded.raw_data"""
_INSERT = f"INSERT INTO {{table}} AS d ({', '.join(_WRITTEN)}, times)\nVALUES "
_UPSERT = f"{_INSERT}{_ROW}{_CONFLICT}\nRETURNING seq"
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM {{table}}"  # noqa: S608 - constants only

# The two tables, each column's type named by its kind (Dialect.types).
_DEAD_LETTERS_TABLE = """CREATE TABLE IF NOT EXISTS {{table}} (
        seq {serial},
        message_id {bytes} NOT NULL UNIQUE,
        raw_data {bytes} NOT NULL,
        message_class {text} NOT NULL,
        attributes {text} NOT NULL,
        reason {text} NOT NULL,
        summary {text} NOT NULL,
        handler {text},
        exc_type {text},
        traceback {text},
        first_dead_lettered_at {time} NOT NULL,
        dead_lettered_at {time} NOT NULL,
        times {integer} NOT NULL DEFAULT 1,
        archived_at {time},
        expires_at {time}
    )"""
_ATTEMPTS_TABLE = """CREATE TABLE IF NOT EXISTS {{attempts}} (
        message_id {bytes} PRIMARY KEY,
        attempts {integer} NOT NULL,
        last_attempt_at {time} NOT NULL
    )"""
# Schema version 2: what an older table lacks (archiving) and the audit table.
_ARCHIVE_COLUMNS = ("archived_at {time}", "expires_at {time}")
_AUDIT_TABLE = """CREATE TABLE IF NOT EXISTS {{audit}} (
        seq {serial},
        at {time} NOT NULL,
        operation {text} NOT NULL,
        ids {text} NOT NULL,
        count {integer} NOT NULL,
        selection {text},
        user_name {text} NOT NULL,
        command {text} NOT NULL,
        outcome {text} NOT NULL,
        original_data {bytes}
    )"""
#: The audit table's columns, in the order :meth:`Statements.history` reads them.
AUDIT_COLUMNS = (
    "at", "operation", "ids", "count", "selection", "user_name", "command", "outcome",
    "original_data",
)  # fmt: skip


@dataclass(frozen=True)
class Dialect:
    """How one database spells and stores what the SQL stores share."""

    #: A parameter's placeholder.
    mark: str
    #: The function giving where a text is in another (0: nowhere).
    find: str
    #: The type of each kind of column: ``serial`` (the primary key, in the order rows
    #: were added), ``bytes``, ``text``, ``time`` and ``integer``.
    types: Mapping[str, str]
    #: A ``str`` as the database can keep it (``None``: as it is).
    text: Callable[[str], str] | None = None
    #: An aware UTC datetime as the database keeps it (``None``: as it is).
    time: Callable[[datetime], Any] | None = None
    #: A stored time as an aware datetime (``None``: as it is).
    read_time: Callable[[Any], datetime] | None = None

    def sql(self, template: str) -> str:
        """``template`` with its ``?`` placeholders in this dialect."""
        return template if self.mark == "?" else template.replace("?", self.mark)

    def tables(self) -> tuple[str, str]:
        """The statements creating the dead letters' table and the attempts' table."""
        return _DEAD_LETTERS_TABLE.format(**self.types), _ATTEMPTS_TABLE.format(**self.types)

    def upgrade(self) -> tuple[tuple[str, ...], str]:
        """Schema version 2: the columns to add to an older dead letters' table (as
        ``name type``), and the statement creating the audit table."""
        columns = tuple(column.format(**self.types) for column in _ARCHIVE_COLUMNS)
        return columns, _AUDIT_TABLE.format(**self.types)

    def fields(
        self, message: Message, reason: str, stamp: Any = None, attributes: str | None = None
    ) -> tuple[Any, ...]:
        """What the upsert stores after the key: the message, its reason and the time.

        ``stamp``: the time as :meth:`now` gives it (default: now); ``attributes``: the
        message's attributes already encoded (default: encoded here)."""
        full, summary, handler, exc_type, traceback = reason_fields(reason)
        class_name, text = message.class_name, self.text
        if text is not None:
            class_name, full, summary = text(class_name), text(full), text(summary)
            handler, exc_type, traceback = (
                None if value is None else text(value) for value in (handler, exc_type, traceback)
            )
        if stamp is None:
            stamp = self.now()
        if attributes is None:
            attributes = encode_attributes(message.attributes)
        return (
            message.raw_data,
            class_name,
            attributes,
            full,
            summary,
            handler,
            exc_type,
            traceback,
            stamp,
            stamp,
        )

    def rows(
        self, entries: Iterable[tuple[bytes, tuple[Message, str]]], at: datetime | None = None
    ) -> list[tuple[bytes, bytes, tuple[Any, ...]]]:
        """Each entry checked (:func:`checked_entry`) as ``(message_id, raw_data,
        fields)``, all stamped with one time (``at``, aware, or now).

        A batch's messages often have the same attributes (a transport gives every
        plain delivery the same): they are encoded once.
        """
        stamp = self.now() if at is None else self.stored_time(at)
        encoded: dict[tuple[tuple[str, Any], ...], str] = {}
        rows = []
        for message_id, value in entries:
            message, reason = checked_entry(message_id, value)
            mapping = message.attributes
            same = _plain_items(mapping)
            attributes = None if same is None else encoded.get(same)
            if attributes is None:
                attributes = encode_attributes(mapping)
                if same is not None:
                    encoded[same] = attributes
            fields = self.fields(message, reason, stamp, attributes)
            rows.append((message_id, message.raw_data, fields))
        return rows

    def filters(
        self,
        reason: str | None,
        handler: str | None,
        since: datetime | None,
        before: datetime | None,
        archived: bool | None = False,
    ) -> tuple[str, list[Any]]:
        """The ``WHERE`` conditions of :meth:`DeadLetterStore.records`' filters, after
        ``seq > ?`` (the page's start), and their parameters."""
        where = ["seq > ?"]
        if archived is not None:
            where.append(f"archived_at IS {'NOT ' if archived else ''}NULL")
        params: list[Any] = []
        text, time = self.text or _same, self.time or _same
        if reason is not None:
            where.append(f"{self.find}(reason, ?) > 0")
            params.append(text(reason))
        if handler is not None:
            where.append("handler = ?")
            params.append(text(handler))
        if since is not None:
            where.append("dead_lettered_at >= ?")
            params.append(time(utc(since, "since")))
        if before is not None:
            where.append("dead_lettered_at < ?")
            params.append(time(utc(before, "before")))
        return " AND ".join(where), params

    def now(self) -> Any:
        """The time now, as the database keeps times."""
        return self.stored_time(datetime.now(UTC))

    def stored_time(self, moment: datetime) -> Any:
        """``moment`` (aware) as the database keeps times."""
        return moment if self.time is None else self.time(moment)


# Values that are equal only when their JSON is the same (not bool, 1 == True; not
# float, 0.0 == -0.0).
_PLAIN = frozenset({str, int, bytes, type(None)})


def _plain_items(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...] | None:
    """``mapping``'s items, when each key is a ``str`` and each value of a type in
    ``_PLAIN``, so that equal items are encoded alike; otherwise ``None``."""
    items = tuple(mapping.items())
    for key, value in items:
        if type(key) is not str or type(value) not in _PLAIN:
            return None
    return items


def _same(value: Any) -> Any:
    return value


def _nul_free(value: str) -> str:
    """``value`` as PostgreSQL text can hold it: NUL as U+FFFD."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


#: SQLite: times as fixed-width ISO-8601 UTC text, which sorts as time does.
SQLITE = Dialect(
    "?",
    "instr",
    {
        "serial": "INTEGER PRIMARY KEY",
        "bytes": "BLOB",
        "text": "TEXT",
        "time": "TEXT",
        "integer": "INTEGER",
    },
    time=format_time,
    read_time=parse_time,
)
#: PostgreSQL: text cannot hold NUL.
POSTGRES = Dialect(
    "%s",
    "strpos",
    {
        "serial": "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "bytes": "bytea",
        "text": "text",
        "time": "timestamptz",
        "integer": "integer",
    },
    text=_nul_free,
)


class Statements:
    """A store's statements, each made once with its tables filled in by ``render``."""

    def __init__(self, dialect: Dialect, render: Callable[[str], Any]) -> None:
        #: How the store's database spells and stores things.
        self.dialect = dialect
        self._render = render
        self.upsert = self.make(_UPSERT)
        self._upserts: dict[int, Any] = {}
        self.select_one = self.make(f"{_SELECT} WHERE message_id = ?")
        self.contains = self.make("SELECT 1 FROM {table} WHERE message_id = ?")
        self.delete = self.make("DELETE FROM {table} WHERE message_id = ?")
        #: Deletes the ids given as one array parameter (PostgreSQL only).
        self.delete_any = self.make("DELETE FROM {table} WHERE message_id = ANY(?)")
        self.ids = self.make(
            "SELECT seq, message_id FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?"
        )
        self.count = self.make("SELECT count(*) FROM {table}")
        self.count_attempt = self.make(
            "INSERT INTO {attempts} AS a VALUES (?, 1, ?) ON CONFLICT (message_id) "
            "DO UPDATE SET attempts = a.attempts + 1, "
            "last_attempt_at = excluded.last_attempt_at RETURNING attempts"
        )
        self.forget_attempts = self.make("DELETE FROM {attempts} WHERE message_id = ?")
        self.archive = self.make(
            "UPDATE {table} SET archived_at = ?, expires_at = ? WHERE message_id = ?"
        )
        self.unarchive = self.make(
            "UPDATE {table} SET archived_at = NULL, expires_at = NULL "
            "WHERE message_id = ? AND archived_at IS NOT NULL"
        )
        self.expire = self.make(
            "DELETE FROM {table} WHERE archived_at IS NOT NULL AND expires_at <= ?"
        )
        names = ", ".join(AUDIT_COLUMNS)
        marks = ", ".join(["?"] * len(AUDIT_COLUMNS))
        self.audit = self.make(f"INSERT INTO {{audit}} ({names}) VALUES ({marks})")  # noqa: S608
        self.history = self.make(
            f"SELECT {names} FROM {{audit}} ORDER BY seq DESC LIMIT ?"  # noqa: S608
        )

    def make(self, template: str) -> Any:
        """``template`` in the store's dialect and with its tables."""
        return self._render(self.dialect.sql(template))

    def upsert_rows(self, count: int) -> Any:
        """The upsert of ``count`` rows in one statement, without ``RETURNING``: a row
        not written (its key holds another payload) is told by the count of changes."""
        statement = self._upserts.get(count)
        if statement is None:
            rows = ",\n".join([_ROW] * count)
            statement = self._upserts[count] = self.make(f"{_INSERT}{rows}{_CONFLICT}")
        return statement

    def select(self, where: str) -> Any:
        """The dead letters matching ``where``, oldest first, ``LIMIT ?`` of them."""
        return self.make(f"{_SELECT} WHERE {where} ORDER BY seq LIMIT ?")
