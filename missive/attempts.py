"""The attempt state a message carries from one delivery to the next, and :class:`RetryLater`.

A message retried later comes back as a new delivery, perhaps to another process.
What its earlier attempts were travels with it, never only in a worker's memory: in
its attributes, under three keys (transports carry them as headers or fields):

* :data:`RETRIES` (``"x-missive-retries"``): the delayed retries done so far;
* :data:`FIRST_ATTEMPT` (``"x-missive-first-attempt"``): when the first attempt
  failed, in seconds since the epoch;
* :data:`HISTORY` (``"x-missive-history"``): one entry per failed attempt, oldest
  first, each ``{"at": epoch seconds, "reason": the reason's summary, "delay":
  seconds before the next attempt (0 for an immediate retry), or None}``.

A reason's summary never holds exception text (which can quote the payload), so
neither does the history.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from missive.message import Message
from missive.reason import DeadLetterReason

__all__ = [
    "FIRST_ATTEMPT",
    "HISTORY",
    "MAX_HISTORY",
    "RETRIES",
    "RetryLater",
    "describe_history",
    "read_first_attempt",
    "read_history",
    "read_retries",
    "with_state",
]

#: The attribute (and header) holding the delayed retries done so far.
RETRIES = "x-missive-retries"
#: The attribute (and header) holding when the first attempt failed (epoch seconds).
FIRST_ATTEMPT = "x-missive-first-attempt"
#: The attribute (and header, as JSON) holding the history of the failed attempts.
HISTORY = "x-missive-history"
#: The most history entries a message carries: the oldest are dropped past it.
MAX_HISTORY = 100

MessageT = TypeVar("MessageT", bound=Message)


class RetryLater:
    """Handle the message again after ``delay`` seconds, as a new delivery.

    The caller of :meth:`~missive.ProcessingContext.process` finds it in
    :attr:`HandlingContext.retry_later <missive.HandlingContext.retry_later>` when the
    outcome is :attr:`~missive.Outcome.RETRY`, and hands the message back to its
    transport with ``state`` written in (:meth:`missive.runtime.Transport.retry_later`).

    :param delay: seconds to wait, 0 or more.
    :param state: the attempt state the next delivery carries: :data:`RETRIES`,
        :data:`FIRST_ATTEMPT` and :data:`HISTORY`.
    :param reason: why the last attempt failed (to dead-letter the message with, if
        the retry cannot be made after all).
    """

    __slots__ = ("delay", "reason", "state")

    def __init__(self, delay: float, state: dict[str, Any], reason: DeadLetterReason) -> None:
        self.delay = delay
        self.state = state
        self.reason = reason

    def __repr__(self) -> str:
        return f"RetryLater(delay={self.delay!r}, retries={self.state.get(RETRIES)!r})"


def read_retries(attributes: Mapping[str, Any]) -> int:
    """The delayed retries done so far, from a message's attributes (0 if none or unreadable)."""
    value = attributes.get(RETRIES)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    try:
        count = int(value) if isinstance(value, int | str) and not isinstance(value, bool) else 0
    except ValueError:
        return 0
    return max(count, 0)


def read_first_attempt(attributes: Mapping[str, Any]) -> float | None:
    """When the first attempt failed (epoch seconds), or ``None`` if not known."""
    value = attributes.get(FIRST_ATTEMPT)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        moment = float(value)
    except ValueError:
        return None
    return moment if math.isfinite(moment) else None


def read_history(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The history of the failed attempts (a new list), as a list or as JSON text."""
    value = attributes.get(HISTORY)
    if isinstance(value, bytes | str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    if not isinstance(value, list | tuple):
        return []
    return [dict(entry) for entry in value if isinstance(entry, Mapping)]


def with_state(message: MessageT, state: Mapping[str, Any]) -> MessageT:
    """A copy of ``message`` (same class, bytes and id) whose attributes hold ``state``."""
    attributes = dict(message.attributes)
    attributes.update(state)
    return type(message)(message.raw_data, message.message_id, attributes)


def describe_history(history: list[dict[str, Any]]) -> str:
    """The history in words, one attempt a line, for a dead letter's reason."""
    lines = [f"attempts ({len(history)}):"]
    for number, entry in enumerate(history, 1):
        at = entry.get("at")
        when = (
            datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
            if isinstance(at, int | float) and math.isfinite(at)
            else "?"
        )
        delay = entry.get("delay")
        then = (
            "given up"
            if not isinstance(delay, int | float)
            else "retried at once"
            if delay == 0
            else f"retried in {delay:.3g} s"
        )
        lines.append(f"  {number}. {when} {entry.get('reason')}; {then}")
    return "\n".join(lines)
