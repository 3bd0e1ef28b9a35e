"""Whether an SQLiteDLQ's file is still the file it opened: same inode, a sound header.

SQLite keeps writing through the descriptor it opened, and trusts the pages it has
cached: after ``rm dlq.db*`` it writes into a file no one can open again, and after
``truncate -s 0 dlq.db`` or a copy over the file it goes on as if nothing happened.
:class:`FileIdentity` notices, from an ``os.stat`` and the file's first 100 bytes.
"""

from __future__ import annotations

import os

from missive.errors import DLQError

__all__ = ["APPLICATION_ID", "FileIdentity"]

#: ``PRAGMA application_id`` of a file that Missive's DLQ owns: "MSVD".
APPLICATION_ID = int.from_bytes(b"MSVD", "big")

_MAGIC = b"SQLite format 3\x00"
_HEADER = 100


def _header(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read(_HEADER)


def _application_id(header: bytes) -> int:
    return int.from_bytes(header[68:72], "big")


class FileIdentity:
    """The device, inode and application id of a database file, to compare later."""

    def __init__(self, path: str) -> None:
        self.path = path
        stat = os.stat(path)
        self._inode = (stat.st_dev, stat.st_ino)
        header = _header(path)
        # Until a checkpoint copies the first page, the file may not show the id yet.
        self._ids = {_application_id(header), APPLICATION_ID} if header else {APPLICATION_ID}

    def check(self, what: str) -> None:
        """Raise :class:`DLQError` unless the file at the path is still the one opened.

        :param what: what was being done, for the message.
        """
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self._fail(what, "was removed")
        except OSError as exc:
            self._fail(what, f"cannot be checked ({type(exc).__name__}: {exc.strerror})")
        if (stat.st_dev, stat.st_ino) != self._inode:
            self._fail(what, "was replaced by another file")
        try:
            header = _header(self.path)
        except OSError as exc:
            self._fail(what, f"cannot be read ({type(exc).__name__}: {exc.strerror})")
        if len(header) < _HEADER or not header.startswith(_MAGIC):
            self._fail(what, "was truncated or overwritten (it has no SQLite header)")
        if _application_id(header) not in self._ids:
            self._fail(what, "was overwritten by another database")
        # The page count in the header is no test of truncation: another process's
        # checkpoint writes the first page before it extends the file.

    def _fail(self, what: str, happened: str) -> None:
        raise DLQError(
            f"SQLite DLQ at {self.path!r}: cannot {what}: the file {happened} since the "
            "DLQ opened it, so nothing written now would be kept; find out who changed "
            "it, move what is left aside, and restart the worker to open the DLQ again"
        )
