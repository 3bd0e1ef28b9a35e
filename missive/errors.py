"""Errors raised by Missive.

Every error Missive raises derives from :class:`MissiveError`::

    MissiveError
    ├── MessageDecodeError (also ValueError)    a message's bytes are not what its class expects
    ├── RegistrationError (also ValueError)     a handler or hook cannot be registered as given
    ├── MatcherError                            a matcher raised while routing a message
    ├── AlreadySettledError (also RuntimeError) a handler acked or nacked a message twice
    ├── HandlingError (also RuntimeError)       a message could not be handled and no DLQ is set
    ├── DLQWriteError                           the DLQ could not store a failed message
    ├── DLQError                                a DLQ cannot be opened or read
    └── MissingExtraError (also ImportError)    an adapter's optional dependency is not installed

A matcher that is not callable is a plain :class:`TypeError`.
"""

from __future__ import annotations

from collections.abc import Sequence

from missive._names import describe_matcher


class MissiveError(Exception):
    """The root of every error Missive raises."""


class MessageDecodeError(MissiveError, ValueError):
    """A message's bytes cannot be decoded as its message class requires.

    Raised, for example, by :meth:`missive.JSONMessage.get_json` for invalid UTF-8 or
    invalid JSON. The processor turns it into a dead letter whose reason is this text
    and whose summary holds only ``problem``, so that alike failures group together.

    :param message_id: the message's id.
    :param problem: what is wrong, the same for every message that fails the same
        way (``"invalid JSON: Expecting value"``), never quoting the payload.
    :param detail: what differs from message to message, such as where the problem
        is (``"at line 1 column 9"``); part of the error's text, not of ``problem``.
    """

    def __init__(self, message_id: bytes, problem: str, detail: str | None = None) -> None:
        self.message_id = message_id
        self.problem = problem
        self.detail = detail
        text = problem if detail is None else f"{problem} {detail}"
        super().__init__(f"message {message_id!r}: {text}")


class RegistrationError(MissiveError, ValueError):
    """A handler or hook cannot be registered, for example a matcher registered twice."""


class MatcherError(MissiveError):
    """A matcher raised while a message was being routed.

    The processor dead-letters the message with the original error as the reason;
    the original is ``error`` (and the ``__cause__``). ``handlers`` names the handlers
    whose matcher raised: one, or every handler indexed on a field whose reading
    raised (``matcher`` is then that :class:`~missive.matchers.Field`).
    """

    def __init__(
        self,
        message_id: bytes,
        matcher: object,
        error: Exception,
        handlers: Sequence[str] = (),
    ) -> None:
        self.message_id = message_id
        self.matcher = matcher
        self.error = error
        self.handlers = tuple(handlers)
        text = (
            f"{describe_matcher(matcher, self.handlers)} raised {type(error).__qualname__} "
            f"for message {message_id!r}"
        )
        if not isinstance(error, MessageDecodeError):  # else the message is at fault
            text += "; a matcher should return False for a message it does not accept"
        super().__init__(text)


class AlreadySettledError(MissiveError, RuntimeError):
    """A handler acked or nacked a message that it had already acked or nacked."""


def _summary(reason: str) -> str:
    # A DeadLetterReason's summary leaves out exception text, which can quote the payload.
    summary = getattr(reason, "summary", reason)
    return summary if isinstance(summary, str) else reason


class HandlingError(MissiveError, RuntimeError):
    """A message could not be handled and the processor has no DLQ to store it in.

    The message has not been acked. ``reason`` says what went wrong, in full; the
    error's text carries only its summary (no exception text), so that it is safe to
    log, and the original exception, if any, is the ``__cause__``. Set a DLQ with
    :meth:`missive.Processor.set_dlq` to store such messages instead of raising.

    It is also a :class:`RuntimeError`, which missive 0.8.1 raised in its place, so
    that ``except RuntimeError`` written for 0.8.1 still catches it.
    """

    def __init__(self, message_id: bytes, reason: str) -> None:
        self.message_id = message_id
        self.reason = reason
        super().__init__(
            f"message {message_id!r} was not handled and is not acked: {_summary(reason)}. "
            "Fix the cause, or set a DLQ with processor.set_dlq(...) to store such messages."
        )


class DLQWriteError(MissiveError):
    """A message that could not be handled could not be written to the DLQ either.

    The message has not been acked, so the transport keeps (or redelivers) it. The
    original failure is in ``reason`` (the error's text carries only its summary); the
    DLQ's own error is ``error`` (and the ``__cause__``). The text is safe to log: it
    quotes a :class:`DLQError` (Missive's stores keep its text free of row data) or
    an :class:`OSError` (a condition and a file name), and of any other error, such
    as a database driver's, which can quote the row, only its type.
    """

    def __init__(self, message_id: bytes, reason: str, error: BaseException) -> None:
        self.message_id = message_id
        self.reason = reason
        self.error = error
        if isinstance(error, DLQError | OSError):
            what = f"{type(error).__name__}: {error}"
        else:
            what = f"{type(error).__name__}; its text, which may quote the row, is left out"
        super().__init__(
            f"message {message_id!r} failed ({_summary(reason)}) and could not be written to "
            f"the DLQ ({what}); it is not acked. Check the DLQ's storage."
        )


class DLQError(MissiveError):
    """A DLQ cannot be opened, created or read."""


class MissingExtraError(MissiveError, ImportError):
    """An adapter or DLQ needs an optional dependency that is not installed."""

    def __init__(self, extra: str, module: str) -> None:
        self.extra = extra
        super().__init__(
            f"{module} needs the optional dependency '{extra}': "
            f"install it with: pip install 'missive[{extra}]'"
        )
