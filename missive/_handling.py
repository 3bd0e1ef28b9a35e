"""The outcome of handling one message, and the context its handler and hooks see."""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Generic

from missive._types import M
from missive.attempts import RetryLater
from missive.errors import AlreadySettledError
from missive.reason import DeadLetterReason
from missive.state import State

if TYPE_CHECKING:  # context.py imports this module at runtime
    from missive.context import ProcessingContext

__all__ = ["CANNOT_DELAY", "HandlingContext", "Outcome"]


class Outcome(enum.Enum):
    """What became of a message; tells an adapter what to do on its transport."""

    #: A handler acked it: ack it on the transport.
    ACKED = "acked"
    #: A handler nacked it: hand it back to the transport for redelivery.
    NACKED = "nacked"
    #: It could not be handled and is now stored in the DLQ: ack it on the transport.
    DEAD_LETTERED = "dead-lettered"
    #: It failed (or its handler called :meth:`HandlingContext.retry`) and is to be
    #: handled again later: hand it back to the transport with
    #: :attr:`HandlingContext.retry_later`. Only where the processing context's
    #: :attr:`~ProcessingContext.delays_retries` is set.
    RETRY = "retried"


_ACKED = Outcome.ACKED
_NACKED = Outcome.NACKED
_DEAD_LETTERED = Outcome.DEAD_LETTERED
_RETRY = Outcome.RETRY

#: Why a delayed retry that was due was not made, where nothing can delay one.
CANNOT_DELAY = "not retried later: the adapter cannot delay a retry"


class HandlingContext(Generic[M]):
    """The context of handling one message, passed to its handler and handling hooks.

    A handler must call exactly one of :meth:`ack`, :meth:`nack` or :meth:`retry`.
    """

    # ``_state``, ``_failure``, ``_delay`` and ``_retry_later`` are set only when used:
    # one store less per message each.
    __slots__ = (
        "_delay",
        "_failure",
        "_retry_later",
        "_state",
        "handler_name",
        "message",
        "outcome",
        "processing_ctx",
    )
    _delay: float | None
    _failure: DeadLetterReason | None
    _retry_later: RetryLater | None
    _state: State

    def __init__(self, message: M, processing_ctx: ProcessingContext[M] | None = None) -> None:
        #: The message being handled.
        self.message = message
        #: The :class:`ProcessingContext` of the run handling it, whose ``state`` the
        #: ``before_processing`` hooks set; ``None`` for a context built by hand.
        self.processing_ctx = processing_ctx
        #: The name of the handler chosen for the message, once routing chose one.
        self.handler_name: str | None = None
        #: ACKED, NACKED or RETRY once the handler settled the message, else ``None``;
        #: once processing is over, what became of it.
        self.outcome: Outcome | None = None

    @property
    def state(self) -> State:
        """An attribute bag for this message only, shared by its hooks and handler."""
        try:
            return self._state
        except AttributeError:
            state = self._state = State()
            return state

    @property
    def failure(self) -> DeadLetterReason | None:
        """Why the message cannot be handled, once that is known; ``None`` while nothing failed.

        The ``after_handling`` hooks and the observers' ``handling_finished`` see it.
        """
        try:
            return self._failure
        except AttributeError:
            return None

    @failure.setter
    def failure(self, reason: DeadLetterReason | None) -> None:
        self._failure = reason

    @property
    def delay(self) -> float | None:
        """The wait the handler asked for with ``nack(delay=...)`` or ``retry(delay=...)``."""
        try:
            return self._delay
        except AttributeError:
            return None

    @property
    def retry_later(self) -> RetryLater | None:
        """When the outcome is :attr:`Outcome.RETRY`: the delay and the attempt state."""
        try:
            return self._retry_later
        except AttributeError:
            return None

    def ack(self) -> None:
        """Mark the message as processed; the adapter acks it once handling is over.

        :raises AlreadySettledError: if the message was already acked or nacked.
        """
        if self.outcome is not None:
            self._already_settled("ack")
        self.outcome = _ACKED

    def nack(self, delay: float | None = None) -> None:
        """Give the message back: the transport redelivers it later, when it can.

        It counts as a delivery (``max_deliveries``), not as a retry of the retry
        policy. On a transport that cannot redeliver (stdin, Redis Pub/Sub) a nacked
        message is dead-lettered instead.

        :param delay: seconds before it comes back, where the transport can delay a
            redelivery; ``None``: the adapter's growing ``retry_delay``.
        :raises AlreadySettledError: if the message was already settled.
        :raises ValueError: if ``delay`` is negative or not finite.
        """
        if self.outcome is not None:
            self._already_settled("nack")
        if delay is not None:
            self._delay = _checked_delay(delay)
        self.outcome = _NACKED

    def retry(self, delay: float | None = None) -> None:
        """Ask for the message to be handled again later: a delayed retry of the policy.

        It counts as a failed attempt without an exception: the retry policy's limits
        apply (so with the default :data:`~missive.NO_RETRY` the message is
        dead-lettered), and its history says the handler asked. Never retried at once.

        :param delay: seconds to wait, in place of the policy's next delay.
        :raises AlreadySettledError: if the message was already settled.
        :raises ValueError: if ``delay`` is negative or not finite.
        """
        if self.outcome is not None:
            self._already_settled("retry")
        self._delay = None if delay is None else _checked_delay(delay)
        self.outcome = _RETRY

    def _already_settled(self, verb: str) -> None:
        assert self.outcome is not None
        raise AlreadySettledError(
            f"cannot {verb} message {self.message.message_id!r}: it was already "
            f"{self.outcome.value}; a handler acks or nacks a message once"
        )


def _checked_delay(delay: float) -> float:
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay < math.inf:
        raise ValueError(f"delay must be a finite number of seconds, 0 or more, not {delay!r}")
    return float(delay)
