"""Backoff: how long to wait before reconnecting, growing with each failure in a row."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """Exponential backoff with equal jitter, capped.

    The first wait after a connection that worked is exactly ``first``; each
    failure in a row doubles it up to ``cap``, and from the second on half of it is
    random, so that many workers cut off together do not reconnect in step.
    """

    __slots__ = ("cap", "failures", "first")

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        #: Failures since the last connection that worked.
        self.failures = 0

    def reset(self) -> None:
        """A connection worked: the next failure starts from ``first`` again."""
        self.failures = 0

    def next(self) -> float:
        """Count one more failure and return the wait before the next attempt, in seconds."""
        self.failures += 1
        delay = min(self.cap, self.first * 2.0 ** (self.failures - 1))
        if self.failures == 1:
            return delay
        return delay / 2 + random.uniform(0, delay / 2)  # noqa: S311  # jitter, not a secret
