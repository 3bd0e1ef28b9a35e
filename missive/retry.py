"""Retry: when a message whose handling failed is tried again, and when it is given up.

A policy is data: how many immediate retries (in place, at once), how many delayed
retries (the message goes back to the transport and comes again after a delay that
grows exponentially, with full jitter), the limits, and the exception types that no
retry can fix. The processor has one; a handler can have its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

from missive.errors import MessageDecodeError

__all__ = ["NO_RETRY", "Retry"]


class Retry:
    """How a message whose handling failed is retried before it is dead-lettered.

    Each delivery of the message (the first, and each delayed retry) is handled once,
    plus up to ``immediate`` times more at once if it fails. When a delivery has
    failed every time, the message is retried later, up to ``delayed`` times: the
    *n*-th delayed retry waits a random time between 0 and ``min(max_delay,
    initial_delay * multiplier ** (n - 1))`` seconds ("full jitter", so that many
    messages failing together do not come back together), and none is scheduled once
    ``max_total`` seconds have passed since the first attempt. Then the message is
    dead-lettered, with the history of its attempts.

    A failure of an ``unrecoverable`` type (or a subclass) is dead-lettered at once;
    so are a message that cannot be decoded and one no handler matches, which no retry
    can fix.

    :param immediate: retries at once, within a delivery (0: none).
    :param delayed: retries after a delay, each a new delivery (0: none).
    :param initial_delay: the cap of the first delayed retry's wait, in seconds.
    :param multiplier: how much the cap grows with each delayed retry.
    :param max_delay: the largest cap, in seconds.
    :param max_total: seconds after the first attempt past which no delayed retry is
        scheduled; ``None``: no such limit.
    :param unrecoverable: exception types dead-lettered without any retry.
    :raises ValueError: if a number is out of range.
    """

    __slots__ = (
        "delayed",
        "immediate",
        "initial_delay",
        "max_delay",
        "max_total",
        "multiplier",
        "unrecoverable",
    )

    def __init__(
        self,
        *,
        immediate: int = 0,
        delayed: int = 0,
        initial_delay: float = 1.0,
        multiplier: float = 2.0,
        max_delay: float = 300.0,
        max_total: float | None = None,
        unrecoverable: Iterable[type[BaseException]] = (),
    ) -> None:
        for name, count in (("immediate", immediate), ("delayed", delayed)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"{name} must be a whole number from 0 up, not {count!r}")
        if not (0 < initial_delay <= max_delay < math.inf):
            raise ValueError(
                "initial_delay and max_delay must be positive and finite, with "
                f"initial_delay <= max_delay, not {initial_delay!r} and {max_delay!r}"
            )
        if not 1 <= multiplier < math.inf:
            raise ValueError(f"multiplier must be 1 or more, not {multiplier!r}")
        if max_total is not None and not 0 < max_total < math.inf:
            raise ValueError(f"max_total must be a positive number of seconds, not {max_total!r}")
        types = tuple(unrecoverable)
        for kind in types:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise TypeError(f"unrecoverable takes exception types, not {kind!r}")
        self.immediate = immediate
        self.delayed = delayed
        self.initial_delay = float(initial_delay)
        self.multiplier = float(multiplier)
        self.max_delay = float(max_delay)
        self.max_total = None if max_total is None else float(max_total)
        self.unrecoverable = types

    def can_fix(self, error: BaseException | None) -> bool:
        """Whether a retry may help with ``error`` (``None``: the handler asked for one)."""
        if error is None:
            return True
        if isinstance(error, MessageDecodeError):
            return False
        return not isinstance(error, self.unrecoverable)

    def cap(self, retry: int) -> float:
        """The longest wait before delayed retry number ``retry`` (1 for the first)."""
        exponent = retry - 1
        # Past this the cap is max_delay anyway, and the power would overflow.
        if exponent * math.log(self.multiplier) > math.log(self.max_delay / self.initial_delay):
            return self.max_delay
        return min(self.max_delay, self.initial_delay * self.multiplier**exponent)

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """A wait before delayed retry number ``retry``: uniform in ``[0, cap(retry)]``."""
        draw = (rng or random).uniform  # jitter, not a secret
        return draw(0.0, self.cap(retry))

    def next_delay(
        self, retries: int, elapsed: float, rng: random.Random | None = None
    ) -> float | None:
        """The wait before the next delayed retry, after ``retries`` of them and
        ``elapsed`` seconds since the first attempt; ``None``: give up."""
        if retries >= self.delayed:
            return None
        if self.max_total is not None and elapsed >= self.max_total:
            return None
        return self.delay(retries + 1, rng)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Retry):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, name) for name in self.__slots__))

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in sorted(self.__slots__)
            if getattr(self, name) != getattr(NO_RETRY, name, None)
        )
        return f"Retry({fields})"


#: No retry at all: a failure is dead-lettered at once (the processor's default).
NO_RETRY = Retry()
