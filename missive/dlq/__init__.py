"""Dead-letter queues: where messages that cannot be handled are kept.

A DLQ is any ``MutableMapping[bytes, tuple[Message, str]]``; a ``dict`` will do in
tests. The stores here keep dead letters durably and describe them with a
:class:`DeadLetter` record: ``missive.dlq.sqlite.SQLiteDLQ`` (standard library only)
and ``missive.dlq.postgres.PostgresDLQ`` (``missive[postgres]``);
:func:`open_dlq` opens either from a path or URL. This package imports no database driver: only
importing a backend's module loads it.
"""

from missive.dlq._location import open_dlq
from missive.dlq.base import DeadLetter, DeadLetterStore

__all__ = ["DeadLetter", "DeadLetterStore", "open_dlq"]
