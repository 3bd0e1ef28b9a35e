"""Where a PostgresDLQ's connections come from: its own (one a process), or those it was given.

Imported only by :mod:`missive.dlq.postgres`, which turns a missing psycopg into
:class:`~missive.MissingExtraError` before importing this module.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import psycopg
from psycopg.pq import TransactionStatus

from missive.dlq._postgres_session import connect, describe, describe_connection
from missive.errors import DLQError

__all__ = ["ConnectionPoolLike", "Connections"]

logger = logging.getLogger("missive.dlq.postgres")

# Connections a forked child inherited: never used or closed by the child (that would
# end the parent's session), only kept from being garbage-collected there.
_inherited: list[psycopg.Connection[Any]] = []
_all: weakref.WeakSet[Connections] = weakref.WeakSet()
_A_POOL = "a connection pool"


def _after_fork_in_child() -> None:
    # A parent thread may have held a lock at fork(); the child gets new ones.
    for connections in list(_all):
        connections.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ConnectionPoolLike(Protocol):
    """What PostgresDLQ needs of a pool: ``psycopg_pool.ConnectionPool`` has it."""

    def connection(
        self, timeout: float | None = None
    ) -> AbstractContextManager[psycopg.Connection[Any]]:
        """Lend a connection for the ``with`` block, then take it back."""


class Connections:
    """Lends one connection at a time to a store's operations.

    From a URL: one autocommit connection a process, owned, guarded by :attr:`lock`,
    replaced on the next use after it broke, and replaced in a forked child. From
    a connection: that one, under the lock, never closed here. From a pool: the
    pool's, without the lock (the pool is thread-safe), never closed here.
    """

    def __init__(
        self,
        source: str | psycopg.Connection[Any] | ConnectionPoolLike,
        *,
        application_name: str,
        connect_timeout: float,
        statement_timeout: float,
        read_only: bool = False,
    ) -> None:
        self.lock = threading.Lock()
        self.closed = False
        self.dsn: str | None = None
        self._pid = os.getpid()
        self._given: psycopg.Connection[Any] | None = None
        self._pool: ConnectionPoolLike | None = None
        self._own: psycopg.Connection[Any] | None = None
        self._options = (application_name, connect_timeout, statement_timeout, read_only)
        if isinstance(source, str):
            self.dsn = source
            #: Where the connections go, as ``postgresql://user@host:port/db`` (no password).
            self.where = describe(source)
            self._own = self._connect()
        elif isinstance(source, psycopg.Connection):
            self._given = source
            self.where = describe_connection(source)
        elif callable(getattr(source, "connection", None)):
            self._pool = source
            self.where = _A_POOL
        else:
            raise TypeError(
                "PostgresDLQ needs a postgresql:// URL, a psycopg.Connection or a "
                f"connection pool, not {type(source).__name__}"
            )
        _all.add(self)

    def _connect(self) -> psycopg.Connection[Any]:
        assert self.dsn is not None
        application_name, connect_timeout, statement_timeout, read_only = self._options
        return connect(
            self.dsn,
            self.where,
            application_name=application_name,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            read_only=read_only,
        )

    @contextmanager
    def borrow(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one operation.

        :raises DLQError: if closed, if a given connection is inside a transaction
            or was inherited through ``fork()``, or if reconnecting fails.
        """
        if self._pool is not None:
            self._check_usable()
            with self._pool.connection() as conn:
                if self.where is _A_POOL:  # known once a connection is lent
                    self.where = describe_connection(conn)
                yield conn
            return
        with self.lock:
            self._check_usable()
            conn = self._current() if self._given is None else self._given
            if conn is self._given and conn.info.transaction_status != TransactionStatus.IDLE:
                raise DLQError(
                    f"PostgreSQL DLQ at {self.where}: the connection it was given is inside "
                    "a transaction (or broken); give the DLQ a connection of its own"
                )
            try:
                yield conn
            except psycopg.Error:
                if self._own is not None and (conn.broken or conn.closed):
                    self._own.close()
                    self._own = None
                raise

    def _current(self) -> psycopg.Connection[Any]:
        # Call with the lock held, on a store that owns its connection.
        if self._pid != os.getpid():
            if self._own is not None:
                _inherited.append(self._own)
            self._own, self._pid = None, os.getpid()
        if self._own is None:
            self._own = self._connect()
            logger.info("connected DLQ %s again", self.where)
        return self._own

    def _check_usable(self) -> None:
        if self.closed:
            raise DLQError(f"the PostgreSQL DLQ at {self.where} is closed; open a new PostgresDLQ")
        if self._pid != os.getpid() and self.dsn is None:
            raise DLQError(
                f"the PostgreSQL DLQ at {self.where} was given a connection or pool by the "
                "parent process; a forked child must open its own PostgresDLQ"
            )

    def close(self) -> bool:
        """Close the owned connection, if any; ``False`` if already closed."""
        with self.lock:
            if self.closed:
                return False
            self.closed = True
            own, self._own = self._own, None
            if own is not None:
                if self._pid == os.getpid():
                    own.close()
                else:
                    _inherited.append(own)
        return True
