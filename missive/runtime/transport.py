"""Transport: the primitives of one broker connection, which the delivery loop drives."""

from __future__ import annotations

import abc
import enum
from typing import Any, ClassVar

from missive.message import Message

__all__ = ["Batch", "Capability", "Fault", "Transport"]


class Capability(enum.Flag):
    """What a transport can do; the delivery loop and the conformance suite read these."""

    NONE = 0
    #: A requeued or abandoned message comes back, with the same id.
    REDELIVERY = enum.auto()
    #: ``Batch.counts`` are exact delivery counts (Redis Streams' ``times_delivered``).
    DELIVERY_COUNTS = enum.auto()
    #: Redeliveries are flagged but not counted exactly: count attempts in the DLQ.
    COUNT_IN_DLQ = enum.auto()
    #: ``requeue(handle, delay)`` honours a delay.
    DELAYED_REQUEUE = enum.auto()
    #: ``retry_later(handle, message, delay, state)`` keeps a message for a delayed
    #: retry outside the consumer and delivers it again, its attempt state written in.
    DELAYED_RETRY = enum.auto()
    #: Rows received but not started can be given back on a stop (``hand_back``).
    HAND_BACK = enum.auto()
    #: One consumer sees a destination's messages in the order they were sent.
    ORDERED = enum.auto()
    #: Messages sent while no consumer runs are kept until one does.
    PERSISTENCE = enum.auto()
    #: Several processes share one destination, each message going to one of them.
    CONSUMER_GROUPS = enum.auto()
    #: Destinations can be subscribed to by pattern.
    PATTERNS = enum.auto()


class Fault(enum.Enum):
    """What the loop does after a transport method raised."""

    #: Close the connection, wait (with backoff) and connect again.
    RECONNECT = "reconnect"
    #: Close the connection and let the error propagate from ``run()``.
    FATAL = "fatal"


class Batch:
    """The rows of one :meth:`Transport.receive`, kept in parallel lists.

    Row ``i`` is ``bodies[i]`` (the message's bytes), ``ids[i]`` (the transport's
    message id, or ``None`` for the message class to make one), ``attributes[i]``,
    ``counts[i]`` (1 on a first delivery, the exact count where known, ``None`` for a
    redelivery counted nowhere) and ``handles[i]`` (what the transport settles the
    row by: a delivery tag, an entry id). ``problems`` maps a row to a reason to
    dead-letter it without handling it. ``ended`` says no more input will ever come.

    A transport keeps one batch and clears it at the start of each receive, so no
    list is made per message.
    """

    __slots__ = (
        "attributes",
        "bodies",
        "counts",
        "ended",
        "handles",
        "ids",
        "problems",
        "retried",
    )

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.ids: list[bytes | None] = []
        self.attributes: list[dict[str, Any]] = []
        self.counts: list[int | None] = []
        self.handles: list[Any] = []
        self.problems: dict[int, str] | None = None
        #: Rows that came back by a delayed retry, not by a redelivery: their count is
        #: above 1, but their last delivery ended cleanly, so they are no suspects of
        #: a crash (they need not run alone nor be acked at once).
        self.retried: set[int] | None = None
        self.ended = False

    def clear(self) -> None:
        """Empty the batch, for the next receive."""
        self.bodies.clear()
        self.ids.clear()
        self.attributes.clear()
        self.counts.clear()
        self.handles.clear()
        self.problems = None
        self.retried = None
        self.ended = False

    def add(
        self,
        body: bytes,
        message_id: bytes | None = None,
        attributes: dict[str, Any] | None = None,
        handle: Any = None,
        count: int | None = 1,
        problem: str | None = None,
        retried: bool = False,
    ) -> None:
        """Append one row; ``problem`` dead-letters it unhandled with that reason;
        ``retried``: it came back by a delayed retry (see :attr:`retried`)."""
        if retried:
            if self.retried is None:
                self.retried = set()
            self.retried.add(len(self.bodies))
        if problem is not None:
            if self.problems is None:
                self.problems = {}
            self.problems[len(self.bodies)] = problem
        self.bodies.append(body)
        self.ids.append(message_id)
        self.attributes.append({} if attributes is None else attributes)
        self.counts.append(count)
        self.handles.append(handle)

    def __len__(self) -> int:
        return len(self.bodies)

    def suspect(self, i: int) -> bool:
        """Whether row ``i`` came back after a delivery that may have crashed the worker:
        a redelivery, not a first delivery nor a delayed retry."""
        return self.counts[i] != 1 and (self.retried is None or i not in self.retried)


class Transport(abc.ABC):
    """One broker connection's primitives; the delivery loop does everything else.

    The loop builds the messages, counts deliveries, applies ``max_deliveries``,
    calls the processor, settles each row, reconnects and stops. A transport only
    moves bytes and settles handles. Its contract:

    * :meth:`connect`, :meth:`receive`, :meth:`ack`, :meth:`ack_out_of_order`,
      :meth:`requeue`, :meth:`retry_later`,
      :meth:`hand_back`, :meth:`begin_drain`, :meth:`flush` and :meth:`close` are
      called from the loop's thread only; :meth:`wake` from any thread or a signal
      handler.
    * A handle is valid only on the connection it came from: after a reconnection
      the loop never settles an old one.
    * :meth:`ack` may defer sending until the next :meth:`receive`, :meth:`flush` or
      :meth:`close` returns, never later. A deferred ack lost with its connection only
      means a redelivery.
    * An exception from any method is passed to :meth:`fault`, which says whether to
      reconnect (:attr:`Fault.RECONNECT`) or to stop with the error (:attr:`Fault.FATAL`).
    * There is no reject: a dead letter is acked. A message neither handled nor stored
      is requeued where the transport redelivers (:attr:`Capability.REDELIVERY`), and
      otherwise the loop applies :attr:`stop_on_loss`.
    """

    #: What this transport can do.
    capabilities: ClassVar[Capability] = Capability.NONE
    #: Why a nacked message is dead-lettered on a transport without REDELIVERY.
    cannot_redeliver: ClassVar[str] = "this transport cannot redeliver a message"
    #: Why a failed message due a delayed retry is dead-lettered without DELAYED_RETRY.
    cannot_delay: ClassVar[str] = "not retried later: this transport cannot delay a retry"
    #: Whether a message neither handled nor stored stops ``run()`` with the error.
    #: Without REDELIVERY the rest stays unread (stdin), rather than the message being
    #: logged as lost; with it, the message is requeued first, rather than retried.
    stop_on_loss: ClassVar[bool] = False
    #: The OpenTelemetry ``messaging.system`` this transport reads ("rabbitmq",
    #: "redis", "nats", "mqtt", "stdin"): a label for metrics and traces.
    system: ClassVar[str] = "custom"
    #: The broker's name in logs ("Redis", "RabbitMQ").
    broker_name: ClassVar[str] = "the broker"
    #: Added to the reconnection warning, saying what became of unsettled messages.
    loss_note: ClassVar[str] = ""
    #: The first wait before reconnecting, in seconds; it doubles per failure in a row.
    first_reconnect_delay: ClassVar[float] = 0.05
    #: What becomes of a message not handled nor stored (after the error text);
    #: empty means "Requeuing it in N s." with the adapter's ``retry_delay``.
    redelivery_note: str = ""
    #: The loop passes owed acks to :meth:`ack` once this many are owed, and always
    #: before a receive.
    ack_limit: int = 1
    #: Seconds the loop goes on handling after :meth:`begin_drain` on a stop;
    #: ``None``: no drain (what is not started is handed back or left unread).
    drain_timeout: float | None = None

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the connection and start consuming."""

    @abc.abstractmethod
    def receive(self, max_messages: int, timeout: float) -> Batch:
        """Wait up to ``timeout`` seconds for messages; return at most ``max_messages``.

        An empty batch means nothing came in time. :meth:`wake` ends the wait early.
        """

    def ack(self, handles: list[Any]) -> None:  # noqa: B027  # optional, a no-op by default
        """Settle the rows of ``handles`` (in delivery order): never deliver them again.

        Every row received before the last of them is settled too, so a cumulative
        ack (RabbitMQ's ``multiple=True``) is safe here.
        """

    def ack_out_of_order(self, handles: list[Any]) -> bool:
        """Settle exactly the rows of ``handles``, while rows received before them are
        still being handled (``concurrency`` above 1); return whether it did.

        The default returns ``False``, right for a transport whose acks are cumulative
        or positional: the loop then passes those rows to :meth:`ack` once every
        earlier row is settled. A transport that acks by id overrides it.
        """
        return False

    def requeue(self, handle: Any, delay: float = 0.0) -> None:  # noqa: B027
        """Give a row back, to be delivered again after ``delay`` seconds where supported."""

    def retry_later(
        self, handle: Any, message: Message, delay: float, state: dict[str, Any]
    ) -> None:
        """Settle a row whose message is to be handled again after ``delay`` seconds
        (:attr:`Capability.DELAYED_RETRY`); called only where the transport has it.

        The message comes back as a new delivery with the same id, bytes and
        attributes, plus ``state`` (:mod:`missive.attempts`: ``x-missive-retries``,
        ``x-missive-first-attempt``, ``x-missive-history``) in its attributes. Its
        delivery count goes on from the deliveries before (so ``max_deliveries``
        counts the retries). The wait is kept by the broker, never by the consumer,
        and must survive a restart. A crash during the call may deliver the message
        twice, never lose it.
        """
        raise NotImplementedError(f"{type(self).__name__} has no Capability.DELAYED_RETRY")

    def dead_lettered(self, handle: Any) -> None:  # noqa: B027
        """The row ``handle`` was stored in the DLQ: the :meth:`ack` that follows may
        settle it as such (JetStream's ``+TERM``). Called only on that rare path."""

    def hand_back(self, batch: Batch, start: int) -> None:  # noqa: B027
        """On a stop, give back the rows ``start:`` of ``batch``, received but not started."""

    def begin_drain(self) -> None:  # noqa: B027
        """On a stop, take no more messages (unsubscribe); those already sent still come."""

    def flush(self) -> None:  # noqa: B027
        """Send the acks deferred so far, now."""

    def wake(self, from_signal: bool) -> None:  # noqa: B027
        """End a :meth:`receive` that is waiting; ``from_signal``: called by a signal handler."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection. Idempotent; never raises."""

    def fault(self, exc: BaseException) -> Fault:
        """Whether ``exc``, raised by a method of this transport, is worth reconnecting for."""
        return Fault.FATAL

    def describe(self, exc: BaseException) -> str:
        """``exc`` in words for the reconnection warning, without credentials or payloads."""
        return f"{type(exc).__name__}: {exc}"

    def where(self) -> str:
        """Where this transport reads from, for logs, without credentials."""
        return type(self).__name__

    def source(self) -> str:
        """The destination it consumes (a queue, a stream, channels, a subject, topics),
        without host or credentials: a label for metrics and traces."""
        return self.where()

    def backlog(self) -> int | None:
        """How many messages wait for this consumer, if the broker tells it cheaply.

        Called on the loop's thread, at most every ``Adapter.backlog_interval``
        seconds and only while observers are registered; ``None``: unknown.
        """
        return None

    def locate(self, handle: Any) -> str | None:
        """Where a row is in the input, for the note on an error that stops ``run()``."""
        return None

    def count_key(self, message: Message, stable_id: bool) -> bytes | None:
        """The key a redelivery of ``message`` is counted under in the DLQ (COUNT_IN_DLQ).

        ``stable_id`` says the transport gave the id (it survives a redelivery). The
        default counts only those; ``None`` means not counted.
        """
        return message.message_id if stable_id else None

    def counted(self, message: Message, stable_id: bool, attempts: int) -> None:  # noqa: B027
        """Called once a redelivery of ``message`` is counted in the DLQ (COUNT_IN_DLQ).

        ``attempts`` is its deliveries so far (2 on the first redelivery). A transport
        may log here, say that a count by content is approximate; a no-op by default.
        """
