"""SQLStore: what a DLQ kept in an SQL table does alike in every dialect.

The statements it runs, and the dialects, are in :mod:`missive.dlq._sql`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from datetime import datetime
from operator import itemgetter
from typing import Any

from missive.dlq._codec import MessageClasses, dead_letter, paged
from missive.dlq._sql import Statements
from missive.dlq.base import DeadLetter, DeadLetterStore

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
    ) -> Iterator[DeadLetter]:
        """The records, oldest first; see :meth:`DeadLetterStore.records`.

        Rows are read a page at a time, each page its own query: no lock or
        transaction is held between records, and rows written meanwhile may or may
        not appear.
        """
        where, params = self._sql.dialect.filters(reason, handler, since, before)
        query = self._sql.select(where)

        def fetch(after: int, count: int) -> list[Any]:
            return self._execute("read dead letters", query, (after, *params, count))

        return map(self._dead_letter, paged(fetch, limit, PAGE))

    def _dead_letter(self, row: Sequence[Any]) -> DeadLetter:
        (_, message_id, raw_data, class_name, attributes, reason, summary, handler, exc_type,
         traceback, first, last, times) = row  # fmt: skip
        read_time = self._sql.dialect.read_time
        if read_time is not None:
            first, last = read_time(first), read_time(last)
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
        )

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
