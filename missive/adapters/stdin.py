"""StdinAdapter: one message per line of standard input, a pipe or a file."""

from __future__ import annotations

import logging
import sys
from typing import IO

from missive._typing import M
from missive.adapters._lines import DEFAULT_MAX_LINE_SIZE, KEPT_BYTES, LongLine, Wakeup, open_lines
from missive.adapters.base import Adapter
from missive.context import Outcome, ProcessingContext
from missive.errors import MissiveError
from missive.processor import Processor
from missive.reason import DeadLetterReason

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
    :raises ValueError: if ``max_line_size`` is less than 1.
    """

    shareable = False

    def __init__(
        self,
        message_cls: type[M],
        processor: Processor[M],
        filelike: IO[bytes] | IO[str] | None = None,
        *,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
    ) -> None:
        super().__init__(message_cls, processor)
        if max_line_size < 1:
            raise ValueError(f"max_line_size must be 1 or more, not {max_line_size!r}")
        self.filelike = filelike
        self.max_line_size = max_line_size
        self._wakeup: Wakeup | None = None

    def stop(self) -> None:
        """Ask :meth:`run` to finish the line in hand and return. Thread-safe."""
        super().stop()
        wakeup = self._wakeup
        if wakeup is not None:
            wakeup.set()

    def run(self) -> None:
        """Process every line until the end of input or a stop; see the class docstring."""
        stream: IO[bytes] | IO[str] = (
            self.filelike if self.filelike is not None else sys.stdin.buffer
        )
        wakeup = self._wakeup = Wakeup()
        line_number = 0
        try:
            reader = open_lines(stream, self.max_line_size, wakeup)
            with self.stop_on_signals(), self.processor.context() as context:
                logger.info("reading messages, one per line")
                self._set_ready()
                try:
                    while (line := reader.next(lambda: self.stop_requested)) is not None:
                        line_number += 1
                        self._process(context, line, line_number)
                finally:
                    reader.close()
                logger.info("stopped after %d lines", line_number)
        finally:
            self._wakeup = None
            wakeup.close()

    def _process(self, context: ProcessingContext[M], line: bytes | LongLine, number: int) -> None:
        try:
            if isinstance(line, LongLine):
                attributes = {"line": number, "line_size": line.size}
                context.dead_letter(
                    self.message_cls(line.head, None, attributes), self._too_long(number, line)
                )
                return
            message = self.message_cls(line, None, {"line": number})
            if context.process(message) is Outcome.NACKED:
                context.dead_letter(
                    message, "nacked by its handler; stdin cannot redeliver a line"
                )
        except MissiveError as exc:
            exc.add_note(
                f"(input line {number}: it and the lines after it were not handled; "
                f"resume from line {number})"
            )
            raise

    def _too_long(self, number: int, line: LongLine) -> DeadLetterReason:
        summary = f"line longer than max_line_size ({self.max_line_size} bytes)"
        return DeadLetterReason(
            f"{summary}: line {number} is {line.size} bytes; its first "
            f"{min(KEPT_BYTES, line.size)} bytes are kept, the rest was skipped",
            summary=summary,
        )
