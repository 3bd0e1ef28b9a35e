"""Dead letters stored a batch at a time, so that a worker keeps up when every
message fails.

A dead letter must be stored before its message is acked, and each write waits for
the disk (an fsync). In serial mode, on a transport that redelivers, the delivery
loop asks the processing context to keep its dead letters
(``ProcessingContext.deferred_dead_letters``) and, each time it acks, first stores
those kept in one transaction (:meth:`missive.dlq.DeadLetterStore.put_many`; a DLQ
without it gets one write each). If that write fails, none of them is stored and
none of their messages is acked: each is given back to its transport as a failed DLQ
write is, and comes again. Observers see ``dead_lettered`` (or ``dlq_write_failed``)
when the write is done, before ``acked``.
"""

from __future__ import annotations

from typing import Any

from missive.context import ProcessingContext
from missive.message import Message
from missive.reason import DeadLetterReason

__all__ = ["Letters", "UnstoredError", "store_deferred"]

#: The dead letters kept: each message (as it is to be stored) and its reason.
Letters = list[tuple[Message, DeadLetterReason]]


class UnstoredError(Exception):
    """The deferred dead letters could not be stored: none of them was."""

    def __init__(self, letters: Letters, error: BaseException) -> None:
        super().__init__(f"{len(letters)} dead letter(s) not stored")
        #: The letters not stored.
        self.letters = letters
        #: What the DLQ raised.
        self.error = error


def store_deferred(context: ProcessingContext[Any]) -> None:
    """Store the dead letters ``context`` kept, in one transaction where the DLQ can;
    then log each and tell the observers.

    :raises UnstoredError: if the write failed (observers saw ``dlq_write_failed`` each).
    """
    kept = context.deferred_dead_letters
    if not kept:
        return
    letters: Letters = list(kept)
    kept.clear()
    dlq: Any = context.processor.dlq
    entries = [(message.message_id, (message, reason)) for message, reason in letters]
    try:
        put_many = getattr(dlq, "put_many", None)
        if put_many is not None:
            put_many(entries)
        else:  # any MutableMapping is a DLQ
            for key, value in entries:
                dlq[key] = value
    except Exception as exc:
        observers = context.processor.observers
        if observers:
            for message, reason in letters:
                observers.dlq_write_failed(message, reason, exc)
        raise UnstoredError(letters, exc) from exc
    for message, reason in letters:
        context.stored(message, reason)
