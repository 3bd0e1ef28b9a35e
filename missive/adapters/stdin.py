"""StdinAdapter: one message per line of standard input, a pipe or a file."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Hashable
from typing import IO, Any

from missive._typing import M
from missive.adapters._lines import (
    DEFAULT_MAX_LINE_SIZE,
    KEPT_BYTES,
    LineReader,
    LongLine,
    NotYet,
    Wakeup,
    open_lines,
)
from missive.adapters.base import Adapter
from missive.processor import Processor
from missive.reason import DeadLetterReason
from missive.runtime.transport import Batch, Transport

__all__ = ["StdinAdapter"]

logger = logging.getLogger("missive.adapters.stdin")


class StdinAdapter(Adapter[M]):
    """Reads one message per line from stdin, a pipe, a file or a terminal.

    The line ending (``\\n`` or ``\\r\\n``) is removed. Each message gets a
    generated id and the attribute ``line`` (its line number, from 1). At the end of
    input the ``after_processing`` hooks run and :meth:`run` returns.

    **Stopping.** SIGINT and SIGTERM (and :meth:`stop`) finish the line in hand, run
    the hooks and return; while waiting for a line they return at once. No line is
    lost: the adapter reads the file descriptor itself, not through a buffer. On a
    regular file, the offset is left just after the last line handled, so the next
    reader goes on from there. On a pipe or terminal, bytes read cannot be given
    back: the lines already read (at most 8 KiB past the one in hand, and the rest of
    a line begun) are handled before :meth:`run` returns.

    **Long lines.** A line longer than ``max_line_size`` bytes is not read into
    memory: it is dead-lettered with its first 4096 bytes, the attribute
    ``line_size`` (its full size) and a reason saying so, and reading goes on at the
    next line.

    **Failures.** A line cannot be given back to stdin, so a **nacked** line is
    dead-lettered with a reason saying so. Without a DLQ, a line that cannot be
    handled (or is nacked, or too long) makes :meth:`run` raise
    :class:`~missive.HandlingError` with a note naming the line, after the
    ``after_processing`` hooks ran: the program exits with an error instead of
    silently dropping it. A regular file is then left at the start of that line.

    Lines come one at a time, so this adapter cannot be shared by several worker
    processes (:attr:`shareable` is ``False``).

    :param message_cls: the message class to build each line into.
    :param processor: the processor to run.
    :param filelike: where to read lines from, binary or text; ``sys.stdin`` by default.
        A file object with a descriptor is read through it, from its current position.
    :param max_line_size: the longest line, without its ending, handled (16 MiB).
    :param concurrency: how many messages are handled at once (see
        :class:`~missive.Adapter`); 1 by default: one at a time, in order.
    :param ordering_key: ``message -> hashable``: equal keys are handled one at a time.
    :param graceful_timeout: on a stop, the seconds messages in flight get to finish.
    :raises ValueError: if ``max_line_size`` is less than 1.
    """

    shareable = False
    batch_size = 1

    def __init__(
        self,
        message_cls: type[M],
        processor: Processor[M],
        filelike: IO[bytes] | IO[str] | None = None,
        *,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        concurrency: int = 1,
        ordering_key: Callable[[M], Hashable] | None = None,
        graceful_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            message_cls,
            processor,
            concurrency=concurrency,
            ordering_key=ordering_key,
            graceful_timeout=graceful_timeout,
        )
        if max_line_size < 1:
            raise ValueError(f"max_line_size must be 1 or more, not {max_line_size!r}")
        self.filelike = filelike
        self.max_line_size = max_line_size

    def transport(self) -> Transport:
        """The lines of ``filelike`` (or stdin), for the delivery loop."""
        return _StdinTransport(self.filelike, self.max_line_size, self.stop_event.is_set)


class _StdinTransport(Transport):
    """One row per line; a line is never given back, so a failure stops the run."""

    system = "stdin"
    cannot_redeliver = "stdin cannot redeliver a line"
    stop_on_loss = True
    # On a stop, the loop goes on receiving until the reader says it is done: on a
    # pipe, the lines it already took from the input are handled (none are lost).
    drain_timeout = math.inf

    def __init__(
        self, filelike: IO[bytes] | IO[str] | None, max_line_size: int, stopping: Callable[[], bool]
    ) -> None:
        self._filelike = filelike
        self._max_line_size = max_line_size
        self._stopping = stopping
        self._batch = Batch()
        self._reader: LineReader | None = None
        self._wakeup: Wakeup | None = None
        self._line_number = 0

    def connect(self) -> None:
        stream = self._filelike if self._filelike is not None else sys.stdin.buffer
        wakeup = Wakeup()
        try:
            self._reader = open_lines(stream, self._max_line_size, wakeup)
        except BaseException:
            wakeup.close()
            raise
        self._wakeup = wakeup
        logger.info("reading messages, one per line")

    def receive(self, max_messages: int, timeout: float) -> Batch:
        # One line at most: a pipe's wait ends after ``timeout`` or on wake().
        batch = self._batch
        batch.clear()
        assert self._reader is not None
        line = self._reader.next(self._stopping, timeout)
        if isinstance(line, NotYet):
            return batch
        if line is None:
            batch.ended = True
            return batch
        self._line_number = number = self._line_number + 1
        if isinstance(line, LongLine):
            attributes = {"line": number, "line_size": line.size}
            batch.add(line.head, None, attributes, number, problem=self._too_long(number, line))
        else:
            batch.add(line, None, {"line": number}, number)
        return batch

    def wake(self, from_signal: bool) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.set()

    def close(self) -> None:
        reader, self._reader = self._reader, None
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            wakeup.close()
        if reader is None:
            return
        try:
            reader.close()
        except (OSError, ValueError) as exc:  # the file object was closed under us
            logger.warning("could not leave the input after the last line handled: %s", exc)
        logger.info("stopped after %d lines", self._line_number)

    def where(self) -> str:
        return "stdin"

    def source(self) -> str:
        return "stdin"

    def locate(self, handle: Any) -> str:
        return (
            f"input line {handle}: it and the lines after it were not handled; "
            f"resume from line {handle}"
        )

    def _too_long(self, number: int, line: LongLine) -> DeadLetterReason:
        summary = f"line longer than max_line_size ({self._max_line_size} bytes)"
        return DeadLetterReason(
            f"{summary}: line {number} is {line.size} bytes; its first "
            f"{min(KEPT_BYTES, line.size)} bytes are kept, the rest was skipped",
            summary=summary,
        )
