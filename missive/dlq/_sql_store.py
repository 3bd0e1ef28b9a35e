"""SQLStore: what a DLQ kept in an SQL table does alike in every dialect.

The statements it runs, and the dialects, are in :mod:`missive.dlq._sql`.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from missive.dlq._codec import MessageClasses, checked_entry, dead_letter, paged, utc
from missive.dlq._sql import Statements
from missive.dlq.audit import AuditEntry
from missive.dlq.base import DeadLetter, DeadLetterStore
from missive.message import Message

__all__ = ["PAGE", "SQLStore"]

#: How many rows a query reads at a time.
PAGE = 500


class SQLStore(DeadLetterStore):
    """What a DLQ kept in an SQL table does alike in every dialect: reading records,
    looking up, iterating and counting.

    A store sets :attr:`_sql` (its :class:`Statements`) and :attr:`_classes`, runs
    queries in :meth:`_execute`, and writes as its database needs.
    """

    _sql: Statements
    _classes: MessageClasses

    @abc.abstractmethod
    def _execute(self, what: str, query: Any, params: tuple[Any, ...] = ()) -> list[Any]:
        """The rows of ``query``; :class:`~missive.DLQError` saying ``what`` failed."""

    @abc.abstractmethod
    def _write_all(
        self, what: str, steps: Sequence[tuple[Any, Sequence[tuple[Any, ...]]]]
    ) -> list[int]:
        """Run each step's query once for each of its parameter tuples, all in one
        transaction; how many rows each step changed. :class:`~missive.DLQError`
        saying ``what`` failed (and nothing written) otherwise."""

    def record(self, message_id: bytes) -> DeadLetter:
        """The record of ``message_id``; see :meth:`DeadLetterStore.record`."""
        if type(message_id) is not bytes:
            raise KeyError(message_id)
        rows = self._execute(
            f"read dead letter {message_id!r}", self._sql.select_one, (message_id,)
        )
        if not rows:
            raise KeyError(message_id)
        return self._dead_letter(rows[0])

    def records(
        self,
        *,
        reason: str | None = None,
        handler: str | None = None,
        since: datetime | None = None,
        before: datetime | None = None,
        limit: int | None = None,
        archived: bool | None = False,
    ) -> Iterator[DeadLetter]:
        """The records, oldest first; see :meth:`DeadLetterStore.records`.

        Rows are read a page at a time, each page its own query: no lock or
        transaction is held between records, and rows written meanwhile may or may
        not appear.
        """
        where, params = self._sql.dialect.filters(reason, handler, since, before, archived)
        query = self._sql.select(where)

        def fetch(after: int, count: int) -> list[Any]:
            return self._execute("read dead letters", query, (after, *params, count))

        return map(self._dead_letter, paged(fetch, limit, PAGE))

    def _dead_letter(self, row: Sequence[Any]) -> DeadLetter:
        (_, message_id, raw_data, class_name, attributes, reason, summary, handler, exc_type,
         traceback, first, last, times, archived_at, expires_at) = row  # fmt: skip
        read_time = self._sql.dialect.read_time
        if read_time is not None:
            first, last = read_time(first), read_time(last)
            archived_at, expires_at = (
                None if value is None else read_time(value) for value in (archived_at, expires_at)
            )
        return dead_letter(
            self._classes,
            message_id,
            raw_data,
            class_name,
            attributes,
            (reason, summary, handler, exc_type, traceback),
            first,
            last,
            times,
            (archived_at, expires_at),
        )

    def archive(self, message_ids: Iterable[bytes], expires_at: datetime) -> int:
        """Archive those of ``message_ids`` stored; see :meth:`DeadLetterStore.archive`."""
        time = self._time
        until, now = time(utc(expires_at, "expires_at")), time(datetime.now(UTC))
        keys = [(now, until, key) for key in _keys(message_ids)]
        if not keys:
            return 0
        what = f"archive {len(keys)} dead letter(s)"
        return self._write_all(what, [(self._sql.archive, keys)])[0]

    def unarchive(self, message_ids: Iterable[bytes]) -> int:
        """Show archived ones again; see :meth:`DeadLetterStore.unarchive`."""
        keys = [(key,) for key in _keys(message_ids)]
        if not keys:
            return 0
        what = f"unarchive {len(keys)} dead letter(s)"
        return self._write_all(what, [(self._sql.unarchive, keys)])[0]

    def expire(self, now: datetime | None = None) -> int:
        """Delete archived ones past expiry; see :meth:`DeadLetterStore.expire`."""
        moment = self._time(utc(now, "now") if now is not None else datetime.now(UTC))
        return self._write_all("expire archived dead letters", [(self._sql.expire, [(moment,)])])[0]

    def replace(self, message_id: bytes, value: tuple[Message, str]) -> None:
        """Store ``value`` in place of ``message_id``'s record, in one transaction; see
        :meth:`DeadLetterStore.replace`."""
        message, reason = checked_entry(message_id, value)
        fields = self._sql.dialect.fields(message, reason)
        self._write_all(
            f"replace dead letter {message_id!r}",
            [(self._sql.delete, [(message_id,)]), (self._sql.upsert, [(message_id, *fields)])],
        )

    def audit(self, entry: AuditEntry) -> None:
        """Append ``entry`` to the audit table; see :meth:`DeadLetterStore.audit`."""
        text = self._sql.dialect.text or _same
        row = (
            self._time(utc(entry.at, "at")),
            entry.operation,
            json.dumps(list(entry.ids)),
            entry.count,
            None if entry.selection is None else text(entry.selection),
            text(entry.user),
            text(entry.command),
            text(entry.outcome),
            entry.original,
        )
        self._write_all(f"record {entry.operation} in the audit table", [(self._sql.audit, [row])])

    def history(self, limit: int | None = None) -> list[AuditEntry]:
        """The audit entries, newest first; see :meth:`DeadLetterStore.history`."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be 0 or more, not {limit}")
        count = 2**62 if limit is None else limit
        rows = self._execute("read the audit table", self._sql.history, (count,))
        read_time = self._sql.dialect.read_time or _same
        return [
            AuditEntry(
                operation=operation,
                ids=tuple(json.loads(ids)),
                count=count,
                selection=selection,
                user=user,
                command=command,
                outcome=outcome,
                at=read_time(at).astimezone(UTC),
                original=None if original is None else bytes(original),
            )
            for at, operation, ids, count, selection, user, command, outcome, original in rows
        ]

    def _time(self, moment: datetime) -> Any:
        return moment if self._sql.dialect.time is None else self._sql.dialect.time(moment)

    def __contains__(self, message_id: object) -> bool:
        if type(message_id) is not bytes:
            return False
        return bool(self._execute(f"look up {message_id!r}", self._sql.contains, (message_id,)))

    def __iter__(self) -> Iterator[bytes]:
        def fetch(after: int, count: int) -> list[Any]:
            return self._execute("list dead letters", self._sql.ids, (after, count))

        return map(itemgetter(1), paged(fetch, None, PAGE))

    def __len__(self) -> int:
        count: int = self._execute("count", self._sql.count)[0][0]
        return count


def _keys(message_ids: Iterable[bytes]) -> list[bytes]:
    return [key for key in dict.fromkeys(message_ids) if type(key) is bytes]


def _same(value: Any) -> Any:
    return value
