"""DeadLetterReason: why a message was dead-lettered, as a string with details."""

from __future__ import annotations

import traceback as _traceback

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
            self._traceback = "".join(_traceback.format_exception(self.exception))
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
