"""open_dlq: a DLQ from a path or URL, as the command line and configuration give it."""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from missive.dlq.base import DeadLetterStore
from missive.errors import DLQError

__all__ = ["open_dlq"]


def open_dlq(
    location: str, *, create: bool = True, read_only: bool = False, **options: Any
) -> DeadLetterStore:
    """Open the DLQ at ``location``: a file path, ``sqlite:///path`` or ``postgresql://...``.

    A bare path (``dlq.db``) and ``sqlite:///dlq.db`` are an SQLite file relative to
    the working directory; ``sqlite:////var/dlq.db`` is absolute. ``postgresql://``
    and ``postgres://`` URLs need ``missive[postgres]``. With ``create=False`` a
    missing file or table is an error instead of being created (for tools that only
    inspect a DLQ). With ``read_only=True`` the store changes nothing (an SQLite file
    is opened read-only, a PostgreSQL session is read-only) and must exist.
    ``options`` go to the store's constructor.

    :raises DLQError: if the scheme is unknown or the store cannot be opened.
    :raises MissingExtraError: if the backend's optional dependency is missing.
    """
    scheme = urlsplit(location).scheme.lower() if "://" in location else ""
    if scheme in ("", "sqlite"):
        from missive.dlq.sqlite import SQLiteDLQ

        path = location[len("sqlite:///") :] if scheme else location
        if scheme and not location.startswith("sqlite:///"):
            raise DLQError(
                f"cannot open DLQ {location!r}: write SQLite URLs as sqlite:///relative/path "
                "or sqlite:////absolute/path"
            )
        return SQLiteDLQ(path, create=create, read_only=read_only, **options)
    if scheme in ("postgresql", "postgres"):
        # Imported by name so that the core never imports a database driver.
        module = importlib.import_module("missive.dlq.postgres")
        store: DeadLetterStore = module.PostgresDLQ(
            location, create=create, read_only=read_only, **options
        )
        return store
    raise DLQError(
        f"cannot open DLQ {location!r}: unknown scheme {scheme!r}; use a file path, "
        "sqlite:///path or postgresql://user@host/database"
    )
