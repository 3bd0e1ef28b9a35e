"""StdinAdapter: one message per line of standard input, a pipe or a file."""

from __future__ import annotations

import logging
import sys
from types import FrameType
from typing import IO

from missive._typing import M
from missive.adapters.base import Adapter
from missive.context import Outcome
from missive.errors import MissiveError
from missive.processor import Processor

__all__ = ["StdinAdapter"]

logger = logging.getLogger("missive.adapters.stdin")


class _InterruptedReadError(Exception):
    """Raised by the signal handler to leave a blocking read."""


class StdinAdapter(Adapter[M]):
    """Reads one message per line from stdin, a pipe, a file or a terminal.

    The line ending (``\\n`` or ``\\r\\n``) is removed; lines of any length are read
    whole. Each message gets a generated id and the attribute ``line`` (its line
    number, from 1). At the end of input the ``after_processing`` hooks run and
    :meth:`run` returns. SIGINT and SIGTERM (and :meth:`stop`) finish the line in
    hand, run the hooks and return; while waiting for a line they return at once.

    A line cannot be given back to stdin, so a **nacked** line is dead-lettered with
    a reason saying so. Without a DLQ, a line that cannot be handled (or is nacked)
    makes :meth:`run` raise :class:`~missive.HandlingError` naming the line, after the
    ``after_processing`` hooks ran: the program exits with an error instead of
    silently dropping it.

    :param message_cls: the message class to build each line into.
    :param processor: the processor to run.
    :param filelike: where to read lines from, binary or text; ``sys.stdin`` by default.
    """

    def __init__(
        self,
        message_cls: type[M],
        processor: Processor[M],
        filelike: IO[bytes] | IO[str] | None = None,
    ) -> None:
        super().__init__(message_cls, processor)
        self.filelike = filelike
        self._reading = False

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        super()._on_stop_signal(signum, frame)
        if self._reading:
            raise _InterruptedReadError

    def run(self) -> None:
        """Process every line until the end of input or a stop; see the class docstring."""
        stream: IO[bytes] | IO[str] = (
            self.filelike if self.filelike is not None else sys.stdin.buffer
        )
        readline = stream.readline
        line_number = 0
        with self.stop_on_signals(), self.processor.context() as context:
            logger.info("reading messages, one per line")
            self._set_ready()
            while not self.stop_requested:
                self._reading = True
                try:
                    line = readline()
                except _InterruptedReadError:
                    break
                finally:
                    self._reading = False
                if not line:
                    break
                line_number += 1
                data = line.encode("utf-8") if isinstance(line, str) else line
                if data.endswith(b"\n"):
                    data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
                message = self.message_cls(data, None, {"line": line_number})
                try:
                    if context.process(message) is Outcome.NACKED:
                        context.dead_letter(
                            message, "nacked by its handler; stdin cannot redeliver a line"
                        )
                except MissiveError as exc:
                    exc.add_note(f"(input line {line_number})")
                    raise
            logger.info("stopped after %d lines", line_number)
