"""DeadLetterReason: why a message was dead-lettered, as a string with details."""

from __future__ import annotations

import traceback as _traceback
from types import CodeType, TracebackType

__all__ = ["DeadLetterReason"]


class DeadLetterReason(str):
    """Why a message could not be handled: a ``str`` that also carries details.

    A plain mapping DLQ stores it as the string it is; a database DLQ also stores
    the details. ``summary`` is the reason without exception text, which is what
    Missive logs (exception text can quote the payload) and what ``missive dlq
    stats`` counts by; it is the same for every message that fails the same way,
    in every process: positions in the message and memory addresses stay in the
    full reason or out of both.

    :param reason: the full reason, for the DLQ.
    :param summary: the reason without exception text, positions or addresses;
        defaults to ``reason``.
    :param handler: the handler's name, when one was chosen.
    :param exc_type: the exception's type name, when one was raised.
    :param traceback: the formatted traceback, when one was raised; by default it is
        formatted from ``exception`` when first read (a failure that is retried, not
        dead-lettered, never pays for it).
    :param exception: the exception itself, when one was raised (never stored).
    """

    summary: str
    handler: str | None
    exc_type: str | None
    exception: BaseException | None
    _traceback: str | None

    def __new__(
        cls,
        reason: str,
        *,
        summary: str | None = None,
        handler: str | None = None,
        exc_type: str | None = None,
        traceback: str | None = None,
        exception: BaseException | None = None,
    ) -> DeadLetterReason:
        self = super().__new__(cls, reason)
        self.summary = reason if summary is None else summary
        self.handler = handler
        self.exc_type = exc_type
        self._traceback = traceback
        self.exception = exception
        return self

    @property
    def traceback(self) -> str | None:
        """The formatted traceback, when one was raised."""
        if self._traceback is None and self.exception is not None:
            self._traceback = format_traceback(self.exception)
        return self._traceback

    @classmethod
    def from_exception(
        cls, what: str, exc: BaseException, *, handler: str | None = None
    ) -> DeadLetterReason:
        """A reason for ``exc``, raised by ``what`` (for example ``"handler 'greet'"``)."""
        exc_type = type(exc).__qualname__
        summary = f"{what} raised {exc_type}"
        return cls(
            f"{summary}: {exc}",
            summary=summary,
            handler=handler,
            exc_type=exc_type,
            exception=exc,
        )


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


# The frames' text of each path an exception took (code objects and line numbers):
# the same failure, again and again, is formatted once.
_FRAMES: dict[tuple[tuple[CodeType, int], ...], str] = {}
_FRAMES_KEPT = 1024


def _frames(tb: TracebackType) -> str:
    key = tuple((frame.f_code, line) for frame, line in _traceback.walk_tb(tb))
    text = _FRAMES.get(key)
    if text is None:
        frames = _traceback.StackSummary.extract(_traceback.walk_tb(tb))
        text = "".join(["Traceback (most recent call last):\n", *frames.format()])
        if len(_FRAMES) >= _FRAMES_KEPT:
            _FRAMES.clear()
        _FRAMES[key] = text
    return text


def _exception_only(exc: BaseException) -> str:
    # traceback.format_exception_only's text, without its cost (a TracebackException
    # each) in the common case: no notes, not a SyntaxError (whose text shows the line).
    if isinstance(exc, SyntaxError) or getattr(exc, "__notes__", None) is not None:
        return "".join(_traceback.format_exception_only(exc))
    kind = type(exc)
    name, module = kind.__qualname__, kind.__module__
    if module not in ("__main__", "builtins"):
        name = f"{module if isinstance(module, str) else '<unknown>'}.{name}"
    try:
        text = str(exc)
    except Exception:  # as the standard library words it
        text = "<exception str() failed>"
    return f"{name}: {text}\n" if text else f"{name}\n"


def format_traceback(exc: BaseException) -> str:
    """:func:`traceback.format_exception`'s text, chained exceptions included, without
    Python 3.11's column markers (``~~~^^^``): working those out costs some 25 us a
    frame, which a flood of dead letters pays for each (``bench/dlq_flood.py``);
    the frames of a path already formatted are reused. An exception group keeps the
    full format."""
    if isinstance(exc, BaseExceptionGroup):
        return "".join(_traceback.format_exception(exc))
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.insert(0, _exception_only(current))
        if current.__traceback__ is not None:
            parts.insert(0, _frames(current.__traceback__))
        if current.__cause__ is not None:
            parts.insert(0, _CAUSE)
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            parts.insert(0, _CONTEXT)
            current = current.__context__
        else:
            current = None
    return "".join(parts)
