"""Whether an SQLiteDLQ's file is still the file it opened: same inode, a sound header.

SQLite keeps writing through the descriptor it opened, and trusts the pages it has
cached: after ``rm dlq.db*`` it writes into a file no one can open again, and after
``truncate -s 0 dlq.db`` or a copy over the file it goes on as if nothing happened.
:class:`FileIdentity` notices, from an ``os.stat`` and the file's first 100 bytes.
"""

from __future__ import annotations

import os
import threading

from missive.errors import DLQError

__all__ = ["APPLICATION_ID", "FileIdentity"]

#: ``PRAGMA application_id`` of a file that Missive's DLQ owns: "MSVD".
APPLICATION_ID = int.from_bytes(b"MSVD", "big")

_MAGIC = b"SQLite format 3\x00"
_HEADER = 100

# One descriptor per database file and process, shared by every store on it. Closing
# any descriptor of a file drops all the POSIX locks the process holds on it, SQLite's
# included, so the header is never read through a descriptor opened and closed per
# write; this one is closed only when the last store on the file has closed.
_probes: dict[tuple[int, int], list[int]] = {}  # (device, inode) -> [fd, stores]
_probes_lock = threading.Lock()


def _application_id(header: bytes) -> int:
    return int.from_bytes(header[68:72], "big")


class FileIdentity:
    """The device, inode and application id of a database file, to compare later.

    :raises OSError: if the file cannot be opened or changed while being opened.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        stat = os.stat(path)
        self._inode = (stat.st_dev, stat.st_ino)
        with _probes_lock:
            probe = _probes.get(self._inode)
            if probe is None:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                opened = os.fstat(fd)
                if (opened.st_dev, opened.st_ino) != self._inode:
                    os.close(fd)  # not the file SQLite holds: its locks are not ours
                    raise FileNotFoundError(path)
                probe = _probes[self._inode] = [fd, 0]
            probe[1] += 1
        self._fd = probe[0]
        self._released = False
        header = os.pread(self._fd, _HEADER, 0)
        # Until a checkpoint copies the first page, the file may not show the id yet.
        self._ids = {_application_id(header), APPLICATION_ID} if header else {APPLICATION_ID}

    def release(self) -> None:
        """Give up the shared descriptor; call after closing the SQLite connection."""
        with _probes_lock:
            if self._released:
                return
            self._released = True
            probe = _probes.get(self._inode)
            if probe is not None and probe[0] == self._fd:
                probe[1] -= 1
                if probe[1] == 0:
                    del _probes[self._inode]
                    os.close(self._fd)

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
            header = os.pread(self._fd, _HEADER, 0)
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
