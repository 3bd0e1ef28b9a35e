"""The DLQ contract: :class:`DeadLetterStore` and the :class:`DeadLetter` record it keeps."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from missive.dlq.audit import AuditEntry
from missive.message import Message
from missive.reason import DeadLetterReason

__all__ = ["DeadLetter", "DeadLetterStore"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One stored dead letter: the message, why it failed, and when.

    ``reason`` and ``traceback`` are left out of the ``repr``: exception text can
    quote the payload.
    """

    #: The message's id, the store's key.
    message_id: bytes
    #: The message, rebuilt as its class (or :class:`~missive.RawMessage`, see the contract).
    message: Message
    #: The full reason, with its details (a plain ``str`` reason reads back as one too).
    reason: DeadLetterReason = field(repr=False)
    #: The handler chosen for the message, if routing chose one.
    handler: str | None
    #: The exception's type name, if one was raised.
    exc_type: str | None
    #: The formatted traceback, if an exception was raised.
    traceback: str | None = field(repr=False)
    #: ``"module.QualName"`` of the message's class when it was dead-lettered.
    message_class: str
    #: The transport's attributes of the message.
    attributes: Mapping[str, Any]
    #: The size of the message's bytes.
    size: int
    #: When this id was first dead-lettered (aware, UTC).
    first_dead_lettered_at: datetime
    #: When this id was last dead-lettered (aware, UTC).
    dead_lettered_at: datetime
    #: How many times this id has been dead-lettered.
    times: int
    #: When it was archived (aware, UTC), or ``None`` if it is not.
    archived_at: datetime | None = None
    #: When an archived letter may be deleted by :meth:`DeadLetterStore.expire`.
    expires_at: datetime | None = None

    @property
    def summary(self) -> str:
        """The reason without exception text: what is safe to log."""
        return self.reason.summary


class DeadLetterStore(MutableMapping[bytes, tuple[Message, str]]):
    """A durable DLQ: a mapping from message id to ``(message, reason)`` that keeps records.

    Give one to :meth:`missive.Processor.set_dlq`. The contract every store keeps:

    * **Writing.** ``store[message.message_id] = (message, reason)``, where ``reason``
      is a :class:`~missive.DeadLetterReason` or a plain ``str``. The key must be the
      message's own id (``ValueError`` otherwise). The assignment returns only once the
      dead letter is stored durably: the adapter acks the message right after, so a
      store must never return before the write is committed. A failed write raises
      (the processor turns it into :class:`~missive.DLQWriteError` and does not ack).
    * **Rewriting.** Writing an id already stored with the same bytes replaces its
      reason and attributes, keeps its place in the order and its
      ``first_dead_lettered_at``, updates ``dead_lettered_at`` and adds one to
      ``times``. It never fails for being a duplicate: redelivered messages are
      dead-lettered again. A stored payload is never replaced by a different one:
      a message whose id is stored with other bytes is kept as well, as a new record
      under the key ``id~other-payload-<digest of its bytes>`` (the message read back
      carries that key as its id), which the same bytes find again when redelivered.
    * **Reading.** ``store[id]`` gives an equal message (same id, bytes and
      attributes) of the same class, and a :class:`~missive.DeadLetterReason` with
      the stored details. The class is one the program has already imported
      (:func:`missive.message.message_class_named`) or was given to the store; any
      other is read as :class:`~missive.RawMessage`. A store never unpickles and never
      imports a module named by its storage. A missing id raises ``KeyError``, as does
      a key that is not ``bytes``.
    * **Order.** Iteration, :meth:`records` and :meth:`oldest` go oldest first: in
      the order ids were first stored (as a ``dict`` keeps insertion order).
    * **Deleting.** ``del store[id]`` deletes one dead letter, committed before it
      returns. :meth:`delete_many` deletes several in one commit: the SQL stores do
      it in one transaction (all or none), so a tool deleting thousands (a replay)
      pays one commit a batch instead of one a letter.
    * **Threads.** Every method may be called from any thread.
    * **Closing.** :meth:`close` (or leaving a ``with`` block) releases the storage;
      it is idempotent, and a closed store raises :class:`~missive.DLQError`.
    * **Errors.** Storage that cannot be opened or used raises
      :class:`~missive.DLQError` naming where it is, what is wrong and what to do;
      the constructor checks the storage, so a bad path fails at startup, not at
      the first dead letter.
    * **Logging.** Payloads, reasons and tracebacks are never logged at INFO or above.
    * **Attempts.** :meth:`record_attempt` durably counts one more attempt at
      handling a message and returns the count; :meth:`forget_attempts` drops it.
      The processor uses them for redelivered messages whose transport keeps no
      delivery count, so that a message that kills its worker (``os._exit``, a
      segfault, the OOM killer) is recognised when it comes back. They are kept
      apart from the dead letters: they count for nothing above.
    * **Archiving.** :meth:`archive` keeps dead letters but hides them:
      :meth:`records` leaves them out unless asked (``archived=True`` or ``None``),
      so listing, grouping, counting and replaying all pass them by; :meth:`record`,
      ``store[id]``, iteration and ``len`` still see them. Each has an expiry time,
      after which :meth:`expire` deletes it. :meth:`unarchive` shows them again, as
      does a new dead-lettering of the same id and bytes.
    * **Audit.** :meth:`audit` appends an :class:`~missive.dlq.audit.AuditEntry` (one
      per operation a tool ran: replay, edit, archive, purge...) to a table of its
      own; :meth:`history` reads them back, newest first. Dead letters deleted keep
      their entries.

    The SQL stores do all of the above. The defaults of :meth:`archive`,
    :meth:`unarchive`, :meth:`expire`, :meth:`replace`, :meth:`audit` and
    :meth:`history` raise :class:`NotImplementedError`, for stores that cannot.
    """

    @abc.abstractmethod
    def record(self, message_id: bytes) -> DeadLetter:
        """The record of ``message_id``.

        :raises KeyError: if it is not stored.
        """

    @abc.abstractmethod
    def records(
        self,
        *,
        reason: str | None = None,
        handler: str | None = None,
        since: datetime | None = None,
        before: datetime | None = None,
        limit: int | None = None,
        archived: bool | None = False,
    ) -> Iterator[DeadLetter]:
        """The records, oldest first, that match every filter given.

        :param reason: only those whose reason contains this text (case-sensitive).
        :param handler: only those dead-lettered from this handler.
        :param since: only those last dead-lettered at or after this aware datetime.
        :param before: only those last dead-lettered before this aware datetime.
        :param limit: at most this many.
        :param archived: ``False``: only those not archived; ``True``: only archived
            ones; ``None``: both.
        :raises ValueError: if ``since`` or ``before`` is naive, or ``limit`` negative.
        """

    @abc.abstractmethod
    def record_attempt(self, message_id: bytes) -> int:
        """Count one more attempt at handling ``message_id``, durably; return the count."""

    @abc.abstractmethod
    def forget_attempts(self, message_id: bytes) -> None:
        """Drop the attempts counted for ``message_id`` (none counted is fine)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the storage; idempotent."""

    def put_many(self, entries: Sequence[tuple[bytes, tuple[Message, str]]]) -> None:
        """Store several dead letters, as ``store[id] = (message, reason)`` does each.

        The SQL stores commit them together, in one transaction: when this returns,
        all are stored; when it raises :class:`~missive.DLQError`, none is. The
        delivery loop writes a batch's dead letters so before acking them. This
        default checks them all, then stores them one by one, each committed by itself.

        :raises TypeError, ValueError: before storing any, if an entry is not
            ``(message, reason)`` under the message's own id.
        """
        from missive.dlq._codec import checked_entry  # _codec imports this module

        for message_id, value in entries:
            checked_entry(message_id, value)
        for message_id, value in entries:
            self[message_id] = value

    def delete_many(self, message_ids: Iterable[bytes]) -> int:
        """Delete each of ``message_ids`` that is stored; return how many were deleted.

        Ids not stored (or not ``bytes``) are skipped, not an error. The SQL stores
        commit the deletes together, in one transaction: when this returns, all are
        deleted; when it raises :class:`~missive.DLQError`, none is. This default
        deletes them one by one, each committed by itself.
        """
        deleted = 0
        for message_id in message_ids:
            try:
                del self[message_id]
            except KeyError:
                continue
            deleted += 1
        return deleted

    def archive(self, message_ids: Iterable[bytes], expires_at: datetime) -> int:
        """Archive each of ``message_ids`` that is stored, until ``expires_at`` (aware);
        return how many. In one transaction. An archived one gets the new expiry.

        :raises ValueError: if ``expires_at`` is naive.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot archive dead letters")

    def unarchive(self, message_ids: Iterable[bytes]) -> int:
        """Show again each of ``message_ids`` that is archived; return how many."""
        raise NotImplementedError(f"{type(self).__name__} cannot archive dead letters")

    def expire(self, now: datetime | None = None) -> int:
        """Delete the archived dead letters whose expiry is at or before ``now``
        (aware; ``None``: now); return how many."""
        raise NotImplementedError(f"{type(self).__name__} cannot archive dead letters")

    def replace(self, message_id: bytes, value: tuple[Message, str]) -> None:
        """Store ``value`` under ``message_id`` in place of what is stored there, even
        with other bytes (an edited payload): the old record is deleted and the new
        one written in one transaction. ``value``'s message must have ``message_id``.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot replace dead letters")

    def audit(self, entry: AuditEntry) -> None:
        """Append ``entry`` to the store's audit table, committed."""
        raise NotImplementedError(f"{type(self).__name__} keeps no audit")

    def history(self, limit: int | None = None) -> list[AuditEntry]:
        """The audit entries, newest first, at most ``limit`` of them."""
        raise NotImplementedError(f"{type(self).__name__} keeps no audit")

    def oldest(self) -> DeadLetter | None:
        """The oldest record (the first stored), or ``None`` when the store is empty."""
        return next(self.records(limit=1), None)

    def __getitem__(self, message_id: bytes) -> tuple[Message, str]:
        record = self.record(message_id)
        return record.message, record.reason

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
