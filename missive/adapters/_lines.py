"""Lines read one at a time from a file, a pipe or a terminal, none lost on a stop.

A buffered file object reads ahead: a stop then leaves lines in its buffer that
nobody handles. :func:`open_lines` reads the file descriptor itself instead. On a
regular file it reads ahead freely and, once done, leaves the offset just after the
last line handled. On a pipe or a terminal, where bytes taken cannot be given
back, it reads at most :data:`PIPE_READ` bytes at a time and returns every line it
took, even after a stop (the rest of a line begun is then read a byte at a time).
A line longer than the limit comes back as a :class:`LongLine`: its first bytes
and its size, the rest skipped.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

__all__ = [
    "DEFAULT_MAX_LINE_SIZE",
    "KEPT_BYTES",
    "NOT_YET",
    "LineReader",
    "LongLine",
    "NotYet",
    "Wakeup",
    "open_lines",
]

#: The longest line read whole by default, without its line ending: 16 MiB.
DEFAULT_MAX_LINE_SIZE = 16 * 1024 * 1024
#: How much of a line longer than the limit is kept.
KEPT_BYTES = 4096
#: The most read at once from a pipe or terminal: what a stop may still have to handle.
PIPE_READ = 8192
_FILE_READ = 65536


@dataclass(frozen=True)
class LongLine:
    """A line longer than the limit: its first :data:`KEPT_BYTES` bytes and its size."""

    head: bytes
    size: int


#: Longer waits are waits without a timeout (``select`` refuses infinity).
_LONGEST_WAIT = 86_400.0


class NotYet:
    """The type of :data:`NOT_YET`."""


#: What :meth:`LineReader.next` returns when its timeout passed before a whole line came.
NOT_YET = NotYet()


def _never() -> bool:
    return False


class Wakeup:
    """A pipe whose read end becomes readable once :meth:`set` is called.

    :meth:`set` may be called from any thread or a signal handler; after
    :meth:`close` it does nothing.
    """

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._lock = threading.Lock()
        self._closed = False

    def fileno(self) -> int:
        """The read end, for ``select``."""
        return self._read

    def set(self) -> None:
        """Make the read end readable."""
        # Never wait: a signal handler may interrupt this thread inside close().
        if not self._lock.acquire(blocking=False):
            return
        try:
            if not self._closed:
                with contextlib.suppress(BlockingIOError):
                    os.write(self._write, b"\0")
        finally:
            self._lock.release()

    def close(self) -> None:
        """Close both ends."""
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._read)
                os.close(self._write)


class LineReader:
    """Reads lines, without their line ending, one at a time.

    Each call of :meth:`next` means the line it returned before is done with;
    :meth:`close` leaves a regular file's offset just after the last such line.
    Use :func:`open_lines` to get one.
    """

    def next(
        self, stopping: Callable[[], bool] = _never, timeout: float | None = None
    ) -> bytes | LongLine | NotYet | None:
        """The next line, or ``None`` at the end of input or, once ``stopping()``, of
        the lines already taken from the input; :data:`NOT_YET` if waiting for input on
        a pipe took more than ``timeout`` seconds (``None``: wait as long as it takes)."""
        raise NotImplementedError

    def close(self) -> None:
        """Leave the input just after the last line done with, where that can be done."""


def _ending(tail: bytes | bytearray) -> int:
    """The length of the line ending that ``tail``, a line's last bytes, ends with."""
    return 2 if tail.endswith(b"\r\n") else 1 if tail.endswith(b"\n") else 0


class _DescriptorLines(LineReader):
    def __init__(
        self, stream: IO[bytes] | IO[str], fd: int, limit: int, wakeup: Wakeup | None
    ) -> None:
        self._stream = stream
        self._fd = fd
        self._limit = limit
        self._wakeup = wakeup
        self._seekable = stat.S_ISREG(os.fstat(fd).st_mode)
        self._buffer = bytearray()
        self._start = 0  # where the lines not yet returned begin in the buffer
        self._scanned = 0  # the buffer holds no newline from _start to here
        self._eof = False
        # On a regular file: the offsets after the last line returned, and done with.
        self._returned = self._done = 0
        if self._seekable:
            self._returned = self._done = self._position()
            os.lseek(fd, self._done, os.SEEK_SET)

    def _position(self) -> int:
        # A binary file object may have read ahead: start where it says it is.
        if isinstance(self._stream, io.BufferedIOBase | io.RawIOBase):
            return self._stream.tell()
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def next(
        self, stopping: Callable[[], bool] = _never, timeout: float | None = None
    ) -> bytes | LongLine | NotYet | None:
        self._done = self._returned
        while True:
            # A stop leaves a regular file's lines to the next reader; a pipe's
            # lines already taken, even one begun, are returned first.
            if stopping() and self._seekable:
                return None
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                return self._take(end + 1)
            self._scanned = len(self._buffer)
            pending = len(self._buffer) - self._start
            if self._eof:
                return self._take(len(self._buffer)) if pending else None
            if pending > self._limit + 1:  # + 1: the line may end with "\r\n"
                return self._skip_long_line(stopping)
            if stopping() and not pending:
                return None
            if not self._read(stopping, timeout):
                return NOT_YET

    def _take(self, end: int) -> bytes | LongLine:
        raw = self._buffer[self._start : end]
        self._returned += len(raw)
        self._start = self._scanned = end
        line = bytes(raw[: len(raw) - _ending(raw[-2:])])
        if len(line) > self._limit:
            return LongLine(line[:KEPT_BYTES], len(line))
        return line

    def _skip_long_line(self, stopping: Callable[[], bool]) -> LongLine | None:
        head = bytes(self._buffer[self._start : self._start + KEPT_BYTES])
        taken = len(self._buffer) - self._start
        tail = bytes(self._buffer[-1:])
        del self._buffer[:]
        self._start = self._scanned = 0
        while not self._eof:
            if stopping() and self._seekable:
                return None  # the next reader starts at this line again
            self._read(stopping)
            end = self._buffer.find(b"\n")
            if end >= 0:
                tail = tail[-1:] + bytes(self._buffer[max(0, end - 1) : end + 1])
                taken += end + 1
                self._start = self._scanned = end + 1
                break
            taken += len(self._buffer)
            tail = tail[-1:] + bytes(self._buffer[-1:])
            del self._buffer[:]
        self._returned += taken
        return LongLine(head, taken - _ending(tail))

    def _read(self, stopping: Callable[[], bool], timeout: float | None = None) -> bool:
        """Read what is there, or wait for it; a pipe's wait ends when the wakeup is set.

        Returns ``False`` when ``timeout`` seconds passed with nothing to read. Once
        stopping, a pipe is read a byte at a time, so that the line begun is completed
        without taking any of the next.
        """
        if not self._seekable:
            watch = [self._fd]
            if self._wakeup is not None and not stopping():
                watch.append(self._wakeup.fileno())
            if timeout is not None and timeout > _LONGEST_WAIT:
                timeout = None
            ready, _, _ = select.select(watch, [], [], timeout)
            if self._fd not in ready:
                return bool(ready)
        # Once stopping, a pipe gives only the rest of the line begun.
        size = _FILE_READ if self._seekable else 1 if stopping() else PIPE_READ
        try:
            chunk = os.read(self._fd, size)
        except BlockingIOError:
            return True
        if self._start:
            del self._buffer[: self._start]
            self._scanned -= self._start
            self._start = 0
        self._buffer += chunk
        self._eof = not chunk
        return True

    def close(self) -> None:
        if not self._seekable:
            return
        if isinstance(self._stream, io.BufferedIOBase | io.RawIOBase):
            self._stream.seek(self._done)
        else:
            os.lseek(self._fd, self._done, os.SEEK_SET)


class _StreamLines(LineReader):
    # A file object without a descriptor (io.BytesIO, io.StringIO) holds its own
    # data: reading one line at a time takes nothing more than that line.
    def __init__(self, stream: IO[bytes] | IO[str], limit: int) -> None:
        self._stream = stream
        self._limit = limit

    def _readline(self, size: int) -> bytes:
        line = self._stream.readline(size)
        return line.encode("utf-8") if isinstance(line, str) else line

    def next(
        self, stopping: Callable[[], bool] = _never, timeout: float | None = None
    ) -> bytes | LongLine | NotYet | None:
        if stopping():
            return None
        raw = self._readline(self._limit + 2)
        if not raw:
            return None
        if raw.endswith(b"\n") or len(raw) <= self._limit + 1:
            line = raw[: len(raw) - _ending(raw)]
            return line if len(line) <= self._limit else LongLine(line[:KEPT_BYTES], len(line))
        head, taken, tail = raw[:KEPT_BYTES], len(raw), raw
        while not tail.endswith(b"\n"):
            piece = self._readline(_FILE_READ)
            if not piece:
                break
            taken += len(piece)
            tail = tail[-1:] + piece
        return LongLine(head, taken - _ending(tail))


def open_lines(
    stream: IO[bytes] | IO[str],
    limit: int = DEFAULT_MAX_LINE_SIZE,
    wakeup: Wakeup | None = None,
) -> LineReader:
    """A :class:`LineReader` over ``stream``: its file descriptor if it has one.

    :param limit: the longest line, without its ending, returned whole.
    :param wakeup: makes a wait for input on a pipe or terminal return, once set.
    """
    if isinstance(stream, io.TextIOBase):
        stream = getattr(stream, "buffer", stream)
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return _StreamLines(stream, limit)
    return _DescriptorLines(stream, fd, limit, wakeup)
