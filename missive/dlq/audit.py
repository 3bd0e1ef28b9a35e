"""The audit trail of a DLQ: :class:`AuditEntry`, one for each operation run on it.

The ``missive dlq`` commands that change a DLQ (replay, edit, archive, unarchive,
expire, purge, rm) each record one entry after they ran, with their outcome;
``missive dlq history`` lists them. Stores keep them in a table of their own
(:meth:`~missive.dlq.DeadLetterStore.audit`, :meth:`~missive.dlq.DeadLetterStore.history`).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = ["MAX_IDS", "AuditEntry", "current_user"]

#: At most this many ids are kept in an entry; an operation on more keeps the count
#: and the selection (the filters) that chose them.
MAX_IDS = 100


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One operation on a DLQ, as the audit table keeps it.

    ``original`` (the payload's bytes before ``missive dlq edit`` changed them) is
    left out of the ``repr``: it is a payload.
    """

    #: What was done: ``replay``, ``edit``, ``archive``, ``unarchive``, ``expire``,
    #: ``purge`` or ``rm``.
    operation: str
    #: The ids it was run on, as the CLI prints them (at most :data:`MAX_IDS`).
    ids: tuple[str, ...]
    #: How many dead letters it was run on (may be more than ``len(ids)``).
    count: int
    #: The filters that chose them (``--group ...``, ``--reason ...``), if any.
    selection: str | None
    #: The operating-system user who ran it.
    user: str
    #: The command line, with any password redacted.
    command: str
    #: What became of it, in a few words (``3 archived``, ``failed: ...``).
    outcome: str
    #: When it ran (aware, UTC).
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: The payload before an edit, else ``None``.
    original: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.ids) > MAX_IDS:
            object.__setattr__(self, "ids", self.ids[:MAX_IDS])


def current_user() -> str:
    """The operating-system user running this process; ``"unknown"`` if none can be told.

    :func:`getpass.getuser` reads the environment, then the password database, and
    raises when neither knows (a container running as a uid with no name).
    """
    try:
        return getpass.getuser() or "unknown"
    except Exception:  # OSError, KeyError, ImportError: pwd missing or uid unknown
        return "unknown"
