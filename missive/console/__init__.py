"""The web console of a DLQ: ``missive dlq serve``.

A small WSGI application (:class:`~missive.console.app.Console`) with
server-rendered pages: the failure groups, the list of dead letters with filters,
one dead letter, and the actions replay, archive and purge, each recorded in the
DLQ's audit table. It has no authentication: it binds to loopback by default.
See ``docs/dlq.md``, "Web console".
"""

from missive.console.actions import Replayer
from missive.console.app import Console

__all__ = ["Console", "Replayer"]
