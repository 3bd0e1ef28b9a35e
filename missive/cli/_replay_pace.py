"""How fast a replay goes and what it shows meanwhile: ``--rate``, and the progress line.

Both take their clock (and the limiter its sleep) as arguments, so that tests check
the schedule and the line without waiting.
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from collections.abc import Callable
from typing import TextIO

from missive.cli._output import ProgressBar

__all__ = [
    "RateLimit",
    "ReplayProgress",
    "batch_option",
    "on_terminal",
    "parse_rate",
    "rate_option",
]

_RATE = re.compile(r"(?P<count>[0-9]+(?:\.[0-9]+)?)/(?P<unit>s|m|h)", re.ASCII)
_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
# The longest a limiter sleeps at once, so that a stop request is seen soon.
_SLICE = 0.1


def parse_rate(text: str) -> float:
    """Dead letters a second from ``N/s``, ``N/m`` or ``N/h`` (``N`` above 0).

    :raises ValueError: with what was expected, for anything else.
    """
    match = _RATE.fullmatch(text.strip())
    if match is None or float(match["count"]) <= 0:
        raise ValueError(f"must be a number above 0 then /s, /m or /h (100/s, 30/m), not {text!r}")
    return float(match["count"]) / _SECONDS[match["unit"]]


def rate_option(text: str) -> float:
    """``--rate``'s value: :func:`parse_rate`, its error as argparse's."""
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def batch_option(text: str) -> int:
    """``--batch``'s value: a whole number of 1 or more, in ASCII digits."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of 1 or more, not {text!r}")
    return int(text)


def on_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (a closed or odd stream is not)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class RateLimit:
    """Spaces the dead letters of a replay ``1 / per_second`` seconds apart.

    Each letter may start one interval after the one before; a letter late (a slow
    handler) moves the schedule on rather than letting the next ones through in a
    burst to catch up.

    :param per_second: dead letters a second, above 0.
    :param clock: a monotonic clock in seconds.
    :param sleep: sleeps for the seconds given.
    """

    def __init__(
        self,
        per_second: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._due: float | None = None

    def wait(self, stopped: Callable[[], bool] = lambda: False) -> bool:
        """Wait until the next dead letter may go; ``False`` if ``stopped()`` came first.

        The wait is cut in slices of at most a tenth of a second, checking
        ``stopped`` between them.
        """
        now = self._clock()
        due = now if self._due is None else max(self._due, now)
        while now < due:
            if stopped():
                return False
            self._sleep(min(due - now, _SLICE))
            now = self._clock()
        self._due = due + self.interval
        return not stopped()


class ReplayProgress(ProgressBar):
    """A progress line with the rate and an ETA, redrawn at most ``per_second`` times a second.

    :param stream: a terminal.
    :param total: the dead letters to replay.
    :param clock: a monotonic clock in seconds.
    """

    def __init__(
        self,
        stream: TextIO,
        total: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        per_second: float = 4.0,
    ) -> None:
        self._clock = clock
        self._started = clock()
        self._every = 1.0 / per_second
        self._drawn = float("-inf")
        super().__init__(stream, total, "replaying")

    def advance(self) -> None:
        """Count one more dead letter done; redraw if the last draw is old enough."""
        self.done += 1
        if self._clock() - self._drawn >= self._every or self.done == self.total:
            self._draw()

    def _draw(self) -> None:
        now = self._clock()
        self._drawn = now
        elapsed = now - self._started
        rate = self.done / elapsed if elapsed > 0 and self.done else 0.0
        eta = _duration((self.total - self.done) / rate) if rate else "?"
        width = max(10, min(30, shutil.get_terminal_size().columns - 60))
        filled = width * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(
            f"\r\x1b[2K{self.label} [{bar}] {self.done}/{self.total} {rate:,.0f}/s ETA {eta}"
        )
        self.stream.flush()


def _duration(seconds: float) -> str:
    """``seconds`` as ``1h02m``, ``3m05s`` or ``12s``."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
