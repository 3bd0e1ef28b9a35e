"""Recovery: what the processing context does once an attempt at a message failed.

Only the failure path builds one, so the success path pays nothing for retries. It
decides, in this order: handle the message again at once (an immediate retry),
retry it later (a delayed retry, when the caller can delay one), or dead-letter it,
with the history of its attempts once there was more than one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Generic

from missive._types import M
from missive.attempts import (
    FIRST_ATTEMPT,
    HISTORY,
    MAX_HISTORY,
    RETRIES,
    RetryLater,
    describe_history,
    read_first_attempt,
    read_history,
    read_retries,
    with_state,
)
from missive.reason import DeadLetterReason
from missive.retry import Retry
from missive.routing import Route

__all__ = ["Recovery", "annotated", "asked_for_retry", "given_up", "policy_for"]


def asked_for_retry(handler: str | None) -> DeadLetterReason:
    """The reason of an attempt whose handler called ``ctx.retry()``."""
    return DeadLetterReason(f"handler {handler!r} asked for a retry", handler=handler)


def policy_for(
    default: Retry, route: Route | None, failure: DeadLetterReason, asked: bool
) -> Retry | None:
    """The policy a failure is retried under; ``None``: no retry can fix it.

    No handler, several, or a handler that returned without settling fail the same
    way every time (no exception, no request): ``None``. A failure after a handler
    was chosen follows its route's policy, else the processor's (``default``): a
    ``before_handling`` hook or a matcher that raised.
    """
    if failure.exception is None and not asked:
        return None
    if route is not None and route.retry is not None:
        return route.retry
    return default


class Recovery(Generic[M]):
    """The failed attempts at one delivery of ``message``, and what becomes of it.

    :param message: the message, as delivered (its attributes hold the state of the
        earlier deliveries, if any).
    :param clock: the time, in seconds since the epoch.
    :param rng: the jitter's random source (``None``: the module's).
    """

    __slots__ = ("attempts", "clock", "entries", "first", "message", "prior", "retries", "rng")

    def __init__(
        self, message: M, clock: Callable[[], float], rng: random.Random | None = None
    ) -> None:
        attributes = message.attributes
        self.message = message
        self.clock = clock
        self.rng = rng
        self.retries = read_retries(attributes)
        self.first = read_first_attempt(attributes)
        self.prior = read_history(attributes)
        #: The failed attempts of this delivery.
        self.attempts = 0
        #: This delivery's history entries.
        self.entries: list[dict[str, Any]] = []

    def again(self, failure: DeadLetterReason, retry: Retry | None, asked: bool) -> bool:
        """Record a failed attempt; return whether to handle the message again at once.

        A handler asking for a retry (``asked``) is never retried at once: it asked
        for later.
        """
        now = self.clock()
        if self.first is None:
            self.first = now
        self.attempts += 1
        entry: dict[str, Any] = {"at": now, "reason": failure.summary, "delay": None}
        self.entries.append(entry)
        if (
            retry is None
            or asked
            or self.attempts > retry.immediate
            or not retry.can_fix(failure.exception)
        ):
            return False
        entry["delay"] = 0.0
        return True

    def later(
        self, failure: DeadLetterReason, retry: Retry | None, asked: bool, delay: float | None
    ) -> float | None:
        """The wait before a delayed retry after the last attempt; ``None``: no retry.

        ``delay`` is what the handler asked for (``ctx.retry(delay=...)``), used in
        place of the policy's draw; the policy's limits apply either way.
        """
        if retry is None or not (asked or retry.can_fix(failure.exception)):
            return None
        assert self.first is not None  # again() ran first
        drawn = retry.next_delay(self.retries, self.clock() - self.first, self.rng)
        if drawn is None:
            return None
        return drawn if delay is None else delay

    def retry_later(self, failure: DeadLetterReason, delay: float) -> RetryLater:
        """The delayed retry after ``delay`` seconds, with the state its delivery carries."""
        self.entries[-1]["delay"] = delay
        return RetryLater(delay, self.state(self.retries + 1), failure)

    def state(self, retries: int) -> dict[str, Any]:
        """The attempt state to carry: ``retries`` done, and the history so far."""
        history = (self.prior + self.entries)[-MAX_HISTORY:]
        return {RETRIES: retries, FIRST_ATTEMPT: self.first, HISTORY: history}

    def dead_letter(
        self, failure: DeadLetterReason, note: str | None
    ) -> tuple[M, DeadLetterReason]:
        """The message and reason to dead-letter: as they are after a single attempt,
        else with the history in the reason and in the message's attributes.

        ``note`` says why no delayed retry was made when one was due (the caller cannot
        delay one); it ends the summary.
        """
        if note is None and not self.prior and self.attempts <= 1:
            return self.message, failure
        state = self.state(self.retries)
        return with_state(self.message, state), annotated(failure, state[HISTORY], note)


def annotated(
    failure: DeadLetterReason, history: list[dict[str, Any]], note: str | None
) -> DeadLetterReason:
    """``failure`` with ``note`` ending its summary and the ``history`` in its full text."""
    summary = failure.summary if note is None else f"{failure.summary}; {note}"
    full = str(failure) if note is None else f"{failure}; {note}"
    if len(history) > 1:
        full = f"{full}\n{describe_history(history)}"
    return DeadLetterReason(
        full,
        summary=summary,
        handler=failure.handler,
        exc_type=failure.exc_type,
        traceback=failure.traceback,
        exception=failure.exception,
    )


def given_up(message: M, retry_later: RetryLater, note: str) -> tuple[M, DeadLetterReason]:
    """The message and reason to dead-letter when the delayed retry ``retry_later``
    cannot be made after all (``note`` says why)."""
    state = dict(retry_later.state)
    state[RETRIES] = max(0, read_retries(state) - 1)  # the retry was not made
    history = [dict(entry) for entry in state[HISTORY]]
    if history:
        history[-1]["delay"] = None
    state[HISTORY] = history
    return with_state(message, state), annotated(retry_later.reason, history, note)
