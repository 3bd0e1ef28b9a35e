"""Observers: what sees every message and connection event, without changing any.

Register one with :meth:`missive.Processor.add_observer` (or an adapter's
``add_observer``). The delivery loop, the push path (WSGI) and the processing
context call it; metrics and tracing plug in here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from missive._names import callable_name

if TYPE_CHECKING:
    from missive.context import HandlingContext, Outcome, ProcessingContext
    from missive.errors import MissiveError
    from missive.message import Message
    from missive.reason import DeadLetterReason

__all__ = ["EVENTS", "Observer", "Observers"]

logger = logging.getLogger("missive.events")


class Observer:
    """Sees every message and connection event; every method is a no-op.

    Subclass it and override what you need. Methods are called synchronously on the
    thread that handles the message, so an observer must be quick, and thread-safe
    where the adapter handles messages on several threads (WSGI). An exception from
    an observer is logged at ERROR (logger ``missive.events``) and ignored: it never
    changes what becomes of a message.

    ``adapter`` parameters are the :class:`~missive.Adapter` that runs (its
    ``running_transport`` tells the ``system`` and ``source()`` to label metrics and
    spans with); ``where`` is its transport's address for logs, without credentials.
    """

    def worker_started(self, adapter: Any) -> None:
        """The adapter started: its processing hooks ran, it is about to connect."""

    def worker_stopping(self, adapter: Any) -> None:
        """The adapter is stopping: no message is taken after this one."""

    def connection_lost(self, where: str, error: BaseException, retry_in: float) -> None:
        """The connection to ``where`` failed with ``error``; a new one in ``retry_in`` s."""

    def connection_restored(self, where: str) -> None:
        """A connection to ``where`` works again after one or more failures."""

    def polled(self, count: int) -> None:
        """The delivery loop finished one receive: ``count`` messages came, 0 when its
        wait of ``poll_timeout`` ended empty. Called on the loop's thread; a heartbeat."""

    def backlog(self, depth: int) -> None:
        """The broker counts ``depth`` messages waiting for this consumer (a queue's
        depth, a stream group's lag and pending), polled at most every
        ``Adapter.backlog_interval`` seconds where the transport can tell."""

    def message_received(self, message: Message, delivery_count: int | None) -> None:
        """A message arrived; ``delivery_count`` is 1 on a first delivery, ``None`` if unknown."""

    def handling_started(self, pctx: ProcessingContext[Any], hctx: HandlingContext[Any]) -> None:
        """Processing of ``hctx.message`` starts (before the ``before_handling`` hooks)."""

    def handling_finished(
        self,
        pctx: ProcessingContext[Any],
        hctx: HandlingContext[Any],
        outcome: Outcome | None,
        duration: float,
    ) -> None:
        """Processing ended (after the ``after_handling`` hooks), ``duration`` seconds later.

        ``outcome`` is what the handler decided, or ``None`` when handling failed;
        then ``hctx.failure`` holds the reason, and a dead letter event follows.
        """

    def acked(self, message: Message) -> None:
        """The message was settled on its transport: handled, or stored in the DLQ."""

    def requeued(self, message: Message, delay: float) -> None:
        """The message was given back to its transport, to come back after ``delay`` s."""

    def retried(self, message: Message, delay: float) -> None:
        """The message failed and was handed back to its transport (or, over HTTP, to its
        sender) for a delayed retry ``delay`` s later, its attempt state updated."""

    def dead_lettered(self, message: Message, reason: DeadLetterReason) -> None:
        """The message was stored in the DLQ with ``reason`` (every dead letter passes here)."""

    def dlq_write_failed(
        self, message: Message, reason: DeadLetterReason, error: BaseException | None
    ) -> None:
        """Storing the message in the DLQ failed with ``error``, or no DLQ is set (``None``)."""

    def lost(self, message: Message, error: MissiveError) -> None:
        """A message that was neither handled nor stored, on a transport that cannot
        redeliver it (Redis Pub/Sub), is gone."""

    def handed_back(self, count: int) -> None:
        """On a stop, ``count`` messages received but not started went back to the transport."""


class Observers(list[Observer]):
    """The registered observers (a list), called in registration order.

    Falsy while empty, and a list's truth test costs no Python call, so a caller
    guards each event with ``if observers:`` and pays nothing else when nobody
    observes. Register with :meth:`add`, which checks the type. Each event calls
    only the observers whose class overrides it, through the methods looked up when
    they were added: an observer counting acks costs nothing on other events.
    """

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[str, tuple[_Call, ...]] = dict.fromkeys(EVENTS, ())

    def add(self, observer: Observer) -> None:
        """Register ``observer``; it sees every event from now on."""
        if not isinstance(observer, Observer):
            raise TypeError(
                f"an observer must be a missive.events.Observer, not {type(observer).__name__}"
            )
        self.append(observer)
        self._calls = {
            event: tuple((o, getattr(o, event)) for o in self if _overrides(o, event))
            for event in EVENTS
        }

    def _call(self, event: str, *args: Any) -> None:
        for observer, method in self._calls[event]:
            try:
                method(*args)
            except Exception:
                _failed(observer, event)

    def worker_started(self, adapter: Any) -> None:
        self._call("worker_started", adapter)

    def worker_stopping(self, adapter: Any) -> None:
        self._call("worker_stopping", adapter)

    def connection_lost(self, where: str, error: BaseException, retry_in: float) -> None:
        self._call("connection_lost", where, error, retry_in)

    def connection_restored(self, where: str) -> None:
        self._call("connection_restored", where)

    # The events of every message, inlined: they are on the hot path.

    def polled(self, count: int) -> None:
        for observer, method in self._calls["polled"]:
            try:
                method(count)
            except Exception:
                _failed(observer, "polled")

    def backlog(self, depth: int) -> None:
        self._call("backlog", depth)

    def message_received(self, message: Message, delivery_count: int | None) -> None:
        for observer, method in self._calls["message_received"]:
            try:
                method(message, delivery_count)
            except Exception:
                _failed(observer, "message_received")

    def handling_started(self, pctx: ProcessingContext[Any], hctx: HandlingContext[Any]) -> None:
        for observer, method in self._calls["handling_started"]:
            try:
                method(pctx, hctx)
            except Exception:
                _failed(observer, "handling_started")

    def handling_finished(
        self,
        pctx: ProcessingContext[Any],
        hctx: HandlingContext[Any],
        outcome: Outcome | None,
        duration: float,
    ) -> None:
        for observer, method in self._calls["handling_finished"]:
            try:
                method(pctx, hctx, outcome, duration)
            except Exception:
                _failed(observer, "handling_finished")

    def acked(self, message: Message) -> None:
        for observer, method in self._calls["acked"]:
            try:
                method(message)
            except Exception:
                _failed(observer, "acked")

    def requeued(self, message: Message, delay: float) -> None:
        self._call("requeued", message, delay)

    def retried(self, message: Message, delay: float) -> None:
        self._call("retried", message, delay)

    def dead_lettered(self, message: Message, reason: DeadLetterReason) -> None:
        self._call("dead_lettered", message, reason)

    def dlq_write_failed(
        self, message: Message, reason: DeadLetterReason, error: BaseException | None
    ) -> None:
        self._call("dlq_write_failed", message, reason, error)

    def lost(self, message: Message, error: MissiveError) -> None:
        self._call("lost", message, error)

    def handed_back(self, count: int) -> None:
        self._call("handed_back", count)


_Call = tuple[Observer, Callable[..., None]]
#: The names of the events, :class:`Observer`'s public methods.
EVENTS = tuple(name for name in vars(Observer) if not name.startswith("_"))


def _overrides(observer: Observer, event: str) -> bool:
    """Whether ``observer`` does anything on ``event``: its class overrides the no-op
    (or computes its attributes, as a recorder of every event may)."""
    cls = type(observer)
    if cls.__getattribute__ is not object.__getattribute__ or hasattr(cls, "__getattr__"):
        return True
    return getattr(cls, event) is not getattr(Observer, event)


def _failed(observer: Observer, event: str) -> None:
    logger.error(
        "observer %s raised in %s; ignored",
        callable_name(type(observer)),
        event,
        exc_info=True,
    )
