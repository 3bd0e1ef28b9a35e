"""Policy: the delivery decisions that need no I/O, shared by every loop and the push path.

One call, :meth:`Policy.handle`, takes a message as received and says what to do with
it on the transport. It keeps no state between calls, so threads may share one policy.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import functools
import logging
from typing import Generic

from missive._recovery import given_up
from missive._typing import M
from missive.attempts import RetryLater
from missive.context import HandlingContext, Outcome, ProcessingContext
from missive.dlq.base import DeadLetterStore
from missive.errors import DLQWriteError, HandlingError, MissiveError
from missive.message import Message
from missive.runtime.transport import Capability, Transport

__all__ = [
    "MAX_NACK_DELAY",
    "Policy",
    "Requeue",
    "RetryLater",
    "Verdict",
    "forget_attempts",
    "poison_reason",
    "record_attempt",
]

logger = logging.getLogger("missive.runtime")

#: The longest wait, in seconds, before a message nacked again and again comes back.
MAX_NACK_DELAY = 30.0

_ACKED = Outcome.ACKED
_NACKED = Outcome.NACKED
_RETRY = Outcome.RETRY


class Verdict(enum.Enum):
    """What becomes of one received message on its transport."""

    #: A handler acked it: ack it.
    ACK = "ack"
    #: It is stored in the DLQ: ack it.
    DEAD_LETTERED = "dead-lettered"
    #: A handler nacked it and the transport redelivers: requeue it.
    REQUEUE = "requeue"
    #: Neither handled nor stored, and the transport redelivers: requeue it after
    #: the adapter's ``retry_delay``.
    RETRY = "retry"
    #: Neither handled nor stored, and the transport cannot redeliver: it is lost
    #: (logged), and consuming goes on.
    LOST = "lost"
    #: Neither handled nor stored, and the transport cannot redeliver: stop ``run()``
    #: with the error, so that the rest of the input stays unread.
    STOP = "stop"
    #: It failed and is due a delayed retry: hand it to ``Transport.retry_later``.
    #: :meth:`Policy.handle` returns it as the :class:`~missive.RetryLater` of the
    #: handling, which carries the delay and the attempt state.
    RETRY_LATER = "retry-later"


class Requeue:
    """Requeue after ``delay`` seconds: a nack whose redeliveries the DLQ counted.

    :meth:`Policy.handle` returns one instead of :attr:`Verdict.REQUEUE` only when the
    count it used is not the row's (so the loop's ``nack_delay(count)`` would be wrong).
    """

    __slots__ = ("delay",)

    def __init__(self, delay: float) -> None:
        self.delay = delay


_ACK = Verdict.ACK
_DEAD_LETTERED = Verdict.DEAD_LETTERED
_REQUEUE = Verdict.REQUEUE


def record_attempt(dlq: object, key: bytes) -> int | None:
    """Count one more delivery of ``key`` in a DLQ store; ``None`` if ``dlq`` cannot count.

    Returns every delivery so far: the first, uncounted, plus each redelivery.
    """
    if isinstance(dlq, DeadLetterStore):
        return dlq.record_attempt(key) + 1
    return None


def forget_attempts(dlq: object, key: bytes) -> None:
    """Drop what :func:`record_attempt` counted for ``key``, once its message is settled."""
    if isinstance(dlq, DeadLetterStore):
        dlq.forget_attempts(key)


def poison_reason(count: int, limit: int, message: Message) -> str:
    """The one dead-letter reason for a message delivered more than ``max_deliveries``."""
    queue = message.attributes.get("queue")
    where = f", from queue {queue!r}" if isinstance(queue, str) else ""
    return (
        f"delivered {count} times, more than max_deliveries={limit}{where}: not handled "
        "again (poison message)"
    )


class Policy(Generic[M]):
    """The decisions the delivery loop applies to each message, for one transport.

    :param context: the processing context messages are processed in.
    :param transport: the transport, for its capabilities and texts.
    :param max_deliveries: deliveries after which a message is dead-lettered
        unhandled; ``None``: no limit.
    :param retry_delay: the base delay, in seconds, before a nacked message comes back
        on a transport that can delay it (doubled per redelivery, up to 30 s).
    """

    __slots__ = (
        "_count_key",
        "_counted",
        "context",
        "count_in_dlq",
        "delays",
        "max_deliveries",
        "nacked_reason",
        "on_failure",
        "redelivers",
        "retry_delay",
    )

    def __init__(
        self,
        context: ProcessingContext[M],
        transport: Transport,
        max_deliveries: int | None,
        retry_delay: float = 0.0,
    ) -> None:
        caps = transport.capabilities
        self.context = context
        self.max_deliveries = max_deliveries
        self.retry_delay = retry_delay
        self.redelivers = bool(caps & Capability.REDELIVERY)
        self.count_in_dlq = bool(caps & Capability.COUNT_IN_DLQ)
        self.delays = bool(caps & Capability.DELAYED_REQUEUE)
        self._count_key = transport.count_key
        self._counted = transport.counted
        #: The reason a nacked message is dead-lettered with, without REDELIVERY.
        self.nacked_reason = f"nacked by its handler; {transport.cannot_redeliver}"
        # What the processing context may decide: delayed retries only where the
        # transport keeps them (set here, once per run, before any message).
        context.delays_retries = bool(caps & Capability.DELAYED_RETRY)
        context.cannot_delay = transport.cannot_delay
        #: What an error from the processor (no DLQ, DLQ write failed) means here.
        self.on_failure = (
            Verdict.RETRY
            if self.redelivers
            else Verdict.STOP
            if transport.stop_on_loss
            else Verdict.LOST
        )

    def handle(
        self, message: M, count: int | None, problem: str | None, stable_id: bool
    ) -> Verdict | Requeue | RetryLater | HandlingError | DLQWriteError:
        """Process ``message`` (or dead-letter it) and return what to do on the transport.

        ``count`` is its delivery count (``None``: redelivered, count unknown),
        ``problem`` a reason to dead-letter it unhandled, ``stable_id`` whether its id
        came from the transport. An error the processor raised is returned, not
        raised: the caller applies :attr:`on_failure`. A nack is :attr:`Verdict.REQUEUE`
        (after :meth:`nack_delay` of ``count``), or a :class:`Requeue` with its delay
        where the DLQ counted the redeliveries or the handler gave one. A delayed
        retry is the handling's :class:`~missive.RetryLater` (see :meth:`settled`).
        """
        key: bytes | None = None
        if count != 1 and self.count_in_dlq:
            key = self._count_key(message, stable_id)
            if key is not None:
                attempts = self._record(message, key)
                if attempts is None:
                    key = None
                else:
                    count = attempts
                    self._counted(message, stable_id, attempts)
        context = self.context
        outcome: Outcome | None
        try:
            if problem is not None:
                outcome = context.dead_letter(message, problem)
            elif (limit := self.max_deliveries) is not None and count is not None and count > limit:
                outcome = context.dead_letter(message, poison_reason(count, limit, message))
            else:
                hctx = context._process(message)
                outcome = hctx.outcome
                if outcome is _NACKED:
                    if hctx.delay is None and key is not None and self.redelivers and self.delays:
                        return Requeue(self.nack_delay(count))  # the counted attempts
                    return self.settled(hctx, count)
                if outcome is _RETRY:
                    verdict = self.settled(hctx, count)
                    if key is not None and not isinstance(verdict, HandlingError | DLQWriteError):
                        self._forget(message, key)  # settled: retried as a new delivery
                    return verdict
        except (HandlingError, DLQWriteError) as exc:
            return exc
        if key is not None:
            self._forget(message, key)
        return _ACK if outcome is _ACKED else _DEAD_LETTERED

    async def ahandle(
        self,
        message: M,
        count: int | None,
        problem: str | None,
        stable_id: bool,
        executor: concurrent.futures.Executor | None = None,
    ) -> Verdict | Requeue | RetryLater | HandlingError | DLQWriteError:
        """:meth:`handle`, from an event loop: the same decisions, no blocking call on it.

        A plain first delivery is processed with :meth:`ProcessingContext.aprocess`;
        anything else (a redelivery to count, a problem, a poison check) goes through
        :meth:`handle` in ``executor``, since it writes to the DLQ.
        """
        loop = asyncio.get_running_loop()
        if count != 1 or problem is not None or not self.first_delivery_is_plain():
            call = functools.partial(self.handle, message, count, problem, stable_id)
            return await loop.run_in_executor(executor, call)
        try:
            hctx = await self.context._aprocess(message)
        except (HandlingError, DLQWriteError) as exc:
            return exc
        outcome = hctx.outcome
        if outcome is _ACKED:
            return _ACK
        if outcome is _NACKED or outcome is _RETRY:
            if outcome is _NACKED and hctx.delay is None and self.redelivers:
                return _REQUEUE
            return await loop.run_in_executor(executor, self.settled, hctx, count)
        return _DEAD_LETTERED

    def first_delivery_is_plain(self) -> bool:
        """Whether a first delivery without a problem needs no decision before processing.

        Then the loop may call the processor itself and map its outcome (ACKED: ACK,
        DEAD_LETTERED: DEAD_LETTERED, NACKED: :meth:`nacked`), exactly as
        :meth:`handle` would.
        """
        return self.max_deliveries is None or self.max_deliveries >= 1

    def settled(
        self, hctx: HandlingContext[M], count: int | None
    ) -> Verdict | Requeue | RetryLater | HandlingError | DLQWriteError:
        """What to do for a handling whose outcome is NACKED or RETRY (the loop calls it
        for a plain first delivery too; it may write to the DLQ).

        A nack with a delay (``ctx.nack(delay=...)``) is a :class:`Requeue` after it,
        where the transport delays requeues. A delayed retry is the handling's
        :class:`~missive.RetryLater`, unless the next delivery would pass
        ``max_deliveries``: then the message is dead-lettered now, with its history,
        rather than come back only to be quarantined unhandled.
        """
        message = hctx.message
        if hctx.outcome is _NACKED:
            delay = hctx.delay
            if delay is not None and self.redelivers and self.delays:
                return Requeue(delay)
            return self.nacked(message)
        retry_later = hctx.retry_later
        assert retry_later is not None
        limit = self.max_deliveries
        if limit is not None and count is not None and count >= limit:
            note = f"not retried later: delivered {count} times, max_deliveries={limit}"
            stored, reason = given_up(message, retry_later, note)
            return self.dead_letter(stored, reason)
        return retry_later

    def nacked(self, message: M) -> Verdict | HandlingError | DLQWriteError:
        """A handler nacked ``message``: REQUEUE, or its dead letter without REDELIVERY."""
        if self.redelivers:
            return _REQUEUE
        return self.dead_letter(message, self.nacked_reason)

    def dead_letter(self, message: M, reason: str) -> Verdict | HandlingError | DLQWriteError:
        """Store ``message`` in the DLQ with ``reason``: DEAD_LETTERED, or the error."""
        try:
            self.context.dead_letter(message, reason)
        except (HandlingError, DLQWriteError) as exc:
            return exc
        return Verdict.DEAD_LETTERED

    def nack_delay(self, count: int | None) -> float:
        """How long a nacked message waits before it comes back: growing, so it never spins."""
        if not self.delays:
            return 0.0
        redeliveries = (count or 2) - 1
        return min(self.retry_delay * 2.0**redeliveries, MAX_NACK_DELAY)

    def _record(self, message: M, key: bytes) -> int | None:
        try:
            return record_attempt(self.context.processor.dlq, key)
        except MissiveError as exc:
            logger.warning(
                "could not count the redelivery of message %r in the DLQ (%s); handling it "
                "without a delivery count",
                message.message_id,
                exc,
                extra={"message_id": message.message_id},
            )
            return None

    def _forget(self, message: M, key: bytes) -> None:
        try:
            forget_attempts(self.context.processor.dlq, key)
        except MissiveError as exc:
            logger.warning(
                "could not drop the delivery count of message %r from the DLQ (%s); a "
                "message with the same id would start from it",
                message.message_id,
                exc,
                extra={"message_id": message.message_id},
            )
