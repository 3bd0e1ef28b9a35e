"""The web console of a DLQ: ``missive dlq serve``.

A small WSGI application (:class:`~missive.console.app.Console`) with
server-rendered pages: the failure groups, the list of dead letters with filters,
one dead letter, and the actions replay, archive and purge, each recorded in the
DLQ's audit table. Every request must carry the console's token
(:mod:`missive.console.access`); it binds to loopback by default.
See ``docs/console.md``.
"""

from missive.console.actions import Replayer
from missive.console.app import Console

__all__ = ["Console", "Replayer"]
