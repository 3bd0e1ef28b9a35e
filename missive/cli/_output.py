"""Terminal output: tables, colour, a progress bar, and text made safe to print.

On a terminal, tables are aligned and fitted to its width, headers are bold and
statuses coloured; when the output is piped or redirected, tables are plain
tab-separated text and nothing is coloured. ``NO_COLOR`` (any non-empty value, see
https://no-color.org) and ``TERM=dumb`` turn colour off on a terminal too.

A closed stdout (``>&-``) or one whose reader went away (``| head``) is not an
error: what would go there is dropped and the command finishes its work.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import sys
from collections.abc import Sequence
from typing import TextIO

__all__ = [
    "Output",
    "ProgressBar",
    "hex_preview",
    "open_standard_streams",
    "safe_text",
    "size_text",
]

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_STYLED = re.compile(r"\x1b\[[0-9;]*m")
_CODES = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}


def safe_text(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control characters escaped, so that it cannot drive the terminal.

    Tabs are kept; newlines are kept only when ``keep_newlines`` is true, else escaped.
    """
    escaped = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if not keep_newlines:
        escaped = escaped.replace("\n", "\\n")
    return escaped


def size_text(size: int) -> str:
    """A byte count for people: ``512 B``, ``1.5 KiB``, ``3.0 MiB``."""
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def hex_preview(data: bytes, limit: int = 256) -> str:
    """The first ``limit`` bytes as a hex dump (offset, hex, printable ASCII)."""
    lines = []
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset : offset + 16]
        hexes = " ".join(f"{byte:02x}" for byte in chunk)
        text = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in chunk)
        lines.append(f"{offset:08x}  {hexes:<47}  |{text}|")
    if len(data) > limit:
        lines.append(f"... ({len(data) - limit} more bytes; use --raw for all of them)")
    return "\n".join(lines)


def open_standard_streams() -> None:
    """Put ``/dev/null`` in place of each of stdin, stdout and stderr that is closed.

    A program started with ``>&-`` has no file descriptor 1 and ``sys.stdout`` is
    ``None``; the next file it opened (a DLQ's database) would take descriptor 1, and
    a stray write, or a worker process inheriting it as its stdout, would write into
    that file.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            stream = open(fd, mode, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
            setattr(sys, name, stream)


class _Nowhere(io.RawIOBase):
    """A binary stream that drops every byte written to it."""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        return len(memoryview(data))  # type: ignore[arg-type]


def _nowhere() -> TextIO:
    return io.TextIOWrapper(io.BufferedWriter(_Nowhere()), encoding="utf-8")


def _dropped(stream: TextIO) -> TextIO:
    """``stream``, or a stand-in, that drops what is written from now on: its reader went."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return _nowhere()
    # The same stream on /dev/null: what it still buffers is flushed there at exit
    # instead of making the interpreter print "Exception ignored ... BrokenPipeError".
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)
    return stream


def _given(stream: TextIO | None, standard: TextIO | None) -> TextIO:
    if stream is not None:
        return stream
    return standard if standard is not None else _nowhere()


def _wants_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return _isatty(stream)


def _width(cell: str) -> int:
    return len(_STYLED.sub("", cell))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Output:
    """Where a command writes: ``stdout`` for results, ``stderr`` for everything else.

    :param stdout: the results' stream; ``sys.stdout`` by default.
    :param stderr: the diagnostics' stream; ``sys.stderr`` by default.
    """

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.stdout = _given(stdout, sys.stdout)
        self.stderr = _given(stderr, sys.stderr)
        #: Whether stdout is a terminal (aligned tables) rather than a pipe or file.
        self.tty = _isatty(self.stdout)
        #: Whether to colour stdout.
        self.colour = _wants_colour(self.stdout)
        self._err_colour = _wants_colour(self.stderr)
        self.progress: ProgressBar | None = None

    def style(self, text: str, *styles: str, err: bool = False) -> str:
        """``text`` in the given styles (``"bold"``, ``"red"``...) when colouring is on."""
        if not styles or not (self._err_colour if err else self.colour):
            return text
        codes = ";".join(_CODES[name] for name in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"

    def line(self, text: str = "") -> None:
        """Write a line of results to stdout."""
        self._clear_progress()
        try:
            self.stdout.write(text + "\n")
        except BrokenPipeError:
            self.stdout = _dropped(self.stdout)

    def flush(self) -> None:
        """Flush stdout; if its reader has gone, drop what is left."""
        try:
            self.stdout.flush()
        except BrokenPipeError:
            self.stdout = _dropped(self.stdout)

    def reader_gone(self) -> None:
        """Drop what is written to stdout from now on: a write found its reader gone."""
        self.stdout = _dropped(self.stdout)

    def note(self, text: str) -> None:
        """Write a line for people (progress, summaries of side effects) to stderr."""
        self._clear_progress()
        try:
            self.stderr.write(text + "\n")
            self.stderr.flush()
        except BrokenPipeError:
            self.stderr = _dropped(self.stderr)

    def warn(self, text: str) -> None:
        """Write ``missive: warning: text`` to stderr."""
        self.note(f"missive: {self.style('warning', 'yellow', err=True)}: {text}")

    def error(self, text: str) -> None:
        """Write ``missive: error: text`` to stderr, on one line."""
        text = safe_text(" ".join(text.split()))
        self.note(f"missive: {self.style('error', 'red', err=True)}: {text}")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]], *, wide: int) -> None:
        """Write rows under headers: aligned on a terminal, tab-separated when piped.

        On a terminal, column ``wide`` is shortened (with ``…``) to fit its width.
        """
        if not self.tty:
            self.line("\t".join(headers))
            for row in rows:
                self.line("\t".join(cell.replace("\t", " ") for cell in row))
            return
        widths = [max([len(h), *(_width(row[i]) for row in rows)]) for i, h in enumerate(headers)]
        room = (
            shutil.get_terminal_size().columns
            - (sum(widths) - widths[wide])
            - 2 * (len(widths) - 1)
        )
        widths[wide] = max(min(widths[wide], room), len(headers[wide]), 10)
        padded = [h.ljust(w) for h, w in zip(headers[:-1], widths, strict=False)]
        self.line("  ".join(self.style(h, "bold") for h in [*padded, headers[-1]]))
        for row in rows:
            cells = [
                cell if _width(cell) <= w else cell[: w - 1] + "…"
                for cell, w in zip(row, widths, strict=True)
            ]
            self.line(
                "  ".join(
                    c + " " * (w - _width(c)) for c, w in zip(cells, widths, strict=True)
                ).rstrip()
            )

    def start_progress(self, total: int, label: str, *, threshold: int = 20) -> None:
        """Show a progress bar on stderr for ``total`` steps, if stderr is a terminal."""
        if total >= threshold and _isatty(self.stderr):
            self.progress = ProgressBar(self.stderr, total, label)

    def step(self) -> None:
        """Advance the progress bar, if one is shown."""
        if self.progress is not None:
            self.progress.advance()

    def end_progress(self) -> None:
        """Remove the progress bar."""
        self._clear_progress()
        self.progress = None

    def _clear_progress(self) -> None:
        if self.progress is not None:
            self.progress.clear()


class ProgressBar:
    """A one-line progress bar, redrawn in place with a carriage return.

    :param stream: a terminal.
    :param total: the number of steps.
    :param label: what is being done, shown before the bar.
    """

    def __init__(self, stream: TextIO, total: int, label: str) -> None:
        self.stream = stream
        self.total = total
        self.label = label
        self.done = 0
        self._draw()

    def advance(self) -> None:
        """Count one more step done and redraw."""
        self.done += 1
        self._draw()

    def clear(self) -> None:
        """Erase the bar; the next draw puts it back."""
        self.stream.write("\r\x1b[2K")
        self.stream.flush()

    def _draw(self) -> None:
        width = max(10, min(40, shutil.get_terminal_size().columns - len(self.label) - 30))
        filled = width * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total}")
        self.stream.flush()
